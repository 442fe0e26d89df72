"""/readyz follows the servers: 503 naming Redis while it is gone, 200 when it is back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from picool.settings import Settings
from picool.stack import _binaries, free_port
from picool.testing import running, wait_for


def _start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    _, redis_bin, _ = _binaries()
    proc = subprocess.Popen(
        [str(redis_bin), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc


async def test_readyz_turns_503_without_redis_and_back(
    stack_settings: Settings, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    port = free_port()
    redis_proc = _start_redis(port, tmp_path)
    settings = stack_settings.with_(redis_url=f"redis://127.0.0.1:{port}/0", workers_enabled=False)
    app = create_app(settings)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as http:

            async def ping() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except Exception:
                    return False

            await wait_for(lambda: _redis_up(port), timeout_s=10)
            async with running(app, wait_consumers=False):
                assert (await http.get("/readyz")).status_code == 200

                redis_proc.terminate()
                redis_proc.wait(timeout=10)
                resp = await http.get("/readyz")
                assert resp.status_code == 503
                body = resp.json()
                assert body["code"] == "not_ready"
                assert "redis" in body["detail"]
                assert body["checks"]["postgres"] == "ok"
                assert body["checks"]["kafka"] == "ok"

                redis_proc = _start_redis(port, tmp_path)
                await wait_for(ping, timeout_s=20, interval_s=0.2)
                assert (await http.get("/readyz")).json()["checks"]["redis"] == "ok"
    finally:
        if redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


async def _redis_up(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("path", ["/healthz"])
async def test_healthz_does_not_touch_servers(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200
