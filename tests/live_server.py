"""The whole app as a real HTTP server on a loopback port, for clients that need one (a browser, the
runner simulator): ``picool serve all`` in a child process against the session's servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from picool.settings import Settings
from picool.stack import free_port


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process that talks to ``settings``' servers (and nothing else of ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICOOL_")}
    env.update(
        {
            "PICOOL_ENV": "test",
            "PICOOL_DATABASE_URL": settings.database_url,
            "PICOOL_REDIS_URL": settings.redis_url,
            "PICOOL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PICOOL_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout_s}s:\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def live_server(settings: Settings, log_dir: Path, **env: str) -> Iterator[str]:
    """Serve every subsystem (workers included) on ``http://127.0.0.1:<free port>``, whose URL is
    also the public URL (token issuer, the portal's redirect URI); ``env`` adds ``PICOOL_*`` settings.
    Yields the base URL; SIGTERM (then SIGKILL) on the way out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = server_env(
        settings,
        PICOOL_PUBLIC_URL=url,
        # Topics of our own, like the split-deployment test: this process's consumers do not join the
        # session app's groups (either relay may publish a shared outbox row; both consumers apply it).
        PICOOL_KAFKA_TOPIC_PREFIX=f"live{uuid.uuid4().hex[:6]}.",
        PICOOL_KAFKA_PARTITIONS="2",
        **env,
    )
    log = log_dir / f"server-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "picool.cli", "serve", "all", "--port", str(port)],
        env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_operator(settings: Settings, email: str, password: str) -> None:
    """An operator account, made the documented way: ``picool admin create-operator``."""
    done = subprocess.run(
        [sys.executable, "-m", "picool.cli", "admin", "create-operator", "--email", email, "--password", password],
        env=server_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
