"""Redemption at the till and its reversal: rules, ownership, idempotency, and the race for one code."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from coupon import codes as coupon_codes
from coupon import service as coupon_service
from picool.kernel import Kernel
from tests.coupon.conftest import Issue, MakeTemplate, close_window, iso

REDEEM = "/api/v1/coupon/redemptions"


def _body(code: str, amount: int = 20_000, key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"code": code, "order_amount_cents": amount, "idempotency_key": key or uuid.uuid4().hex, **extra}


async def _stats(client: httpx.AsyncClient, owner: Any, template_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/coupon/templates/{template_id}/stats", headers=owner.headers)
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


async def _count(kernel: Kernel, sql: str, **params: Any) -> int:
    async with kernel.engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


@pytest.fixture
async def setup(accounts: Any, make_template: MakeTemplate, issue: Issue) -> dict[str, Any]:
    """A merchant, a runner holding one of the merchant's "20 off 100" coupons."""
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, per_user_limit=5)
    coupon = await issue(template["id"], runner.user_id)
    return {"merchant": merchant, "runner": runner, "template": template, "coupon": coupon}


async def test_redeem(client: httpx.AsyncClient, kernel: Kernel, setup: dict[str, Any]) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    before = datetime.now(UTC)
    # Typed the way people do at a till: lower case, spaces, O for 0.
    typed = coupon.code.lower().replace("-", " ").replace("0", "o")
    resp = await client.post(REDEEM, json=_body(typed, 25_000), headers=merchant.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"transaction_id", "coupon_id", "discount_cents", "payable_cents", "redeemed_at"}
    assert body["coupon_id"] == str(coupon.id)
    assert (body["discount_cents"], body["payable_cents"]) == (2_000, 23_000)
    assert isinstance(body["transaction_id"], str)
    assert datetime.fromisoformat(body["redeemed_at"]) >= before
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 1
    audit = await _count(
        kernel,
        "SELECT count(*) FROM coupon_audit WHERE coupon_id = :id AND from_status = 'unused' AND to_status = 'used' "
        "AND actor = :actor",
        id=coupon.id,
        actor=f"merchant:{merchant.merchant_id}/user:{merchant.user_id}",
    )
    assert audit == 1
    wallet = (await client.get("/api/v1/coupon/me/coupons", headers=setup["runner"].headers)).json()["items"]
    assert wallet[0]["status"] == "used" and wallet[0]["used_at"] is not None


async def test_refusals(
    client: httpx.AsyncClient, kernel: Kernel, accounts: Any, setup: dict[str, Any], issue: Issue
) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    other = await accounts.merchant()

    async def refused(code: str, amount: int, who: Any = merchant) -> tuple[int, str]:
        resp = await client.post(REDEEM, json=_body(code, amount), headers=who.headers)
        assert resp.headers["content-type"].startswith("application/problem+json")
        return resp.status_code, resp.json()["code"]

    assert await refused(coupon.code, 20_000, other) == (409, "wrong_merchant")
    assert await refused(coupon.code, 9_999, merchant) == (409, "threshold_not_met")
    assert await refused(coupon_codes.new_code(int(setup["runner"].user_id) % 16), 20_000) == (404, "unknown_code")
    typo = coupon.code[:-1] + ("0" if coupon.code[-1] != "0" else "1")
    assert await refused(typo, 20_000) == (404, "unknown_code")
    assert await refused("hello", 20_000) == (404, "unknown_code")
    assert await refused(coupon_codes.new_code(999), 20_000) == (404, "unknown_code")

    assert (await client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers)).status_code == 200
    assert await refused(coupon.code, 20_000) == (409, "already_used")
    assert await refused(coupon.code, 20_000, other) == (409, "wrong_merchant")  # another shop learns nothing more

    expired = await issue(setup["template"]["id"], setup["runner"].user_id)
    await close_window(kernel, expired)
    assert await refused(expired.code, 20_000) == (409, "expired")

    frozen = await issue(setup["template"]["id"], setup["runner"].user_id)
    operator = await accounts.operator()
    assert (
        await client.post(f"/api/v1/coupon/coupons/{frozen.id}/freeze", headers=operator.headers)
    ).status_code == 200
    assert await refused(frozen.code, 20_000) == (409, "frozen")
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 1


async def test_not_yet_valid(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    now = datetime.now(UTC)
    later = {"kind": "fixed", "starts_at": iso(now + timedelta(days=1)), "ends_at": iso(now + timedelta(days=2))}
    coupon = await issue((await make_template(merchant, validity=later))["id"], runner.user_id)
    resp = await client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers)
    assert (resp.status_code, resp.json()["code"]) == (409, "not_yet_valid")


async def test_platform_coupons_are_accepted_by_every_merchant(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    operator, shop, runner = await accounts.operator(), await accounts.merchant(), await accounts.runner()
    template = await make_template(operator, rule={"type": "discount", "percent_off": 15, "max_discount_cents": 1_000})
    coupon = await issue(template["id"], runner.user_id)
    resp = await client.post(REDEEM, json=_body(coupon.code, 999), headers=shop.headers)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["discount_cents"], resp.json()["payable_cents"]) == (149, 850)  # 15% of 9.99, rounded down


async def test_scoped_coupons_look_at_the_items(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    rule = {"type": "direct", "amount_cents": 500, "scope": {"kind": "category", "ids": ["shoes"]}}
    template = await make_template(merchant, rule=rule, per_user_limit=2)
    coupon = await issue(template["id"], runner.user_id)
    resp = await client.post(REDEEM, json=_body(coupon.code, 10_000), headers=merchant.headers)
    assert (resp.status_code, resp.json()["code"]) == (409, "threshold_not_met")  # nothing provably in scope
    items = [
        {"sku": "s1", "category": "shoes", "price_cents": 300, "qty": 1},
        {"sku": "t1", "category": "shirts", "price_cents": 9_700, "qty": 1},
    ]
    resp = await client.post(REDEEM, json=_body(coupon.code, 10_000, items=items), headers=merchant.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["discount_cents"] == 300  # never more than the in-scope amount


async def test_same_key_same_answer_and_nothing_twice(
    client: httpx.AsyncClient, kernel: Kernel, setup: dict[str, Any]
) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    body = _body(coupon.code, 20_000, key="till-7-receipt-42")
    first = await client.post(REDEEM, json=body, headers=merchant.headers)
    again = await client.post(REDEEM, json=body, headers=merchant.headers)
    retyped = await client.post(REDEEM, json={**body, "code": coupon.code.lower()}, headers=merchant.headers)
    assert first.status_code == again.status_code == retyped.status_code == 200
    assert first.json() == again.json() == retyped.json()
    assert await _count(kernel, "SELECT count(*) FROM redemptions") == 1
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 1

    for changed in ({**body, "order_amount_cents": 30_000}, {**body, "code": coupon_codes.new_code(3)}):
        resp = await client.post(REDEEM, json=changed, headers=merchant.headers)
        assert (resp.status_code, resp.json()["code"]) == (409, "idempotency_conflict")


async def test_keys_belong_to_one_merchant(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    """Two shops that happen to use the same key do not see each other's answers."""
    a, b, runner = await accounts.merchant(), await accounts.merchant(), await accounts.runner()
    ca = await issue((await make_template(a))["id"], runner.user_id)
    cb = await issue((await make_template(b))["id"], runner.user_id)
    ra = await client.post(REDEEM, json=_body(ca.code, key="1"), headers=a.headers)
    rb = await client.post(REDEEM, json=_body(cb.code, key="1"), headers=b.headers)
    assert ra.status_code == rb.status_code == 200
    assert ra.json()["coupon_id"] == str(ca.id) and rb.json()["coupon_id"] == str(cb.id)


async def test_fifty_concurrent_redemptions_of_one_code(
    client: httpx.AsyncClient, kernel: Kernel, setup: dict[str, Any]
) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    # A cold template cache too: fifty requests (more than the connection pool holds) must not wait
    # on one loader while holding every pooled connection.
    await coupon_service.invalidate_template(kernel, coupon.template_id)
    responses = await asyncio.gather(
        *(client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers) for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 49
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_used"}
    assert await _count(kernel, "SELECT count(*) FROM redemptions") == 1
    assert await _count(kernel, "SELECT count(*) FROM coupon_audit WHERE to_status = 'used'") == 1
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 1


async def test_concurrent_retries_with_one_key_get_one_answer(
    client: httpx.AsyncClient, kernel: Kernel, setup: dict[str, Any]
) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    body = _body(coupon.code, key="same")
    responses = await asyncio.gather(*(client.post(REDEEM, json=body, headers=merchant.headers) for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert await _count(kernel, "SELECT count(*) FROM redemptions") == 1


async def test_reversal(client: httpx.AsyncClient, kernel: Kernel, accounts: Any, setup: dict[str, Any]) -> None:
    merchant, runner, coupon = setup["merchant"], setup["runner"], setup["coupon"]
    other, operator = await accounts.merchant(), await accounts.operator()
    txn = (await client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers)).json()["transaction_id"]
    url = f"{REDEEM}/{txn}/reversal"
    assert (await client.post(url)).status_code == 401
    for who in (other, runner, operator):
        assert (await client.post(url, headers=who.headers)).status_code == 403
    resp = await client.post(url, headers=merchant.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["id"], body["status"], body["used_at"]) == (str(coupon.id), "unused", None)
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 0
    again = await client.post(url, headers=merchant.headers)  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "unused"
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 0
    wallet = (await client.get("/api/v1/coupon/me/coupons?status=unused", headers=runner.headers)).json()["items"]
    assert [c["id"] for c in wallet] == [str(coupon.id)]
    audit = await _count(
        kernel, "SELECT count(*) FROM coupon_audit WHERE coupon_id = :id AND from_status = 'used'", id=coupon.id
    )
    assert audit == 1
    # Usable again; reversing the old transaction a third time does not touch the new redemption.
    assert (await client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers)).status_code == 200
    assert (await client.post(url, headers=merchant.headers)).json()["status"] == "used"
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 1


async def test_reversal_after_the_window_closed(
    client: httpx.AsyncClient, kernel: Kernel, setup: dict[str, Any]
) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    txn = (await client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers)).json()["transaction_id"]
    await close_window(kernel, coupon)
    resp = await client.post(f"{REDEEM}/{txn}/reversal", headers=merchant.headers)
    assert (resp.status_code, resp.json()["code"]) == (409, "expired")
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 1


@pytest.mark.parametrize("txn", ["123456789", "abc", "0", "1" * 30])
async def test_reversal_of_unknown_transaction(client: httpx.AsyncClient, accounts: Any, txn: str) -> None:
    merchant = await accounts.merchant()
    resp = await client.post(f"{REDEEM}/{txn}/reversal", headers=merchant.headers)
    assert resp.status_code == 404


async def test_redeem_needs_merchant_staff(client: httpx.AsyncClient, accounts: Any, setup: dict[str, Any]) -> None:
    body = _body(setup["coupon"].code)
    assert (await client.post(REDEEM, json=body)).status_code == 401
    for who in (setup["runner"], await accounts.operator()):
        resp = await client.post(REDEEM, json=body, headers=who.headers)
        assert resp.status_code == 403
    assert (await _stats(client, setup["merchant"], setup["template"]["id"]))["used"] == 0


PREVIEW = "/api/v1/coupon/redemptions/preview"


async def test_preview_shows_the_discount_and_redeems_nothing(
    client: httpx.AsyncClient, kernel: Kernel, accounts: Any, setup: dict[str, Any]
) -> None:
    merchant, coupon = setup["merchant"], setup["coupon"]
    resp = await client.post(PREVIEW, json={"code": coupon.code.lower(), "order_amount_cents": 12_345},
                             headers=merchant.headers)  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["coupon_id"] == str(coupon.id) and body["code"] == coupon.code
    assert body["template_id"] == setup["template"]["id"] and body["template_name"] == "20 off 100"
    assert body["rule_text"] == "20.00 off orders from 100.00"
    assert (body["order_amount_cents"], body["discount_cents"], body["payable_cents"]) == (12_345, 2_000, 10_345)
    assert datetime.fromisoformat(body["valid_to"]) == coupon.valid_to
    # Nothing happened: the coupon is unused, no redemption row, the counter untouched.
    assert (await _stats(client, merchant, setup["template"]["id"]))["used"] == 0
    assert await _count(kernel, "SELECT count(*) FROM redemptions WHERE coupon_id = :id", id=coupon.id) == 0
    # Then the real redemption gives what the preview showed.
    done = await client.post(REDEEM, json=_body(coupon.code, 12_345), headers=merchant.headers)
    assert (done.json()["discount_cents"], done.json()["payable_cents"]) == (2_000, 10_345)


async def test_preview_refuses_like_a_redemption(
    client: httpx.AsyncClient, accounts: Any, setup: dict[str, Any]
) -> None:
    merchant, coupon, runner = setup["merchant"], setup["coupon"], setup["runner"]
    other = await accounts.merchant()

    async def refused(code: str, amount: int, who: Any = merchant) -> tuple[int, str]:
        resp = await client.post(PREVIEW, json={"code": code, "order_amount_cents": amount}, headers=who.headers)
        assert resp.headers["content-type"].startswith("application/problem+json")
        return resp.status_code, resp.json()["code"]

    assert await refused(coupon.code, 9_999) == (409, "threshold_not_met")
    assert await refused(coupon.code, 20_000, other) == (409, "wrong_merchant")
    assert await refused("hello", 20_000) == (404, "unknown_code")
    assert await refused(coupon_codes.new_code(int(runner.user_id) % 16), 20_000) == (404, "unknown_code")
    assert (await client.post(REDEEM, json=_body(coupon.code), headers=merchant.headers)).status_code == 200
    assert await refused(coupon.code, 20_000) == (409, "already_used")
    # Only merchant staff, and only well-formed bodies.
    body = {"code": coupon.code, "order_amount_cents": 20_000}
    assert (await client.post(PREVIEW, json=body, headers=runner.headers)).status_code == 403
    assert (await client.post(PREVIEW, json=body)).status_code == 401
    for bad in ({"code": coupon.code}, {"code": coupon.code, "order_amount_cents": -1},
                {"code": coupon.code, "order_amount_cents": 1.5}, {**body, "idempotency_key": "x"}, []):  # fmt: skip
        resp = await client.post(PREVIEW, json=bad, headers=merchant.headers)
        assert (resp.status_code, resp.json()["code"]) == (400, "invalid_request"), bad
