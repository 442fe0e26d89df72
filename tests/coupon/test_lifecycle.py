"""Lifecycle: freeze and unfreeze by operators, the expiry sweep, reading one coupon; every move audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from coupon import service as coupon_service
from picool.kernel import Kernel
from picool.workers import Periodic
from tests.coupon.conftest import Issue, MakeTemplate, close_window

COUPONS = "/api/v1/coupon/coupons"


async def _audit(kernel: Kernel, coupon_id: int) -> list[tuple[Any, ...]]:
    async with kernel.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT actor, from_status, to_status, reason FROM coupon_audit WHERE coupon_id = :id ORDER BY id"),
            {"id": coupon_id},
        )
        return [tuple(r) for r in rows]


async def _stored_status(kernel: Kernel, coupon: coupon_service.CouponRecord) -> str:
    async with kernel.engine.connect() as conn:
        value = await conn.execute(
            text("SELECT status FROM user_coupons WHERE user_id = :u AND id = :id"),
            {"u": coupon.user_id, "id": coupon.id},
        )
        return str(value.scalar_one())


def _expiry_job(kernel: Kernel) -> Periodic:
    return next(p for sub in kernel.subsystems for p in sub.periodics if p.name == "coupon.expire")


@pytest.fixture
async def quiet_sweeper(client: httpx.AsyncClient, kernel: Kernel) -> Any:
    """Keep the app's own expiry job (every minute, in the background) out of a test that counts what
    a sweep did: hold its Redis lease, so its runs return without doing anything."""
    lease = f"picool:lease:{_expiry_job(kernel).name}"
    await kernel.redis.set(lease, b"test", px=600_000)
    yield lease
    await kernel.redis.delete(lease)


@pytest.fixture
async def held(accounts: Any, make_template: MakeTemplate, issue: Issue) -> dict[str, Any]:
    merchant, runner, operator = await accounts.merchant(), await accounts.runner(), await accounts.operator()
    template = await make_template(merchant, per_user_limit=10)
    coupon = await issue(template["id"], runner.user_id)
    return {"merchant": merchant, "runner": runner, "operator": operator, "template": template, "coupon": coupon}


async def test_freeze_and_unfreeze(client: httpx.AsyncClient, kernel: Kernel, held: dict[str, Any]) -> None:
    operator, coupon = held["operator"], held["coupon"]
    resp = await client.post(
        f"{COUPONS}/{coupon.id}/freeze", json={"reason": "reported stolen"}, headers=operator.headers
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "frozen" and resp.json()["id"] == str(coupon.id)
    again = await client.post(f"{COUPONS}/{coupon.id}/freeze", headers=operator.headers)
    assert again.status_code == 200 and again.json()["status"] == "frozen"  # nothing new written
    resp = await client.post(f"{COUPONS}/{coupon.id}/unfreeze", headers=operator.headers)
    assert resp.status_code == 200 and resp.json()["status"] == "unused"
    actor = f"operator:{operator.user_id}"
    assert (await _audit(kernel, coupon.id))[1:] == [
        (actor, "unused", "frozen", "reported stolen"),
        (actor, "frozen", "unused", "unfrozen by an operator"),
    ]


async def test_only_operators_freeze(client: httpx.AsyncClient, held: dict[str, Any]) -> None:
    coupon = held["coupon"]
    for action in ("freeze", "unfreeze"):
        assert (await client.post(f"{COUPONS}/{coupon.id}/{action}")).status_code == 401
        for who in (held["merchant"], held["runner"]):
            resp = await client.post(f"{COUPONS}/{coupon.id}/{action}", headers=who.headers)
            assert resp.status_code == 403


@pytest.mark.parametrize("bad", ["123456789", "abc", "0", "9" * 30])
async def test_freeze_unknown_coupon(client: httpx.AsyncClient, accounts: Any, bad: str) -> None:
    operator = await accounts.operator()
    assert (await client.post(f"{COUPONS}/{bad}/freeze", headers=operator.headers)).status_code == 404


@pytest.mark.parametrize("body", [{"reason": 5}, {"reason": "x" * 201}, {"why": "x"}, [1]])
async def test_freeze_bad_body(client: httpx.AsyncClient, held: dict[str, Any], body: Any) -> None:
    resp = await client.post(f"{COUPONS}/{held['coupon'].id}/freeze", json=body, headers=held["operator"].headers)
    assert resp.status_code == 400


async def test_used_and_expired_coupons_cannot_be_frozen(
    client: httpx.AsyncClient, kernel: Kernel, held: dict[str, Any], issue: Issue
) -> None:
    operator, merchant, coupon = held["operator"], held["merchant"], held["coupon"]
    redeem = {"code": coupon.code, "order_amount_cents": 10_000, "idempotency_key": "k"}
    assert (await client.post("/api/v1/coupon/redemptions", json=redeem, headers=merchant.headers)).status_code == 200
    resp = await client.post(f"{COUPONS}/{coupon.id}/freeze", headers=operator.headers)
    assert (resp.status_code, resp.json()["code"]) == (409, "already_used")
    resp = await client.post(f"{COUPONS}/{coupon.id}/unfreeze", headers=operator.headers)
    assert (resp.status_code, resp.json()["code"]) == (409, "already_used")
    late = await issue(held["template"]["id"], held["runner"].user_id)
    await close_window(kernel, late)
    resp = await client.post(f"{COUPONS}/{late.id}/freeze", headers=operator.headers)
    assert (resp.status_code, resp.json()["code"]) == (409, "expired")


async def test_a_frozen_coupon_unfrozen_after_its_window_reads_expired(
    client: httpx.AsyncClient, kernel: Kernel, held: dict[str, Any], quiet_sweeper: str
) -> None:
    operator, coupon = held["operator"], held["coupon"]
    await client.post(f"{COUPONS}/{coupon.id}/freeze", headers=operator.headers)
    await close_window(kernel, coupon)
    assert await coupon_service.expire_due(kernel, datetime.now(UTC)) == 0  # the sweep leaves frozen ones alone
    resp = await client.post(f"{COUPONS}/{coupon.id}/unfreeze", headers=operator.headers)
    assert resp.status_code == 200 and resp.json()["status"] == "expired"
    assert await coupon_service.expire_due(kernel, datetime.now(UTC)) == 1
    assert await _stored_status(kernel, coupon) == "expired"


async def test_expiry_sweep(
    client: httpx.AsyncClient, kernel: Kernel, held: dict[str, Any], issue: Issue, quiet_sweeper: str
) -> None:
    runner = held["runner"]
    others = [await issue(held["template"]["id"], runner.user_id) for _ in range(4)]
    due = [held["coupon"], *others[:2]]
    for c in due:
        await close_window(kernel, c)
    # Before the sweep: stored unused, shown expired.
    assert await _stored_status(kernel, due[0]) == "unused"
    unused = (await client.get("/api/v1/coupon/me/coupons?status=unused", headers=runner.headers)).json()["items"]
    assert {c["id"] for c in unused} == {str(c.id) for c in others[2:]}

    await kernel.redis.delete(quiet_sweeper)
    await _expiry_job(kernel).run_once()
    assert [await _stored_status(kernel, c) for c in due] == ["expired"] * 3
    assert [await _stored_status(kernel, c) for c in others[2:]] == ["unused"] * 2
    assert (await _audit(kernel, due[0].id))[-1] == ("system:expiry", "unused", "expired", "validity ended")
    expired = (await client.get("/api/v1/coupon/me/coupons?status=expired", headers=runner.headers)).json()["items"]
    assert {c["id"] for c in expired} == {str(c.id) for c in due}
    await kernel.redis.set(quiet_sweeper, b"test", px=600_000)
    assert await coupon_service.expire_due(kernel, datetime.now(UTC)) == 0  # nothing left, safe to run twice


async def test_expiry_works_in_batches_across_partitions(
    client: httpx.AsyncClient,
    kernel: Kernel,
    accounts: Any,
    make_template: MakeTemplate,
    issue: Issue,
    quiet_sweeper: str,
) -> None:
    merchant = await accounts.merchant()
    template = await make_template(merchant, per_user_limit=10, total_count=1000)
    coupons = [await issue(template["id"], user_id) for user_id in range(1000, 1040)]  # every shard, some twice
    for c in coupons:
        await close_window(kernel, c, invalidate=False)
    assert await coupon_service.expire_due(kernel, datetime.now(UTC), batch=3) == 40
    assert {await _stored_status(kernel, c) for c in coupons} == {"expired"}


async def test_get_one_coupon(client: httpx.AsyncClient, accounts: Any, held: dict[str, Any]) -> None:
    coupon = held["coupon"]
    for who in (held["runner"], held["operator"]):
        resp = await client.get(f"{COUPONS}/{coupon.id}", headers=who.headers)
        assert resp.status_code == 200
        assert resp.json()["code"] == coupon.code
    stranger = await accounts.runner()
    assert (await client.get(f"{COUPONS}/{coupon.id}", headers=stranger.headers)).status_code == 403
    assert (await client.get(f"{COUPONS}/{coupon.id}", headers=held["merchant"].headers)).status_code == 403
    assert (await client.get(f"{COUPONS}/{coupon.id}")).status_code == 401
    assert (await client.get(f"{COUPONS}/1", headers=held["runner"].headers)).status_code == 404
