"""`picool dev` starts the whole stack, answers /readyz, and leaves no process behind after SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from picool.stack import free_port


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_dev_starts_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICOOL_")}
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "picool.cli", "dev", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    children: list[psutil.Process] = []
    try:
        t0 = time.monotonic()
        ready = False
        while time.monotonic() - t0 < 60 and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        output = (tmp_path / "dev.log").read_text(errors="replace")
        assert ready, output
        print(f"picool dev ready after {time.monotonic() - t0:.1f}s")
        children = _descendants(proc.pid)
        names = " ".join(c.name() for c in children)
        assert "postgres" in names and "redis-server" in names and "tansu" in names
        assert (data_dir / "stack.json").exists()
        assert "Picool is ready" in output and f"http://127.0.0.1:{port}/schema/openapi.json" in output

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {alive}"
    assert not (data_dir / "stack.json").exists()
    assert (data_dir / "pg" / "PG_VERSION").exists()  # data kept for the next start
