"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from picool.kernel import Kernel


@get("/healthz", sync_to_thread=False, include_in_schema=True, tags=["health"])
def healthz() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "ok"}


@get("/readyz", tags=["health"])
async def readyz(state: State) -> Response[dict[str, Any]]:
    """200 only when PostgreSQL, Redis and Kafka all answer; 503 naming the ones that failed."""
    kernel: Kernel = state.kernel
    checks = await kernel.check()
    failed = sorted(k for k, v in checks.items() if v != "ok")
    if failed:
        body: dict[str, Any] = {
            "type": "https://picool.dev/problems/not_ready",
            "title": "Not ready",
            "status": 503,
            "detail": f"Not answering: {', '.join(failed)}",
            "code": "not_ready",
            "checks": checks,
        }
        return Response(body, status_code=503, media_type="application/problem+json")
    return Response({"status": "ready", "checks": checks}, status_code=200)


@get("/api/v1/ping", sync_to_thread=False, tags=["health"])
def ping() -> dict[str, bool]:
    """A trivial endpoint behind the whole edge (rate limits, metrics): the benchmarks' ceiling."""
    return {"pong": True}
