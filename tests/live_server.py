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


class ServerProcesses:
    """Child ``picool serve ...`` processes, each logging to a file of its own in ``log_dir``, started and
    waited for together (several can boot at once), stopped together on the way out (SIGTERM, then
    SIGKILL after 30 s)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self._started: list[tuple[subprocess.Popen[bytes], Path, str]] = []
        self._ready = 0

    def __enter__(self) -> ServerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str, url: str, *serve_args: str, env: dict[str, str] | None = None) -> None:
        """``picool serve <serve_args>`` (``env`` instead of the group's), to answer on ``url``."""
        log = self.log_dir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "picool.cli", "serve", *serve_args],
            env=self.env if env is None else env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._started.append((proc, log, url))

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Return once every process started since the last call answers ``/readyz`` with 200; an
        AssertionError with the tail of its log if one exits or is not ready within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for proc, log, url in self._started[self._ready :]:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{url} exited early:\n{log.read_text(errors='replace')[-3000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} not ready in {timeout_s}s:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        self._ready = len(self._started)

    def stop(self) -> None:
        """SIGTERM every process still running, then wait for each (SIGKILL after 30 s)."""
        for proc, _, _ in self._started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in self._started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
    with ServerProcesses(full_env, log_dir) as servers:
        servers.start(f"server-{port}", url, "all", "--port", str(port))
        servers.wait_ready()
        yield url


def create_operator(settings: Settings, email: str, password: str) -> None:
    """An operator account, made the documented way: ``picool admin create-operator``."""
    done = subprocess.run(
        [sys.executable, "-m", "picool.cli", "admin", "create-operator", "--email", email, "--password", password],
        env=server_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
