"""The edge: rate limits exact under concurrency, 429 headers, security headers, timeout, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar, get

from gateway.app import create_app
from gateway.edge import GroupLimits, group_of, parse_rate_limits
from picool.ratelimit import Limit, RateLimiter
from picool.settings import Settings
from picool.testing import running


@pytest.fixture
async def tight(stack_settings: Settings, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose default group admits 20 requests per IP per minute."""
    app = create_app(stack_settings.with_(rate_limits="default:ip=20/60;auth:ip=5/60", workers_enabled=False))
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as c:
            yield c


async def test_rate_limit_is_exact_under_concurrency(tight: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*[tight.get("/api/v1/ping") for _ in range(60)])
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 20
    assert codes.count(429) == 40
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "20"
    assert refused.headers["ratelimit-remaining"] == "0"
    admitted = next(r for r in responses if r.status_code == 200)
    assert int(admitted.headers["ratelimit-remaining"]) < 20


async def test_health_is_never_rate_limited(tight: httpx.AsyncClient) -> None:
    codes = [(await tight.get("/healthz")).status_code for _ in range(30)]
    assert set(codes) == {200}


async def test_sliding_window_admits_again_after_the_window(
    client: httpx.AsyncClient, stack_settings: Settings
) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(stack_settings.redis_url)
    limiter = RateLimiter(redis, prefix="test:rl:")
    try:
        limit = Limit(3, 1)
        results = [await limiter.hit("k", limit) for _ in range(5)]
        assert [d.allowed for d in results] == [True, True, True, False, False]
        await asyncio.sleep(1.1)
        assert (await limiter.hit("k", limit)).allowed
    finally:
        await redis.aclose()


def test_parse_rate_limits() -> None:
    parsed = parse_rate_limits("default:ip=10/60,user=5/1;auth:ip=3/300")
    assert parsed["default"] == GroupLimits(Limit(10, 60), Limit(5, 1))
    assert parsed["auth"] == GroupLimits(Limit(3, 300), None)
    with pytest.raises(ValueError):
        parse_rate_limits("default:host=1/1")
    with pytest.raises(ValueError):
        parse_rate_limits("default:ip=0/1")


def test_groups() -> None:
    assert group_of("/api/v1/auth/login") == "auth"
    assert group_of("/oauth2/token") == "auth"
    assert group_of("/api/v1/run/tasks/nearby") == "default"
    assert group_of("/login") == "auth"


async def test_security_headers_everywhere(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/ping", "/api/v1/does-not-exist"):
        resp = await client.get(path)
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["x-request-id"]


async def test_cors_preflight(client: httpx.AsyncClient) -> None:
    resp = await client.options(
        "/api/v1/ping",
        headers={
            "Origin": "http://127.0.0.1:8000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert resp.status_code in (200, 204)
    assert resp.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()
    evil = await client.options(
        "/api/v1/ping", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert evil.headers.get("access-control-allow-origin") != "https://evil.example"
    simple = await client.get("/api/v1/ping", headers={"Origin": "http://127.0.0.1:8000"})
    assert simple.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"


async def test_request_timeout_answers_504(stack_settings: Settings, client: httpx.AsyncClient) -> None:
    @get("/api/v1/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {"late": "yes"}

    app = create_app(stack_settings.with_(request_timeout_s=1, workers_enabled=False))
    app.register(slow)
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            resp = await c.get("/api/v1/slow")
    assert resp.status_code == 504
    assert resp.json()["code"] == "gateway_timeout"


async def test_body_size_limit_413(stack_settings: Settings, client: httpx.AsyncClient) -> None:
    from litestar import post

    @post("/api/v1/echo")
    async def echo(data: dict[str, str]) -> dict[str, int]:
        return {"n": len(data)}

    app: Litestar = create_app(stack_settings.with_(max_body_bytes=1000, workers_enabled=False))
    app.register(echo)
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            ok = await c.post("/api/v1/echo", json={"a": "b"})
            big = await c.post("/api/v1/echo", json={"a": "x" * 5000})
    assert ok.status_code == 201
    assert big.status_code == 413
    assert big.headers["content-type"].startswith("application/problem+json")


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/ping")
    await client.get("/api/v1/nope")
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    text = resp.text
    assert 'picool_http_requests_total{method="GET",route="/api/v1/ping",status="200"}' in text
    assert 'route="unmatched"' in text
    assert "picool_http_request_duration_seconds_bucket" in text
    assert "picool_outbox_backlog" in text


async def test_a_subsystems_route_limits_are_checked_with_the_groups(
    stack_settings: Settings, client: httpx.AsyncClient
) -> None:
    """The claim endpoints' own limits (the coupon subsystem's RouteLimits) apply on top of the default group's,
    counted for every request that reaches the edge, and refuse with their own words and metrics."""
    from picool import metrics

    app = create_app(
        stack_settings.with_(
            rate_limits="default:ip=6/60", claim_rate_ip="3/60", claim_rate_user="", workers_enabled=False, node_id=205
        )
    )
    claims = "/api/v1/coupon/flash-sessions/123/claims"
    flash_before = metrics.CLAIMS.labels("flash", "rate_limited")._value.get()
    by_ip_before = metrics.RATE_LIMITED.labels("claims", "ip")._value.get()
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as c:
            first = [await c.post(claims) for _ in range(3)]
            assert [r.status_code for r in first] == [401] * 3  # counted, then refused for want of a token
            assert first[-1].headers["ratelimit-limit"] == "3" and first[-1].headers["ratelimit-remaining"] == "0"
            refused = await c.post(claims)
            assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
            assert refused.json()["detail"].startswith("Too many claims from this address; retry in ")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert (await c.get(f"{claims}")).status_code in (404, 405)  # another method: not a claim
            # the default group counted all five; its sixth request is the last it admits
            assert (await c.get("/api/v1/ping")).status_code == 200
            late = await c.get("/api/v1/ping")
            assert late.status_code == 429 and late.json()["detail"].startswith("Rate limit exceeded")
    assert metrics.CLAIMS.labels("flash", "rate_limited")._value.get() == flash_before + 1
    assert metrics.RATE_LIMITED.labels("claims", "ip")._value.get() == by_ip_before + 1
    # The refusals were answered before any route took them: one series for all, not one per path.
    series = {s.labels["route"] for m in metrics.REQUESTS.collect() for s in m.samples if s.labels["status"] == "429"}
    assert "unrouted" in series and claims not in series and "/api/v1/ping" not in series
