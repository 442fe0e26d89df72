"""Quotes: the runner's coupons usable on an order at a merchant, best saving first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from picool.kernel import Kernel
from tests.coupon.conftest import Issue, MakeTemplate, close_window, iso

QUOTES = "/api/v1/coupon/quotes"
ITEMS = [
    {"sku": "run-shoe-1", "category": "shoes", "price_cents": 8_000, "qty": 1},
    {"sku": "sock-3", "category": "socks", "price_cents": 1_000, "qty": 2},
]  # 100.00 in all


async def test_usable_coupons_best_saving_first(
    client: httpx.AsyncClient, kernel: Kernel, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    shop, other, operator, runner = (
        await accounts.merchant(),
        await accounts.merchant(),
        await accounts.operator(),
        await accounts.runner(),
    )

    async def coupon(owner: Any, rule: dict[str, Any], **kw: Any) -> str:
        template = await make_template(owner, rule=rule, **kw)
        return str((await issue(template["id"], runner.user_id)).id)

    full = await coupon(shop, {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_000})
    pct = await coupon(shop, {"type": "discount", "percent_off": 15, "max_discount_cents": 1_200})
    platform = await coupon(operator, {"type": "direct", "amount_cents": 500})
    socks = await coupon(
        shop, {"type": "direct", "amount_cents": 5_000, "scope": {"kind": "category", "ids": ["socks"]}}
    )
    # Same discount as the platform one but it ends sooner: it comes first among equals.
    now = datetime.now(UTC)
    soon = {"kind": "fixed", "starts_at": iso(now - timedelta(hours=1)), "ends_at": iso(now + timedelta(days=2))}
    soon_id = await coupon(shop, {"type": "direct", "amount_cents": 500}, validity=soon)
    # Not usable here: another shop's, threshold not met, not valid yet, already expired, used.
    await coupon(other, {"type": "direct", "amount_cents": 9_000})
    await coupon(shop, {"type": "full_reduction", "threshold_cents": 10_001, "amount_cents": 5_000})
    later = {"kind": "fixed", "starts_at": iso(now + timedelta(days=1)), "ends_at": iso(now + timedelta(days=3))}
    await coupon(shop, {"type": "direct", "amount_cents": 700}, validity=later)
    old_template = await make_template(shop, rule={"type": "direct", "amount_cents": 800})
    await close_window(kernel, await issue(old_template["id"], runner.user_id))
    used_template = await make_template(shop, rule={"type": "direct", "amount_cents": 900})
    used = await issue(used_template["id"], runner.user_id)
    redeem = {"code": used.code, "order_amount_cents": 5_000, "idempotency_key": "u"}
    assert (await client.post("/api/v1/coupon/redemptions", json=redeem, headers=shop.headers)).status_code == 200

    resp = await client.post(QUOTES, json={"merchant_id": shop.merchant_id, "items": ITEMS}, headers=runner.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["order_amount_cents"] == 10_000 and body["next_cursor"] is None
    got = [(q["coupon"]["id"], q["discount_cents"], q["payable_cents"]) for q in body["items"]]
    assert got == [
        (full, 2_000, 8_000),  # tie at 20.00 with the next: both 30 days from receipt, this one expires sooner
        (socks, 2_000, 8_000),  # 50.00 off socks, but the socks only cost 20.00
        (pct, 1_200, 8_800),  # 15% is 15.00, capped at 12.00
        (soon_id, 500, 9_500),
        (platform, 500, 9_500),
    ]
    assert body["items"][0]["description"] == "20.00 off orders from 100.00"
    assert {q["coupon"]["status"] for q in body["items"]} == {"unused"}


async def test_no_coupons_no_quotes(client: httpx.AsyncClient, accounts: Any) -> None:
    shop, runner = await accounts.merchant(), await accounts.runner()
    resp = await client.post(QUOTES, json={"merchant_id": shop.merchant_id, "items": ITEMS}, headers=runner.headers)
    assert resp.status_code == 200
    assert resp.json()["items"] == []


async def test_quotes_are_for_runners(client: httpx.AsyncClient, accounts: Any) -> None:
    shop = await accounts.merchant()
    body = {"merchant_id": shop.merchant_id, "items": ITEMS}
    assert (await client.post(QUOTES, json=body)).status_code == 401
    assert (await client.post(QUOTES, json=body, headers=shop.headers)).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"merchant_id": "1", "items": []},
        {"merchant_id": "abc", "items": ITEMS},
        {"merchant_id": "", "items": ITEMS},
        {"merchant_id": 1, "items": ITEMS},
        {"items": ITEMS},
        {"merchant_id": "1"},
        {"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": -1, "qty": 1}]},
        {"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": 1, "qty": 0}]},
        {"merchant_id": "1", "items": [{"sku": "", "category": "b", "price_cents": 1, "qty": 1}]},
        {"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": 1.5, "qty": 1}]},
        {"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": 10**11, "qty": 1_000_000}]},
        {"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": 1, "colour": "red"}]},
        {"merchant_id": "1", "items": [{"sku": "a", "category": "b", "price_cents": 1}] * 501},
        {"merchant_id": "1", "items": "all"},
    ],
)
async def test_bad_orders_are_400(client: httpx.AsyncClient, accounts: Any, body: dict[str, Any]) -> None:
    runner = await accounts.runner()
    resp = await client.post(QUOTES, json=body, headers=runner.headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_request"
