"""The claim endpoints in both lanes (picool.fastlane): the fast lane serves ordinary claims, litestar's
handlers serve browser (CORS) requests and malformed ``Idempotency-Key``\\ s, and the two answer alike,
status, body and content type, for every outcome."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from picool import metrics
from picool.settings import Settings
from tests.coupon.conftest import MakeTemplate
from tests.coupon.runners import roomy_client
from tests.coupon.test_claims import claim_path
from tests.coupon.test_flash import grab_path, make_session

BROWSER = {"Origin": "https://runner.example"}  # any Origin: the fast lane leaves it to litestar's CORS
FLASH_ROUTE = "/api/v1/coupon/flash-sessions/{session_id}/claims"
TEMPLATE_ROUTE = "/api/v1/coupon/templates/{template_id}/claims"


def _lanes(route: str) -> tuple[float, float]:
    return tuple(  # type: ignore[return-value]
        metrics.REGISTRY.get_sample_value("picool_fast_lane_total", {"route": route, "lane": lane}) or 0.0
        for lane in ("fast", "declined")
    )


def _problem(resp: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    body = {k: v for k, v in resp.json().items() if k != "request_id"}
    return resp.status_code, resp.headers["content-type"], body


async def _both(c: httpx.AsyncClient, path: str, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    """The same claim in the fast lane, then in litestar's."""
    return await c.post(path, headers=headers), await c.post(path, headers={**headers, **BROWSER})


async def test_flash_claims_answer_alike_in_both_lanes(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, stack_settings: Settings
) -> None:
    operator = await accounts.operator()
    template = await make_template(operator, total_count=10, per_user_limit=1)
    session = await make_session(client, operator, template["id"], timedelta(minutes=-1), timedelta(hours=1), 2)
    later = await make_session(client, operator, template["id"], timedelta(hours=1), timedelta(hours=2), 2)
    runners = [await accounts.runner() for _ in range(4)]
    merchant = await accounts.merchant()
    path = grab_path(session["id"])
    fast_before, declined_before = _lanes(FLASH_ROUTE)
    async with roomy_client(stack_settings, node_id=206) as c:
        # A claim made in one lane and repeated (same key) in the other is the same answer, byte for byte.
        first = await c.post(path, headers={**runners[0].headers, "Idempotency-Key": "lanes-a"})
        again = await c.post(path, headers={**runners[0].headers, "Idempotency-Key": "lanes-a", **BROWSER})
        assert first.status_code == again.status_code == 201, first.text
        assert first.content == again.content
        assert first.headers["content-type"] == again.headers["content-type"] == "application/json"
        assert "access-control-allow-origin" not in first.headers
        slow = await c.post(path, headers={**runners[1].headers, "Idempotency-Key": "lanes-b", **BROWSER})
        fast = await c.post(path, headers={**runners[1].headers, "Idempotency-Key": "lanes-b"})
        assert slow.status_code == fast.status_code == 201 and slow.content == fast.content
        assert fast.json()["source"] == {"kind": "flash", "ref": session["id"]}
        assert _lanes(FLASH_ROUTE) == (fast_before + 2, declined_before + 2)

        # Every refusal: the same problem (status, content type, body but its request id) in both lanes.
        cases = {
            "limit_reached": (path, runners[0].headers),
            "sold_out": (path, runners[2].headers),
            "not_open": (grab_path(later["id"]), runners[2].headers),
            "not_found": (grab_path("12345"), runners[2].headers),
            "not_an_id": (grab_path("not-an-id"), runners[2].headers),
            "no_token": (path, {}),
            "bad_token": (path, {"Authorization": "Bearer nonsense"}),
            "wrong_role": (path, merchant.headers),
        }
        for name, (where, headers) in cases.items():
            in_fast, in_litestar = await _both(c, where, headers)
            assert in_fast.status_code >= 400, (name, in_fast.text)
            assert _problem(in_fast) == _problem(in_litestar), name
            assert in_fast.headers.get("www-authenticate") == in_litestar.headers.get("www-authenticate"), name
            assert in_fast.json()["request_id"] == in_fast.headers["x-request-id"], name
        assert _problem(await c.post(path, headers=runners[2].headers))[2]["code"] == "sold_out"
        assert _lanes(FLASH_ROUTE) == (fast_before + 3 + len(cases), declined_before + 2 + len(cases))

        # A key litestar's parameter layer refuses is refused the same way whichever lane it arrives at.
        for bad in ("x" * 129, "two words"):
            in_fast, in_litestar = await _both(c, path, {**runners[3].headers, "Idempotency-Key": bad})
            assert in_fast.status_code == 400 and _problem(in_fast) == _problem(in_litestar)
            problem = in_fast.json()
            assert problem["detail"].startswith("Idempotency-Key: "), problem  # the header, not the argument
            assert problem["errors"][0]["key"] == "Idempotency-Key" and problem["errors"][0]["source"] == "header"
        # Two keys in one request: not one key, so litestar decides (it takes the first).
        twice = await c.post(
            path, headers=[*runners[3].headers.items(), ("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")]
        )
        assert twice.status_code == 409 and twice.json()["code"] == "sold_out"
        assert _lanes(FLASH_ROUTE)[1] == declined_before + 2 + len(cases) + 5


async def test_template_claims_answer_alike_in_both_lanes(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, stack_settings: Settings
) -> None:
    merchant = await accounts.merchant()
    template = await make_template(merchant, total_count=2, per_user_limit=1)
    runners = [await accounts.runner() for _ in range(3)]
    fast_before, declined_before = _lanes(TEMPLATE_ROUTE)
    async with roomy_client(stack_settings, node_id=207) as c:
        path = claim_path(template["id"])
        first = await c.post(path, headers={**runners[0].headers, "Idempotency-Key": "t-lanes"})
        again = await c.post(path, headers={**runners[0].headers, "Idempotency-Key": "t-lanes", **BROWSER})
        assert first.status_code == again.status_code == 201 and first.content == again.content
        assert (await c.post(path, headers={**runners[1].headers, **BROWSER})).status_code == 201
        for where, headers in [(path, runners[2].headers), (path, runners[0].headers), (claim_path("99"), {})]:
            in_fast, in_litestar = await _both(c, where, headers)
            assert in_fast.status_code in {401, 404, 409} and _problem(in_fast) == _problem(in_litestar)
        assert _lanes(TEMPLATE_ROUTE) == (fast_before + 4, declined_before + 5)
