"""The servers a scenario runs against: embedded PostgreSQL/Redis/Kafka in a temp dir, migrated, and the app
started exactly as ``picool serve`` starts it (a subprocess, settings from ``PICOOL_*``).

Everything started here is stopped in ``finally`` blocks, on Ctrl-C and SIGTERM too (SIGTERM is turned
into ``SystemExit``); the app and the servers also carry ``PR_SET_PDEATHSIG``, so even a hard kill of the
scenario takes them down.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from harness import procfs

from picool import migrate
from picool.stack import EmbeddedStack, free_port

ROOT = Path(__file__).resolve().parents[2]
# One issuer for every app of a run, so a token minted or issued once is accepted by each of them.
ISSUER = "http://picool-bench.local"
# Limits far above any load here, so the limiter still runs on every request (its Redis round trip is part
# of the cost being measured) but never refuses one. One-second windows keep each window's sorted set about as
# big as production limits (1200/60 s) do, so Redis does the same work per check.
NO_LIMITS = "default:ip=1000000000/1,user=1000000000/1;auth:ip=1000000000/1"


def _terminate_as_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` (stopping processes) runs."""
    signal.signal(signal.SIGTERM, _terminate_as_exit)


def _child_setup() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # a Ctrl-C in the terminal reaches only the scenario, which stops the app in order


@dataclass
class Servers:
    """A running embedded stack (PostgreSQL, Redis, Kafka) with the migrations applied."""

    data_dir: Path
    stack: EmbeddedStack
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(36))

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    @property
    def plain_database_url(self) -> str:
        """The URL for plain asyncpg (no SQLAlchemy dialect, the socket dir as ``host``)."""
        from picool.db import plain_url

        return plain_url(self.stack.database_url)

    @property
    def redis_url(self) -> str:
        return self.stack.redis_url

    @property
    def kafka_bootstrap(self) -> str:
        return self.stack.kafka_bootstrap

    def env(self, port: int, **extra: str) -> dict[str, str]:
        """The environment of an app process on ``port`` (production-like settings, limits out of the way)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PICOOL_")}
        env.update(
            {
                "PICOOL_ENV": "prod",
                "PICOOL_SECRET_KEY": self.secret_key,
                "PICOOL_DATABASE_URL": self.database_url,
                "PICOOL_REDIS_URL": self.redis_url,
                "PICOOL_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "PICOOL_DATA_DIR": str(self.data_dir / "app"),
                "PICOOL_HOST": "127.0.0.1",
                "PICOOL_PORT": str(port),
                "PICOOL_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "PICOOL_ISSUER": ISSUER,
                "PICOOL_RATE_LIMITS": NO_LIMITS,
                "PICOOL_CLAIM_RATE_IP": "",
                "PICOOL_CLAIM_RATE_USER": "",
                "PICOOL_LOG_LEVEL": "INFO",
            }
        )
        env.update(extra)
        return env

    def settings(self, **changes: Any) -> Any:
        """Settings equal to the app's (same issuer, secret and servers) for in-process helpers."""
        from picool.settings import Settings

        base = Settings(
            env="prod",
            secret_key=self.secret_key,
            database_url=self.database_url,
            redis_url=self.redis_url,
            kafka_bootstrap=self.kafka_bootstrap,
            public_url="http://127.0.0.1:8000",
            issuer=ISSUER,
            data_dir=str(self.data_dir / "app"),
            rate_limits=NO_LIMITS,
        )
        return base.with_(**changes) if changes else base


@contextlib.contextmanager
def embedded_servers(log: bool = True) -> Iterator[Servers]:
    """Embedded PostgreSQL, Redis and Kafka in a fresh temp dir (tuning ``dev``, as ``picool dev`` runs
    them), migrated; all stopped and the directory removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="picool-bench-"))
    stack = EmbeddedStack(
        data_dir / "stack", tuning="dev", log=(lambda m: print(m, flush=True)) if log else (lambda m: None)
    )
    try:
        t0 = time.monotonic()
        stack.start()
        migrate.upgrade(stack.database_url)
        if log:
            print(f"  servers up and migrated in {time.monotonic() - t0:.1f}s", flush=True)
        yield Servers(data_dir, stack)
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


class _Child:
    """A child process of ours logging to ``log_path``: its pid, log tail, errors, and a clean stop."""

    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def errors_logged(self) -> int:
        """How many ERROR lines the process logged (a run should leave none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        # picool.logs writes the level in lower case ("error"); "critical" counts too.
        return sum(1 for line in text.splitlines() if _level(line) in {"error", "critical"})

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a clean stop, as in production), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class App(_Child):
    """One ``picool serve`` process (``python -m picool.cli serve``) on a free port."""

    def __init__(
        self,
        servers: Servers,
        *,
        workers: int = 1,
        name: str = "app",
        command: list[str] | None = None,
        cwd: Path | None = None,
        serve_args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.serve_args = serve_args
        self.servers = servers
        self.command = command or [sys.executable, "-m", "picool.cli"]
        self.cwd = cwd or ROOT
        self.port = free_port()
        self.workers = workers
        self.name = name
        self.env = servers.env(self.port, **env)
        self.log_path = servers.data_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> App:
        """Start the process and wait until ``/readyz`` answers 200."""
        cmd = [*self.command, "serve", "--port", str(self.port), *self.serve_args]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd, cwd=self.cwd, env=self.env, stdout=logf, stderr=logf, preexec_fn=_child_setup
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout_s}s:\n{self.tail()}")

    def __enter__(self) -> App:
        return self.start()

    def rss_mb(self) -> float:
        """Resident memory of the app and its children now, in MiB."""
        return tree_rss(self.pid) / 2**20


class Worker(_Child):
    """One ``picool work`` process (consumers, periodic jobs, outbox relay; no HTTP), the other half of an app
    started with ``serve_args=("--no-consumers",)``; same environment as ``app``'s."""

    READY = "Picool work: ready"

    def __init__(self, app: App, name: str = "work") -> None:
        self.env = dict(app.env)
        self.command = app.command
        self.cwd = app.cwd
        self.log_path = app.servers.data_dir / f"{name}-{app.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> Worker:
        """Start it and wait until its consumers have their partitions."""
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [*self.command, "work"], cwd=self.cwd, env=self.env, stdout=logf, stderr=logf, preexec_fn=_child_setup
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if self.READY in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout_s}s:\n{self.tail()}")

    def __enter__(self) -> Worker:
        return self.start()


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants (0 if gone)."""
    return sum(map(procfs.rss, procfs.tree(pid)))


class Sampler:
    """Samples, every ``interval_s`` in a thread: the app's RSS (peak kept) and the machine's CPU split
    between our process tree (this scenario, the servers, the app, the load generator) and everything else
    (the other people on a shared machine). Each sample reads /proc directly (:mod:`harness.procfs`): it
    runs inside the phase it measures."""

    def __init__(self, app_pid: int | None = None, interval_s: float = 0.2) -> None:
        self.app_pid = app_pid
        self.interval_s = interval_s
        self.peak_rss = 0
        self.last_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[int, float] = {}
        self.ours_cpu_s = 0.0
        self.total_busy_s = 0.0
        self.wall_s = 0.0

    def _tree_cpu(self) -> float:
        delta = 0.0
        for pid in procfs.tree(os.getpid()):
            t = procfs.times(pid)
            if t is None:
                continue
            prev = self._seen.get(pid)
            self._seen[pid] = t.own
            if prev is not None:
                delta += max(0.0, t.own - prev)
        return delta

    def _run(self) -> None:
        cpu0 = psutil.cpu_times()
        busy0 = cpu0.user + cpu0.system + cpu0.nice + getattr(cpu0, "irq", 0) + getattr(cpu0, "softirq", 0)
        t0 = time.monotonic()
        self._tree_cpu()
        while not self._stop.wait(self.interval_s):
            if self.app_pid is not None:
                rss = tree_rss(self.app_pid)
                self.last_rss = rss
                self.peak_rss = max(self.peak_rss, rss)
            self.ours_cpu_s += self._tree_cpu()
        cpu1 = psutil.cpu_times()
        busy1 = cpu1.user + cpu1.system + cpu1.nice + getattr(cpu1, "irq", 0) + getattr(cpu1, "softirq", 0)
        self.ours_cpu_s += self._tree_cpu()
        self.total_busy_s = busy1 - busy0
        self.wall_s = time.monotonic() - t0

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / 2**20

    @property
    def other_cores(self) -> float:
        """Average cores busy with processes that are not ours during the sample."""
        if self.wall_s <= 0:
            return 0.0
        return max(0.0, (self.total_busy_s - self.ours_cpu_s) / self.wall_s)

    def summary(self) -> dict[str, float]:
        return {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "other_load_cores": round(self.other_cores, 2),
            "our_cores": round(self.ours_cpu_s / self.wall_s, 2) if self.wall_s else 0.0,
        }


def _level(line: str) -> str | None:
    """The level of one JSON log line of picool.logs, or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        level = json.loads(line).get("level")
    except (ValueError, AttributeError):
        return None
    return level if isinstance(level, str) else None
