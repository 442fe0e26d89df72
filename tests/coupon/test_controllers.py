"""Every coupon endpoint answers malformed and hostile input with a 4xx problem, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.coupon.conftest import Issue, MakeTemplate

HOSTILE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b"\xff\xfe\x00",
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    b'{"order_amount_cents": 1e400, "code": "x", "idempotency_key": "k"}',
    b'{"order_amount_cents": 100000000000000000000000, "code": "x", "idempotency_key": "k"}',
    b'{"code": "\\u0000", "order_amount_cents": 1, "idempotency_key": "\\u0000"}',
    b'{"name": {"$gt": ""}, "rule": {}, "validity": {}}',
    b'{"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": 1, "qty": 1}], "extra": true}',
]


@pytest.fixture
async def world(accounts: Any, make_template: MakeTemplate, issue: Issue) -> dict[str, Any]:
    merchant, runner, operator = await accounts.merchant(), await accounts.runner(), await accounts.operator()
    template = await make_template(merchant)
    coupon = await issue(template["id"], runner.user_id)
    return {"merchant": merchant, "runner": runner, "operator": operator, "template": template, "coupon": coupon}


def _endpoints(w: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(method, path, the role allowed to call it) for every coupon endpoint that takes a body."""
    cid = w["coupon"].id
    return [
        ("POST", "/api/v1/coupon/templates", w["merchant"]),
        ("POST", "/api/v1/coupon/quotes", w["runner"]),
        ("POST", "/api/v1/coupon/redemptions", w["merchant"]),
        ("POST", f"/api/v1/coupon/coupons/{cid}/freeze", w["operator"]),
        ("POST", f"/api/v1/coupon/coupons/{cid}/unfreeze", w["operator"]),
    ]


def _assert_problem(resp: httpx.Response, low: int = 400, high: int = 499) -> None:
    assert low <= resp.status_code <= high, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == resp.status_code


async def test_hostile_bodies(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    for method, path, who in _endpoints(world):
        for raw in HOSTILE_BODIES:
            resp = await client.request(
                method, path, content=raw, headers={**who.headers, "Content-Type": "application/json"}
            )
            if resp.status_code == 200 and path.endswith("freeze"):
                continue  # freeze/unfreeze take an optional body; some of these decode as "no reason"
            _assert_problem(resp)


async def test_wrong_content_type(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    for method, path, who in _endpoints(world)[:3]:
        resp = await client.request(
            method,
            path,
            content=b"code=x",
            headers={**who.headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        _assert_problem(resp)


@pytest.mark.parametrize(
    "body",
    [
        {"code": "x", "order_amount_cents": -1, "idempotency_key": "k"},
        {"code": "x", "order_amount_cents": 10**11 + 1, "idempotency_key": "k"},
        {"code": "x", "order_amount_cents": "100", "idempotency_key": "k", "tip": 1},
        {"code": "", "order_amount_cents": 1, "idempotency_key": "k"},
        {"code": "x" * 65, "order_amount_cents": 1, "idempotency_key": "k"},
        {"code": "x", "order_amount_cents": 1, "idempotency_key": ""},
        {"code": "x", "order_amount_cents": 1, "idempotency_key": "has space"},
        {"code": "x", "order_amount_cents": 1, "idempotency_key": "ключ"},
        {"code": "x", "order_amount_cents": 1, "idempotency_key": "k" * 129},
        {"code": "x", "order_amount_cents": 1},
        {"code": 5, "order_amount_cents": 1, "idempotency_key": "k"},
        {"code": "x", "order_amount_cents": 1, "idempotency_key": "k", "items": [{"sku": "a"}]},
    ],
)
async def test_bad_redemptions_are_400(client: httpx.AsyncClient, accounts: Any, body: dict[str, Any]) -> None:
    merchant = await accounts.merchant()
    resp = await client.post("/api/v1/coupon/redemptions", json=body, headers=merchant.headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    "code",
    ["x" * 64, "ÅÅÅÅ-ÅÅÅÅ-ÅÅÅÅ-ÅÅÅÅ", "0000-0000-0000-000$", "'; DROP TABLE user_coupons; --", "\u0130" * 16, "-" * 40],
)
async def test_strange_codes_are_unknown(client: httpx.AsyncClient, accounts: Any, code: str) -> None:
    merchant = await accounts.merchant()
    body = {"code": code, "order_amount_cents": 100, "idempotency_key": "k"}
    resp = await client.post("/api/v1/coupon/redemptions", json=body, headers=merchant.headers)
    assert (resp.status_code, resp.json()["code"]) == (404, "unknown_code")


@pytest.mark.parametrize("segment", ["0", "-1", "1e5", "99999999999999999999999", "%00", "..", "١٢٣"])
async def test_odd_path_ids(client: httpx.AsyncClient, world: dict[str, Any], segment: str) -> None:
    w = world
    calls = [
        ("GET", f"/api/v1/coupon/templates/{segment}", w["runner"]),
        ("GET", f"/api/v1/coupon/templates/{segment}/stats", w["merchant"]),
        ("GET", f"/api/v1/coupon/coupons/{segment}", w["operator"]),
        ("POST", f"/api/v1/coupon/coupons/{segment}/freeze", w["operator"]),
        ("POST", f"/api/v1/coupon/coupons/{segment}/unfreeze", w["operator"]),
        ("POST", f"/api/v1/coupon/redemptions/{segment}/reversal", w["merchant"]),
    ]
    for method, path, who in calls:
        resp = await client.request(method, path, headers=who.headers)
        _assert_problem(resp)


async def test_every_endpoint_wants_a_token(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    cid, tid = world["coupon"].id, world["template"]["id"]
    calls = [
        ("POST", "/api/v1/coupon/templates"),
        ("GET", "/api/v1/coupon/templates"),
        ("GET", f"/api/v1/coupon/templates/{tid}"),
        ("GET", f"/api/v1/coupon/templates/{tid}/stats"),
        ("GET", "/api/v1/coupon/me/coupons"),
        ("GET", f"/api/v1/coupon/coupons/{cid}"),
        ("POST", "/api/v1/coupon/quotes"),
        ("POST", "/api/v1/coupon/redemptions"),
        ("POST", "/api/v1/coupon/redemptions/preview"),
        ("POST", "/api/v1/coupon/redemptions/1/reversal"),
        ("POST", f"/api/v1/coupon/coupons/{cid}/freeze"),
        ("POST", f"/api/v1/coupon/coupons/{cid}/unfreeze"),
    ]
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer x.y.z"}, {"Authorization": "Basic abc"}):
            resp = await client.request(method, path, headers=headers, json={})
            assert resp.status_code == 401, (method, path, resp.text)
            _assert_problem(resp, 401, 401)


async def test_openapi_lists_the_coupon_api(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/coupon/templates",
        "/api/v1/coupon/templates/{template_id}",
        "/api/v1/coupon/templates/{template_id}/stats",
        "/api/v1/coupon/me/coupons",
        "/api/v1/coupon/quotes",
        "/api/v1/coupon/redemptions",
        "/api/v1/coupon/redemptions/preview",
        "/api/v1/coupon/redemptions/{transaction_id}/reversal",
        "/api/v1/coupon/coupons/{coupon_id}/freeze",
        "/api/v1/coupon/coupons/{coupon_id}/unfreeze",
    ):
        assert path in paths, path
