"""The gateway's forwarding to a subsystem in another process: headers, streaming, retries, 502/504."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from litestar import Litestar, Request, get, post
from litestar.response import Stream

from gateway.app import create_app
from picool.settings import Settings
from picool.stack import free_port
from picool.testing import running


@get("/api/v1/run/echo")
async def echo_get(request: Request) -> dict[str, object]:  # type: ignore[type-arg]
    return {"path": request.url.path, "query": dict(request.query_params), "headers": dict(request.headers)}


@post("/api/v1/run/echo", status_code=200)
async def echo_post(request: Request) -> dict[str, object]:  # type: ignore[type-arg]
    body = await request.body()
    return {"len": len(body), "headers": dict(request.headers)}


@get("/api/v1/run/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(3)
    return {"late": "yes"}


@get("/api/v1/run/stream")
async def stream() -> Stream:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk{i};".encode()
            await asyncio.sleep(0.01)

    return Stream(gen())


@contextlib.contextmanager
def upstream_server(port: int) -> Iterator[None]:
    """A small real HTTP server on loopback that plays a subsystem."""
    app = Litestar([echo_get, echo_post, slow, stream])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def gateway(stack_settings: Settings, client: httpx.AsyncClient) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    port = free_port()
    settings = stack_settings.with_(
        workers_enabled=False,
        upstream_timeout_s=1.0,
        extra={"gateway_proxy": "1", "upstream_run": f"http://127.0.0.1:{port}"},
    )
    app = create_app(settings, ["auth", "run", "coupon"])
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.local") as c:
            yield c, port


async def test_forwards_with_headers_and_request_id(gateway: tuple[httpx.AsyncClient, int]) -> None:
    client, port = gateway
    with upstream_server(port):
        resp = await client.get("/api/v1/run/echo?x=1&y=2", headers={"X-Request-ID": "rid-42", "X-Custom": "v"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["path"] == "/api/v1/run/echo"
        assert body["query"] == {"x": "1", "y": "2"}
        h = body["headers"]
        assert h["x-request-id"] == "rid-42"
        assert h["x-custom"] == "v"
        assert h["x-forwarded-for"] == "127.0.0.1"
        assert h["x-forwarded-host"] == "gw.local"
        assert h["x-forwarded-proto"] == "http"
        assert resp.headers["x-request-id"] == "rid-42"

        big = b"x" * 200_000
        resp = await client.post("/api/v1/run/echo", content=big, headers={"content-type": "application/octet-stream"})
        assert resp.status_code == 200
        assert resp.json()["len"] == len(big)

        resp = await client.get("/api/v1/run/stream")
        assert resp.text == "".join(f"chunk{i};" for i in range(5))


async def test_upstream_down_is_502(gateway: tuple[httpx.AsyncClient, int]) -> None:
    client, _ = gateway
    resp = await client.get("/api/v1/run/echo")
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["code"] == "bad_gateway"
    resp = await client.post("/api/v1/run/echo", json={"a": 1})
    assert resp.status_code == 502


async def test_upstream_slow_is_504(gateway: tuple[httpx.AsyncClient, int]) -> None:
    client, port = gateway
    with upstream_server(port):
        resp = await client.get("/api/v1/run/slow")
    assert resp.status_code == 504
    assert resp.json()["code"] == "gateway_timeout"


async def test_idempotent_get_retried_until_upstream_is_up(stack_settings: Settings, client: httpx.AsyncClient) -> None:
    port = free_port()
    settings = stack_settings.with_(
        workers_enabled=False,
        upstream_retries=5,  # back-off 0.1, 0.2, 0.4, 0.8, 1.0 s: the upstream has ~2.5 s to come up
        extra={"gateway_proxy": "1", "upstream_run": f"http://127.0.0.1:{port}"},
    )
    app = create_app(settings, ["auth", "run", "coupon"])
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.local") as c:
            # A POST is not retried: it fails at once while the upstream is down.
            t0 = time.monotonic()
            assert (await c.post("/api/v1/run/echo", json={})).status_code == 502
            assert time.monotonic() - t0 < 1.0
            # A GET issued while the upstream is down succeeds once it comes up during the retries.
            get_task = asyncio.create_task(c.get("/api/v1/run/echo"))
            await asyncio.sleep(0.05)
            with upstream_server(port):
                resp = await get_task
            assert resp.status_code == 200, resp.text
