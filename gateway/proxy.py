"""Split deployment: the gateway forwards a subsystem's paths to that subsystem's own process.

Pooled HTTP/1.1 connections, connect/read timeouts, retries only for idempotent methods and only when
the connection could not be made (nothing was sent), streamed request and response bodies,
``X-Forwarded-*`` and the request id passed on; a 502 problem when the upstream is down and a 504
problem when it is too slow.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

log = logging.getLogger("picool.proxy")

# Which paths each subsystem owns.
OWNED_PATHS: dict[str, tuple[str, ...]] = {
    "auth": ("/api/v1/auth", "/oauth2", "/.well-known", "/login", "/logout", "/auth"),
    "run": ("/api/v1/run",),
    "coupon": ("/api/v1/coupon",),
}
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
}  # fmt: skip


async def _send_problem(send: Send, status: int, code: str, title: str, detail: str) -> None:
    body = json.dumps({"type": f"https://picool.dev/problems/{code}", "title": title, "status": status,
                       "detail": detail, "code": code}).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Upstream:
    """One subsystem served elsewhere, reached through a pooled client."""

    def __init__(self, name: str, base_url: str, *, connect_timeout_s: float = 2.0, read_timeout_s: float = 30.0,
                 retries: int = 2) -> None:  # fmt: skip
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30),
            follow_redirects=False,
        )

    async def close(self) -> None:
        """Close the pool."""
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "GET"))
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        peer = (scope.get("client") or ("", 0))[0]
        forwarded_for = peer
        for k, v in scope["headers"]:
            if k == b"x-forwarded-for":
                forwarded_for = f"{v.decode('latin-1')}, {peer}"
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        headers = [
            (k, v) for k, v in headers if k not in {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
        ]
        headers += [
            (b"x-forwarded-for", forwarded_for.encode()),
            (b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()),
            (b"x-forwarded-host", host.encode()),
        ]
        rid = scope.get("state", {}).get("request_id")
        if rid:
            headers = [(k, v) for k, v in headers if k != b"x-request-id"] + [(b"x-request-id", str(rid).encode())]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        qs = scope.get("query_string", b"")
        target = raw_path.decode("latin-1") + (("?" + qs.decode("latin-1")) if qs else "")

        body: bytes | AsyncIterator[bytes]
        if method in IDEMPOTENT:
            chunks = []
            async for chunk in _body(receive):
                chunks.append(chunk)
            body = b"".join(chunks)
            attempts = 1 + self.retries
        else:
            body = _body(receive)
            attempts = 1
        request = self.client.build_request(method, target, headers=headers, content=body)
        response: httpx.Response | None = None
        for attempt in range(attempts):
            try:
                response = await self.client.send(request, stream=True)
                break
            except httpx.ConnectError:
                if attempt + 1 >= attempts:
                    log.warning("upstream %s unreachable", self.name)
                    await _send_problem(send, 502, "bad_gateway", "Bad gateway",
                                        f"The {self.name} service is unreachable.")  # fmt: skip
                    return
                await asyncio.sleep(min(1.0, 0.1 * 2**attempt))
            except httpx.TimeoutException:
                await _send_problem(send, 504, "gateway_timeout", "Gateway timeout",
                                    f"The {self.name} service did not answer in time.")  # fmt: skip
                return
        assert response is not None
        try:
            out_headers = [
                (k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP - {b"content-length"}
            ]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TimeoutException:
                log.warning("upstream %s timed out mid-body", self.name)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if isinstance(chunk, bytes) and chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def proxy_handlers(upstream: Upstream) -> list[ASGIRouteHandler]:
    """Mount handlers that forward every path ``upstream`` owns."""
    handlers = []
    for prefix in OWNED_PATHS[upstream.name]:

        async def forward(scope: Scope, receive: Receive, send: Send, _u: Upstream = upstream) -> None:
            await _u(scope, receive, send)

        handlers.append(asgi(prefix, is_mount=True, copy_scope=False, name=f"proxy-{upstream.name}-{prefix}")(forward))
    return handlers
