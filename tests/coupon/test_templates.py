"""Templates: creation and its validation, who may do what, the two-level cache, statistics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from coupon import service as coupon_service
from picool.kernel import Kernel
from tests.coupon.conftest import template_body

API = "/api/v1/coupon/templates"


async def test_merchant_creates_and_anyone_signed_in_reads(client: httpx.AsyncClient, accounts: Any) -> None:
    merchant = await accounts.merchant()
    runner = await accounts.runner()
    resp = await client.post(API, json=template_body(distribution="task_reward"), headers=merchant.headers)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["merchant_id"] == merchant.merchant_id
    assert isinstance(created["id"], str)
    assert created["distribution"] == "task_reward"
    assert created["rule"] == {
        "type": "full_reduction",
        "threshold_cents": 10_000,
        "amount_cents": 2_000,
        "scope": {"kind": "all", "ids": []},
    }
    assert created["validity"] == {"kind": "relative", "days": 30}
    assert created["total_count"] == 100 and created["per_user_limit"] == 1
    assert created["description"] == "Spring promotion"

    for who in (runner, merchant):
        got = await client.get(f"{API}/{created['id']}", headers=who.headers)
        assert got.status_code == 200
        assert got.json() == created


async def test_service_token_reads_a_template(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    merchant = await accounts.merchant()
    body = await _create(client, merchant.headers, distribution="task_reward")
    token = await kernel.service_token()
    resp = await client.get(f"{API}/{body['id']}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["merchant_id"] == merchant.merchant_id
    assert resp.json()["distribution"] == "task_reward"


async def test_operator_creates_platform_template(client: httpx.AsyncClient, accounts: Any) -> None:
    operator = await accounts.operator()
    body = await _create(
        client, operator.headers, rule={"type": "discount", "percent_off": 15, "max_discount_cents": 3_000}
    )
    assert body["merchant_id"] is None
    assert body["rule"]["max_discount_cents"] == 3_000
    assert body["rule"]["threshold_cents"] is None


async def test_fixed_validity_and_scoped_rule_round_trip(client: httpx.AsyncClient, accounts: Any) -> None:
    merchant = await accounts.merchant()
    rule = {"type": "direct", "amount_cents": 500, "scope": {"kind": "category", "ids": ["shoes", "socks"]}}
    validity = {"kind": "fixed", "starts_at": "2026-12-01T00:00:00Z", "ends_at": "2026-12-31T23:59:59+08:00"}
    body = await _create(client, merchant.headers, rule=rule, validity=validity)
    assert body["rule"] == rule
    assert body["validity"] == {"kind": "fixed", "starts_at": "2026-12-01T00:00:00Z", "ends_at": "2026-12-31T15:59:59Z"}


async def test_create_needs_token_and_role(client: httpx.AsyncClient, accounts: Any) -> None:
    runner = await accounts.runner()
    resp = await client.post(API, json=template_body())
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("application/problem+json")
    resp = await client.post(API, json=template_body(), headers={"Authorization": "Bearer not-a-jwt"})
    assert resp.status_code == 401
    resp = await client.post(API, json=template_body(), headers=runner.headers)
    assert resp.status_code == 403
    assert resp.json()["code"] == "forbidden"


async def test_get_needs_a_token(client: httpx.AsyncClient, accounts: Any) -> None:
    merchant = await accounts.merchant()
    body = await _create(client, merchant.headers)
    assert (await client.get(f"{API}/{body['id']}")).status_code == 401


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        # full_reduction: threshold > amount > 0
        ({"rule": {"type": "full_reduction", "threshold_cents": 1000, "amount_cents": 1000}}, "rule.amount_cents"),
        ({"rule": {"type": "full_reduction", "threshold_cents": 1000, "amount_cents": 0}}, "rule.amount_cents"),
        ({"rule": {"type": "full_reduction", "threshold_cents": 1000, "amount_cents": -5}}, "rule.amount_cents"),
        ({"rule": {"type": "full_reduction", "amount_cents": 100}}, "rule.threshold_cents"),
        ({"rule": {"type": "full_reduction", "threshold_cents": "1000", "amount_cents": 10}}, "rule.threshold_cents"),
        ({"rule": {"type": "full_reduction", "threshold_cents": 1000.5, "amount_cents": 10}}, "rule.threshold_cents"),
        ({"rule": {"type": "full_reduction", "threshold_cents": True, "amount_cents": 1}}, "rule.threshold_cents"),
        # discount: percent_off 1..99, optional cap
        ({"rule": {"type": "discount", "percent_off": 0}}, "rule.percent_off"),
        ({"rule": {"type": "discount", "percent_off": 100}}, "rule.percent_off"),
        ({"rule": {"type": "discount"}}, "rule.percent_off"),
        ({"rule": {"type": "discount", "percent_off": 10, "max_discount_cents": 0}}, "rule.max_discount_cents"),
        ({"rule": {"type": "discount", "percent_off": 10, "threshold_cents": -1}}, "rule.threshold_cents"),
        ({"rule": {"type": "discount", "percent_off": 10, "max_discount": 500}}, "rule.max_discount"),
        # direct: amount > 0
        ({"rule": {"type": "direct", "amount_cents": 0}}, "rule.amount_cents"),
        ({"rule": {"type": "direct"}}, "rule.amount_cents"),
        # type
        ({"rule": {"type": "bogus", "amount_cents": 1}}, "rule.type"),
        ({"rule": {"amount_cents": 1}}, "rule.type"),
        # scope kinds and ids
        ({"rule": {"type": "direct", "amount_cents": 1, "scope": {"kind": "brand", "ids": ["x"]}}}, "rule.scope.kind"),
        ({"rule": {"type": "direct", "amount_cents": 1, "scope": {"kind": "category", "ids": []}}}, "rule.scope.ids"),
        ({"rule": {"type": "direct", "amount_cents": 1, "scope": {"kind": "all", "ids": ["x"]}}}, "rule.scope.ids"),
        (
            {"rule": {"type": "direct", "amount_cents": 1, "scope": {"kind": "product", "ids": ["a", "a"]}}},
            "rule.scope.ids[1]",
        ),
        (
            {"rule": {"type": "direct", "amount_cents": 1, "scope": {"kind": "product", "ids": [7]}}},
            "rule.scope.ids[0]",
        ),
        ({"rule": {"type": "direct", "amount_cents": 1, "scope": "all"}}, "rule.scope"),
        # validity
        (
            {"validity": {"kind": "fixed", "starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"}},
            "validity.ends_at",
        ),
        (
            {"validity": {"kind": "fixed", "starts_at": "2026-12-01T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"}},
            "validity.ends_at",
        ),
        ({"validity": {"kind": "fixed", "starts_at": "2026-12-01", "ends_at": "2026-12-02"}}, "validity.starts_at"),
        (
            {"validity": {"kind": "fixed", "starts_at": "2026-12-01T00:00:00", "ends_at": "2026-12-02T00:00:00Z"}},
            "validity.starts_at",
        ),
        ({"validity": {"kind": "relative", "days": 0}}, "validity.days"),
        ({"validity": {"kind": "relative", "days": 3651}}, "validity.days"),
        ({"validity": {"kind": "relative"}}, "validity.days"),
        ({"validity": {"kind": "forever"}}, "validity.kind"),
        ({"validity": {"kind": "relative", "days": 3, "hours": 2}}, "validity.hours"),
    ],
)
async def test_rule_and_validity_errors_name_the_field(
    client: httpx.AsyncClient, accounts: Any, overrides: dict[str, Any], field: str
) -> None:
    merchant = await accounts.merchant()
    resp = await client.post(API, json=template_body(**overrides), headers=merchant.headers)
    assert resp.status_code == 400, resp.text
    problem = resp.json()
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "invalid_request"
    assert problem["errors"][0]["key"] == field
    assert problem["detail"].startswith(field)


@pytest.mark.parametrize(
    "overrides",
    [
        {"total_count": 0},
        {"total_count": 10_000_001},
        {"per_user_limit": 0},
        {"per_user_limit": -1},
        {"distribution": "airdrop"},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"rule": [1, 2]},
        {"rule": None},
        {"validity": "30 days"},
        {"merchant_id": "1"},
        {"description": "d" * 2001},
    ],
)
async def test_other_fields_are_validated(client: httpx.AsyncClient, accounts: Any, overrides: dict[str, Any]) -> None:
    merchant = await accounts.merchant()
    resp = await client.post(API, json=template_body(**overrides), headers=merchant.headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_request"


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe"])
async def test_malformed_bodies_are_400(client: httpx.AsyncClient, accounts: Any, raw: bytes) -> None:
    merchant = await accounts.merchant()
    resp = await client.post(API, content=raw, headers={**merchant.headers, "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_request"


@pytest.mark.parametrize("bad", ["0", "abc", "-1", "1" * 25, "９"])
async def test_unknown_or_malformed_ids_are_404(client: httpx.AsyncClient, accounts: Any, bad: str) -> None:
    runner = await accounts.runner()
    resp = await client.get(f"{API}/{bad}", headers=runner.headers)
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"
    resp = await client.get(f"{API}/123456789", headers=runner.headers)
    assert resp.status_code == 404


async def test_reads_go_through_the_cache_and_invalidation_reaches_them(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel
) -> None:
    merchant = await accounts.merchant()
    body = await _create(client, merchant.headers)
    cache = coupon_service.template_cache(kernel)
    misses, local = cache.stats.misses, cache.stats.local_hits
    for _ in range(3):
        assert (await client.get(f"{API}/{body['id']}", headers=merchant.headers)).json()["name"] == body["name"]
    assert cache.stats.misses == misses + 1  # loaded once ...
    assert cache.stats.local_hits == local + 2  # ... then served from the process

    # A change made behind the cache is not seen until the template is invalidated, then it is.
    async with kernel.engine.begin() as conn:
        await conn.execute(text("UPDATE coupon_templates SET name = 'renamed' WHERE id = :id"), {"id": int(body["id"])})
    assert (await client.get(f"{API}/{body['id']}", headers=merchant.headers)).json()["name"] == body["name"]
    await coupon_service.invalidate_template(kernel, int(body["id"]))
    assert (await client.get(f"{API}/{body['id']}", headers=merchant.headers)).json()["name"] == "renamed"


async def test_unknown_template_is_cached_as_missing(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    runner = await accounts.runner()
    cache = coupon_service.template_cache(kernel)
    misses = cache.stats.misses
    for _ in range(5):
        assert (await client.get(f"{API}/987654321", headers=runner.headers)).status_code == 404
    assert cache.stats.misses == misses + 1


async def test_stats_for_owner_and_operator_only(client: httpx.AsyncClient, accounts: Any, issue: Any) -> None:
    owner, other, runner, operator = (
        await accounts.merchant(),
        await accounts.merchant(),
        await accounts.runner(),
        await accounts.operator(),
    )
    body = await _create(client, owner.headers, total_count=5)
    await issue(body["id"], runner.user_id)
    expected = {"template_id": body["id"], "total": 5, "assigned": 1, "used": 0, "remaining": 4}
    for who in (owner, operator):
        resp = await client.get(f"{API}/{body['id']}/stats", headers=who.headers)
        assert resp.status_code == 200, resp.text
        assert resp.json() == expected
    assert (await client.get(f"{API}/{body['id']}/stats", headers=other.headers)).status_code == 403
    assert (await client.get(f"{API}/{body['id']}/stats", headers=runner.headers)).status_code == 403
    assert (await client.get(f"{API}/{body['id']}/stats")).status_code == 401
    assert (await client.get(f"{API}/424242/stats", headers=owner.headers)).status_code == 404
    assert (await client.get(f"{API}/nope/stats", headers=owner.headers)).status_code == 404


async def test_platform_stats_are_for_operators(client: httpx.AsyncClient, accounts: Any) -> None:
    operator, merchant = await accounts.operator(), await accounts.merchant()
    body = await _create(client, operator.headers)
    assert (await client.get(f"{API}/{body['id']}/stats", headers=merchant.headers)).status_code == 403
    assert (await client.get(f"{API}/{body['id']}/stats", headers=operator.headers)).status_code == 200


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = await client.post(API, json=template_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_templates_carry_their_rule_as_a_sentence(client: httpx.AsyncClient, accounts: Any) -> None:
    merchant = await accounts.merchant()
    rules = {
        "20.00 off orders from 100.00": {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_000},
        "15% off, up to 30.00 off, on orders from 50.00": {
            "type": "discount", "percent_off": 15, "max_discount_cents": 3_000, "threshold_cents": 5_000,
        },
        "5.05 off on category shoes": {
            "type": "direct", "amount_cents": 505, "scope": {"kind": "category", "ids": ["shoes"]},
        },
    }  # fmt: skip
    for sentence, rule in rules.items():
        resp = await client.post(API, json=template_body(rule=rule), headers=merchant.headers)
        assert resp.status_code == 201, resp.text
        assert resp.json()["rule_text"] == sentence
        assert (await client.get(f"{API}/{resp.json()['id']}", headers=merchant.headers)).json()[
            "rule_text"
        ] == sentence


async def test_list_shows_own_templates_newest_first_in_pages(client: httpx.AsyncClient, accounts: Any) -> None:
    merchant, other, operator, runner = (
        await accounts.merchant(), await accounts.merchant(), await accounts.operator(), await accounts.runner(),
    )  # fmt: skip
    mine = []
    for k in range(3):
        resp = await client.post(API, json=template_body(name=f"mine {k}"), headers=merchant.headers)
        mine.append(resp.json()["id"])
    await client.post(API, json=template_body(name="theirs"), headers=other.headers)
    platform = (await client.post(API, json=template_body(name="platform"), headers=operator.headers)).json()["id"]

    first = await client.get(API, params={"limit": 2}, headers=merchant.headers)
    assert first.status_code == 200, first.text
    assert [t["id"] for t in first.json()["items"]] == [mine[2], mine[1]]
    assert first.json()["items"][0]["rule_text"] == "20.00 off orders from 100.00"
    cursor = first.json()["next_cursor"]
    second = (await client.get(API, params={"limit": 2, "cursor": cursor}, headers=merchant.headers)).json()
    assert [t["id"] for t in second["items"]] == [mine[0]] and second["next_cursor"] is None

    ops = (await client.get(API, headers=operator.headers)).json()["items"]
    assert [t["id"] for t in ops] == [platform]  # operators manage the platform batches
    assert (await client.get(API, headers=runner.headers)).status_code == 403
    assert (await client.get(API)).status_code == 401
    bad = await client.get(API, params={"cursor": "nope"}, headers=merchant.headers)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")
    assert (await client.get(API, params={"limit": 0}, headers=merchant.headers)).status_code == 400
