"""The fast lane: what it serves, what it leaves to litestar, and that its problems match litestar's."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, post
from litestar.config.cors import CORSConfig
from litestar.params import FromPath
from litestar.types import Scope

from picool import errors, metrics, web
from picool.fastlane import Answer, FastLane, FastRoute, header_values

TEMPLATE = "/things/{thing_id}/pokes"


async def _fast(scope: Scope, match: re.Match[str]) -> Answer | None:
    thing = match["id"]
    if thing == "decline":
        return None
    if thing == "busy":
        raise errors.TooManyRequests("Slow down.", retry_after_s=7)
    if thing == "missing":
        raise errors.NotFound("There is no thing with this id.")
    if thing == "broken":
        raise RuntimeError("boom")
    return Answer(201, {"thing": thing, "lane": "fast", "keys": [v.decode() for v in header_values(scope, b"x-key")]})


@post("/things/{thing_id:str}/pokes", status_code=201)
async def poke(thing_id: FromPath[str]) -> dict[str, Any]:
    if thing_id == "missing":
        raise errors.NotFound("There is no thing with this id.")
    if thing_id == "busy":
        raise errors.TooManyRequests("Slow down.", retry_after_s=7)
    return {"thing": thing_id, "lane": "litestar"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Litestar(
        route_handlers=[poke],
        exception_handlers=errors.exception_handlers(),
        cors_config=CORSConfig(allow_origins=["https://shop.example"]),
        logging_config=None,
    )
    route = FastRoute("POST", re.compile(r"/things/(?P<id>[^/]+)/pokes"), TEMPLATE, _fast)
    app.asgi_handler = web.RequestIdMiddleware(FastLane(app.asgi_handler, [route]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def _count(lane: str) -> float:
    return metrics.REGISTRY.get_sample_value("picool_fast_lane_total", {"route": TEMPLATE, "lane": lane}) or 0.0


async def test_a_matching_request_is_answered_in_the_fast_lane(client: httpx.AsyncClient) -> None:
    fast, declined = _count("fast"), _count("declined")
    resp = await client.post("/things/a1/pokes", headers=[("x-key", "k1"), ("x-key", "k2")])
    assert resp.status_code == 201
    assert resp.json() == {"thing": "a1", "lane": "fast", "keys": ["k1", "k2"]}
    assert resp.headers["content-type"] == "application/json"
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert resp.headers["x-request-id"]  # the middlewares outside the lane still apply
    assert (_count("fast"), _count("declined")) == (fast + 1, declined)


async def test_what_the_lane_does_not_serve_goes_to_litestar(client: httpx.AsyncClient) -> None:
    fast, declined = _count("fast"), _count("declined")
    # The endpoint declines.
    assert (await client.post("/things/decline/pokes")).json() == {"thing": "decline", "lane": "litestar"}
    # A browser's request: litestar's CORS middleware answers it, with its headers.
    resp = await client.post("/things/a2/pokes", headers={"Origin": "https://shop.example"})
    assert resp.json()["lane"] == "litestar"
    assert resp.headers["access-control-allow-origin"] == "https://shop.example"
    assert (_count("fast"), _count("declined")) == (fast, declined + 2)
    # Other methods and paths never reach an endpoint (litestar: 405, 404).
    assert (await client.get("/things/a3/pokes")).status_code == 405
    assert (await client.post("/things/a3/pokes/more")).status_code == 404
    assert (await client.post("/things/a3/pokes/")).json()["lane"] == "litestar"  # litestar's own path rules
    assert (_count("fast"), _count("declined")) == (fast, declined + 2)


@pytest.mark.parametrize("thing", ["missing", "busy"])
async def test_a_domain_error_is_the_same_problem_in_both_lanes(client: httpx.AsyncClient, thing: str) -> None:
    fast = await client.post(f"/things/{thing}/pokes", headers={"X-Request-ID": "req-fast-1"})
    slow = await client.post(
        f"/things/{thing}/pokes", headers={"X-Request-ID": "req-fast-1", "Origin": "https://shop.example"}
    )
    assert fast.status_code == slow.status_code in {404, 429}
    assert fast.json() == slow.json()
    assert fast.json()["request_id"] == "req-fast-1"
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/problem+json"
    assert fast.headers.get("retry-after") == slow.headers.get("retry-after")
    if thing == "busy":
        assert fast.headers["retry-after"] == "7"


async def test_an_unexpected_error_is_logged_and_answered_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="picool.fastlane"):
        resp = await client.post("/things/broken/pokes")
    assert resp.status_code == 500
    body = resp.json()
    assert body["code"] == "internal_error" and "boom" not in resp.text and body["request_id"]
    assert resp.headers["content-type"] == "application/problem+json"
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
