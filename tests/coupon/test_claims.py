"""Template claims end to end: the answer, persistence through Kafka, limits, idempotency, the deny list,
the claim rate limits, the reconciler and the lazy rebuild of a lost pool."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from coupon import codes as coupon_codes
from coupon import models
from coupon import service as coupon_service
from coupon import store as coupon_store
from gateway.app import create_app
from picool import events, metrics
from picool.errors import DomainError
from picool.kernel import Kernel
from picool.settings import Settings
from picool.testing import running, wait_for
from tests.coupon.conftest import Issue, MakeTemplate, window
from tests.coupon.runners import make_runners, roomy_client


def claim_path(template_id: str) -> str:
    return f"/api/v1/coupon/templates/{template_id}/claims"


async def pg_count(kernel: Kernel, template_id: str | int) -> int:
    async with kernel.sessionmaker() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(models.UserCoupon)
                    .where(models.UserCoupon.template_id == int(template_id))
                )
            ).scalar_one()
        )


async def assigned(kernel: Kernel, template_id: str | int) -> int:
    async with kernel.sessionmaker() as session:
        return int(
            (
                await session.execute(
                    select(models.CouponTemplate.assigned).where(models.CouponTemplate.id == int(template_id))
                )
            ).scalar_one()
        )


async def persisted(
    kernel: Kernel, template_id: str | int, n: int, timeout_s: float = 15.0, *, settled: bool = True
) -> None:
    """Wait until PostgreSQL holds ``n`` coupons of the template, its counter says so, and (``settled``)
    the pool has nothing pending (the consumer clears pending entries just after it wrote them)."""
    store = coupon_service.claim_store(kernel)

    async def done() -> bool:
        return (
            await pg_count(kernel, template_id) == n
            and await assigned(kernel, template_id) == n
            and (not settled or await store.pending_count(int(template_id)) == 0)
        )

    await wait_for(done, timeout_s)


async def _pending_is(store: coupon_store.ClaimStore, template_id: int, n: int) -> bool:
    return await store.pending_count(template_id) == n


def claims_metric(kind: str, outcome: str) -> float:
    return metrics.CLAIMS.labels(kind, outcome)._value.get()


async def test_claim_answers_the_coupon_the_wallet_then_shows(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=5, per_user_limit=1)
    ok_before = claims_metric("claim", "ok")
    resp = await client.post(claim_path(template["id"]), headers=runner.headers)
    assert resp.status_code == 201, resp.text
    coupon = resp.json()
    assert set(coupon) == {
        "id", "code", "template_id", "merchant_id", "user_id", "status", "source",
        "received_at", "valid_from", "valid_to", "used_at",
    }  # fmt: skip
    assert coupon["template_id"] == template["id"]
    assert coupon["merchant_id"] == merchant.merchant_id
    assert coupon["user_id"] == runner.user_id
    assert coupon["status"] == "unused"
    assert coupon["source"] == {"kind": "claim", "ref": template["id"]}
    assert coupon["used_at"] is None
    received = datetime.fromisoformat(coupon["received_at"])
    assert abs(received - datetime.now(UTC)) < timedelta(seconds=30)
    assert datetime.fromisoformat(coupon["valid_from"]) == received
    assert datetime.fromisoformat(coupon["valid_to"]) == received + timedelta(days=30)
    assert claims_metric("claim", "ok") == ok_before + 1

    await persisted(kernel, template["id"], 1)
    wallet = await client.get("/api/v1/coupon/me/coupons", headers=runner.headers)
    assert wallet.json()["items"] == [coupon]  # the stored coupon is exactly the one answered
    assert await coupon_service.claim_store(kernel).pending_count(int(template["id"])) == 0
    stats = await client.get(f"/api/v1/coupon/templates/{template['id']}/stats", headers=merchant.headers)
    assert stats.json()["assigned"] == 1 and stats.json()["remaining"] == 4


async def test_limit_then_sold_out_and_counters_exact(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant = await accounts.merchant()
    a, b, c = await accounts.runner(), await accounts.runner(), await accounts.runner()
    template = await make_template(merchant, total_count=3, per_user_limit=2)
    path = claim_path(template["id"])
    assert (await client.post(path, headers=a.headers)).status_code == 201
    assert (await client.post(path, headers=a.headers)).status_code == 201
    third = await client.post(path, headers=a.headers)
    assert third.status_code == 409 and third.json()["code"] == "limit_reached"
    assert third.headers["content-type"].startswith("application/problem+json")
    assert (await client.post(path, headers=b.headers)).status_code == 201
    gone = await client.post(path, headers=c.headers)
    assert gone.status_code == 409 and gone.json()["code"] == "sold_out"
    await persisted(kernel, template["id"], 3)
    store = coupon_service.claim_store(kernel)
    assert await store.pool_stock(int(template["id"])) == 0
    assert await store.claim_count(int(template["id"])) == 3


async def test_not_claimable(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    reward = await make_template(merchant, distribution="task_reward")
    resp = await client.post(claim_path(reward["id"]), headers=runner.headers)
    assert resp.status_code == 409 and resp.json()["code"] == "not_claimable"

    # A fixed validity: claimable before it starts (the coupon waits in the wallet), not once it ended.
    fixed = await make_template(merchant, validity=window(timedelta(days=1), timedelta(days=2)))
    early = await client.post(claim_path(fixed["id"]), headers=runner.headers)
    assert early.status_code == 201, early.text
    assert early.json()["valid_from"] == fixed["validity"]["starts_at"]
    actor = coupon_service.Actor(user_id=int(runner.user_id), role="runner")
    with pytest.raises(DomainError) as err:
        await coupon_service.claim_template(
            kernel, actor, int(fixed["id"]), idempotency_key=None,
            now=datetime.now(UTC) + timedelta(days=3),
        )  # fmt: skip
    assert err.value.instance_code == "not_claimable"
    await persisted(kernel, fixed["id"], 1)


async def test_who_may_claim(client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate) -> None:
    merchant, operator = await accounts.merchant(), await accounts.operator()
    template = await make_template(merchant)
    assert (await client.post(claim_path(template["id"]))).status_code == 401
    bad = await client.post(claim_path(template["id"]), headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    for who in (merchant, operator):
        assert (await client.post(claim_path(template["id"]), headers=who.headers)).status_code == 403
    runner = await accounts.runner()
    for odd in ("0", "abc", "99999999999999999999999", "1" * 400, "-5"):
        resp = await client.post(claim_path(odd), headers=runner.headers)
        assert resp.status_code == 404, (odd, resp.text)
        assert resp.json()["code"] == "not_found"


async def test_idempotency_key_returns_the_first_claim(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=10, per_user_limit=3)
    path = claim_path(template["id"])
    first = await client.post(path, headers={**runner.headers, "Idempotency-Key": "tap-1"})
    again = await client.post(path, headers={**runner.headers, "Idempotency-Key": "tap-1"})
    other = await client.post(path, headers={**runner.headers, "Idempotency-Key": "tap-2"})
    assert first.status_code == again.status_code == other.status_code == 201
    assert again.json() == first.json()
    assert other.json()["id"] != first.json()["id"]
    for bad in ("has space", "x" * 129, "é".encode()):
        resp = await client.post(path, headers={**runner.headers, "Idempotency-Key": bad})
        assert resp.status_code == 400, (bad, resp.text)
        assert resp.json()["code"] == "invalid_request"
    await persisted(kernel, template["id"], 2)
    assert await coupon_service.claim_store(kernel).pool_stock(int(template["id"])) == 8


async def test_deny_list(client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel) -> None:
    merchant, operator = await accounts.merchant(), await accounts.operator()
    runner, other = await accounts.runner(), await accounts.runner()
    template = await make_template(merchant, total_count=10)
    denied_before = claims_metric("claim", "denied")
    resp = await client.post(
        "/api/v1/coupon/claim-denylist", json={"user_id": runner.user_id, "reason": "bot"}, headers=operator.headers
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["user_id"] == runner.user_id and resp.json()["reason"] == "bot"
    refused = await client.post(claim_path(template["id"]), headers=runner.headers)
    assert refused.status_code == 403 and refused.json()["code"] == "claim_denied"
    assert claims_metric("claim", "denied") == denied_before + 1
    assert (await client.post(claim_path(template["id"]), headers=other.headers)).status_code == 201
    listed = await client.get("/api/v1/coupon/claim-denylist", headers=operator.headers)
    assert [e["user_id"] for e in listed.json()["items"]] == [runner.user_id]

    lifted = await client.delete(f"/api/v1/coupon/claim-denylist/{runner.user_id}", headers=operator.headers)
    assert lifted.status_code == 204
    assert (await client.post(claim_path(template["id"]), headers=runner.headers)).status_code == 201
    assert (await client.delete("/api/v1/coupon/claim-denylist/42", headers=operator.headers)).status_code == 204

    for who in (runner, merchant):
        assert (
            await client.post("/api/v1/coupon/claim-denylist", json={"user_id": "1"}, headers=who.headers)
        ).status_code == 403
        assert (await client.get("/api/v1/coupon/claim-denylist", headers=who.headers)).status_code == 403
    for body in ({}, {"user_id": "abc"}, {"user_id": 5}, {"user_id": "1", "reason": "x" * 201}, {"user_id": "0"}):
        bad = await client.post("/api/v1/coupon/claim-denylist", json=body, headers=operator.headers)
        assert bad.status_code == 400, (body, bad.text)
    assert (await client.delete("/api/v1/coupon/claim-denylist/abc", headers=operator.headers)).status_code == 404
    await persisted(kernel, template["id"], 2)


async def test_deny_list_survives_a_redis_loss(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    operator, runner = await accounts.operator(), await accounts.runner()
    await client.post("/api/v1/coupon/claim-denylist", json={"user_id": runner.user_id}, headers=operator.headers)
    store = coupon_service.claim_store(kernel)
    await kernel.redis.delete(coupon_store.DENY_KEY)
    assert await store.denied_users() == frozenset()
    assert await coupon_service.sync_denylist(kernel) == 1  # what every process does at start-up
    assert await store.denied_users() == {int(runner.user_id)}


async def test_other_processes_see_a_bar_within_a_second(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=10, per_user_limit=5)
    assert (await client.post(claim_path(template["id"]), headers=runner.headers)).status_code == 201  # loaded
    # Another process bars the runner: it writes PostgreSQL and the shared copy, not this process's copy.
    await coupon_service.claim_store(kernel).deny([int(runner.user_id)])
    await asyncio.sleep(coupon_service._denylist.REFRESH_S + 0.05)
    await client.post(claim_path(template["id"]), headers=runner.headers)  # may pass; starts the re-read
    await asyncio.sleep(0.1)
    refused = await client.post(claim_path(template["id"]), headers=runner.headers)
    assert refused.status_code == 403 and refused.json()["code"] == "claim_denied"
    await coupon_service.claim_store(kernel).allow(int(runner.user_id))
    count = await coupon_service.claim_store(kernel).claim_count(int(template["id"]))
    await persisted(kernel, template["id"], count)


async def test_ip_rate_limit_of_the_default_settings(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    limit = coupon_service.claim_guards(kernel).per_ip
    assert limit is not None and (limit.limit, limit.window_s) == (10, 300)  # "10 claims per IP in 5 minutes"
    merchant = await accounts.merchant()
    runners = [await accounts.runner() for _ in range(3)]
    template = await make_template(merchant, total_count=100, per_user_limit=10)
    limited_before = claims_metric("claim", "rate_limited")
    codes = [
        (await client.post(claim_path(template["id"]), headers=runners[i % 3].headers)).status_code for i in range(10)
    ]
    assert codes == [201] * 10
    refused = await client.post(claim_path(template["id"]), headers=runners[0].headers)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 300
    assert claims_metric("claim", "rate_limited") == limited_before + 1
    await persisted(kernel, template["id"], 10)  # the refused attempt took nothing


@pytest.fixture
async def guarded(stack_settings: Settings, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """An app behind a trusted proxy with tight claim limits: 3 per client IP, 4 per runner, a minute."""
    app = create_app(
        stack_settings.with_(
            claim_rate_ip="3/60", claim_rate_user="4/60", trusted_proxies="127.0.0.1", workers_enabled=False,
            node_id=201,
        )
    )  # fmt: skip
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as c:
            yield c


async def test_rate_limits_per_ip_and_per_runner(
    guarded: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant = await accounts.merchant()
    a, b = await accounts.runner(), await accounts.runner()
    template = await make_template(merchant, total_count=100, per_user_limit=50)
    path = claim_path(template["id"])

    async def claim(who: Any, ip: str) -> httpx.Response:
        return await guarded.post(path, headers={**who.headers, "X-Forwarded-For": ip})

    assert [(await claim(a, "203.0.113.1")).status_code for _ in range(3)] == [201] * 3
    by_ip = await claim(a, "203.0.113.1")
    assert by_ip.status_code == 429 and "address" in by_ip.json()["detail"]
    assert (await claim(b, "203.0.113.1")).status_code == 429  # the address is spent, whoever asks
    # a's refused attempt counted against a as well: its 5th attempt, from elsewhere, is one too many
    by_user = await claim(a, "203.0.113.2")
    assert by_user.status_code == 429 and "account" in by_user.json()["detail"]
    assert 1 <= int(by_user.headers["retry-after"]) <= 60
    assert (await claim(b, "203.0.113.3")).status_code == 201
    await persisted(kernel, template["id"], 4)  # this app's claims reach the session app's consumer


async def test_reconciler_sends_what_kafka_never_got(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=10, per_user_limit=5)
    tid, uid = int(template["id"]), int(runner.user_id)
    store = coupon_service.claim_store(kernel)
    # Accepted by Redis, then the process "died" before its Kafka send: only the ledger knows.
    old_ms = int((datetime.now(UTC) - timedelta(seconds=30)).timestamp() * 1000)
    coupon_id, code = coupon_service.new_identifiers(kernel.ids, uid)
    record = coupon_store.ClaimRecord(coupon_id, uid, code, old_ms, "claim", str(tid))
    assert (await store.claim(tid, None, record)).outcome is coupon_store.ClaimOutcome.OK
    young_id, young_code = coupon_service.new_identifiers(kernel.ids, uid)
    young = coupon_store.ClaimRecord(young_id, uid, young_code, old_ms + 29_000, "claim", str(tid))
    assert (await store.claim(tid, None, young)).outcome is coupon_store.ClaimOutcome.OK

    # The app's own reconciler would re-send the young one too once its grace ran out (on a slow
    # machine, before this test looks): hold its lease so only the calls below reconcile.
    lease = "picool:lease:coupon.claims-reconcile"
    for _ in range(200):
        if await kernel.redis.set(lease, b"test", nx=True, px=60_000):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the reconciler's lease stayed taken")
    try:
        report = await coupon_service.reconcile(kernel)
        assert report.resent == 1  # the young one is still within its grace period
        await persisted(kernel, tid, 1, settled=False)
        await wait_for(lambda: _pending_is(store, tid, 1))  # the re-sent one is cleared, the young one stays
        report = await coupon_service.reconcile(kernel, grace_ms=0)
        assert report.resent == 1
        await persisted(kernel, tid, 2)
        assert await store.pending_count(tid) == 0
    finally:
        await kernel.redis.delete(lease)

    # Stored, but the process died before it cleared the pending entry: the reconciler just clears it.
    await kernel.redis.zadd(coupon_store.PoolKeys(tid).pending, {str(coupon_id): old_ms})
    report = await coupon_service.reconcile(kernel)
    assert report.already_stored == 1 and report.resent == 0
    assert await store.pending_count(tid) == 0
    wallet = (await client.get("/api/v1/coupon/me/coupons", headers=runner.headers)).json()["items"]
    assert {c["code"] for c in wallet} == {code, young_code}
    received = {c["id"]: c["received_at"] for c in wallet}
    assert (
        datetime.fromisoformat(received[str(coupon_id)])
        == coupon_service.claimed_coupon(await coupon_service.require_template(kernel, tid), record).received_at
    )


async def test_consumer_is_idempotent_on_the_coupon_id(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=10, per_user_limit=5)
    resp = await client.post(claim_path(template["id"]), headers=runner.headers)
    await persisted(kernel, template["id"], 1)
    record = coupon_store.ClaimRecord(
        int(resp.json()["id"]), int(runner.user_id), resp.json()["code"],
        int(datetime.fromisoformat(resp.json()["received_at"]).timestamp() * 1000), "claim", template["id"],
    )  # fmt: skip
    for _ in range(3):  # redelivered, re-sent, replayed
        assert await coupon_service.publish_claim(kernel, int(template["id"]), record)
    claims = [coupon_service.PremadeCoupon(
        coupon_id=record.coupon_id, user_id=record.user_id, code=record.code, template_id=int(template["id"]),
        source_kind="claim", source_ref=template["id"], received_at=datetime.now(UTC),
    )] * 2  # fmt: skip
    assert await coupon_service.persist_claims(kernel, claims) == 0
    await asyncio.sleep(1.0)  # let the consumer take the copies
    await kernel.quiesce()
    assert await pg_count(kernel, template["id"]) == 1
    assert await assigned(kernel, template["id"]) == 1
    async with kernel.sessionmaker() as db:
        trail = (
            await db.execute(select(models.CouponAudit).where(models.CouponAudit.coupon_id == record.coupon_id))
        ).scalars()
        rows = [(a.actor, a.from_status, a.to_status, a.reason) for a in trail]
    assert rows == [("system:claims", None, "unused", f"issued (claim {template['id']})")]


async def test_stored_ids_probes_each_pair_in_its_own_partition(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    """The reconciler's question (which of these claims does PostgreSQL have?) is answered pair by pair:
    a stored id under another user is not stored, nor is an id nobody wrote or one naming no partition."""
    merchant = await accounts.merchant()
    runners = [await accounts.runner() for _ in range(4)]  # several shards: one probe per partition touched
    template = await make_template(merchant, total_count=10, per_user_limit=5)
    got = [(await client.post(claim_path(template["id"]), headers=r.headers)).json() for r in runners]
    await persisted(kernel, template["id"], len(runners))
    pairs = [(int(r.user_id), int(c["id"])) for r, c in zip(runners, got, strict=True)]
    (a, a_coupon), (b, _b_coupon) = pairs[0], pairs[1]
    never, _ = coupon_service.new_identifiers(kernel.ids, a)
    no_partition = (a_coupon & ~63) | 63  # shard 63: past the 16 partitions
    asked = [*pairs, (b, a_coupon), (a, never), (a, no_partition)]
    assert await coupon_service.stored_ids(kernel, asked) == {c for _u, c in pairs}
    assert await coupon_service.stored_ids(kernel, [(b, a_coupon), (a, never), (a, no_partition)]) == set()
    assert await coupon_service.stored_ids(kernel, [pairs[0]]) == {a_coupon}
    assert await coupon_service.stored_ids(kernel, []) == set()


async def test_a_claim_that_can_never_be_stored_does_not_hold_up_its_batch(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    """Each claim of a consumer batch is checked once: one whose code names another shard, or is no code,
    is logged and skipped (left pending where it stays visible), and the rest of the batch is written."""
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=10, per_user_limit=5)
    uid, tid = int(runner.user_id), int(template["id"])

    def premade(code: str | None = None) -> coupon_service.PremadeCoupon:
        coupon_id, fresh = coupon_service.new_identifiers(kernel.ids, uid)
        return coupon_service.PremadeCoupon(
            coupon_id=coupon_id, user_id=uid, code=fresh if code is None else code, template_id=tid,
            source_kind="claim", source_ref=template["id"], received_at=datetime.now(UTC),
        )  # fmt: skip

    other_shard = coupon_codes.new_code((models.shard_of_user(uid) + 1) % models.SHARDS)
    good, wrong_shard, not_a_code = premade(), premade(other_shard), premade("NOT-A-CODE")
    with pytest.raises(ValueError, match="shard"):
        coupon_service.check_premade(wrong_shard)
    with pytest.raises(ValueError, match="malformed code"):
        coupon_service.check_premade(not_a_code)
    assert await coupon_service.persist_claims(kernel, [wrong_shard, good, not_a_code]) == 1
    assert await pg_count(kernel, tid) == 1 and await assigned(kernel, tid) == 1
    assert await coupon_service.stored_ids(kernel, [(uid, c.coupon_id) for c in (good, wrong_shard, not_a_code)]) == {
        good.coupon_id
    }


async def test_a_colliding_code_gets_a_fresh_one_rather_than_losing_the_coupon(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, total_count=10, per_user_limit=5)
    first = (await client.post(claim_path(template["id"]), headers=runner.headers)).json()
    await persisted(kernel, template["id"], 1)
    twin_id, _ = coupon_service.new_identifiers(kernel.ids, int(runner.user_id))
    twin = coupon_service.PremadeCoupon(
        coupon_id=twin_id, user_id=int(runner.user_id), code=first["code"], template_id=int(template["id"]),
        source_kind="claim", source_ref=template["id"], received_at=datetime.now(UTC),
    )  # fmt: skip
    assert await coupon_service.persist_claims(kernel, [twin]) == 1
    async with kernel.sessionmaker() as db:
        codes = dict(
            (
                await db.execute(
                    select(models.UserCoupon.id, models.UserCoupon.code).where(
                        models.UserCoupon.template_id == int(template["id"])
                    )
                )
            ).all()
        )
    assert set(codes) == {int(first["id"]), twin_id}
    assert codes[twin_id] != first["code"] and codes[int(first["id"])] == first["code"]
    assert await assigned(kernel, template["id"]) == 2


async def test_lost_pool_is_rebuilt_from_postgres(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel, issue: Issue
) -> None:
    merchant = await accounts.merchant()
    a, b, c = await accounts.runner(), await accounts.runner(), await accounts.runner()
    template = await make_template(merchant, total_count=3, per_user_limit=1)
    await issue(template["id"], a.user_id)  # coupons Redis never saw (issued straight into PostgreSQL)
    tid = int(template["id"])
    await kernel.redis.delete(*coupon_store.PoolKeys(tid).all_static())
    path = claim_path(template["id"])
    again = await client.post(path, headers=a.headers)
    assert again.status_code == 409 and again.json()["code"] == "limit_reached"
    assert (await client.post(path, headers=b.headers)).status_code == 201
    assert (await client.post(path, headers=c.headers)).status_code == 201
    late = await accounts.runner()
    assert (await client.post(path, headers=late.headers)).json()["code"] == "sold_out"
    await persisted(kernel, tid, 3)


async def test_claims_topic_is_keyed_by_user(kernel: Kernel, client: httpx.AsyncClient) -> None:
    record = coupon_store.ClaimRecord(1 << 20, 7, "code", 1_700_000_000_123, "flash", "99")
    key, value = coupon_service.claim_event(5, record)
    env = events.decode_envelope(value)
    ev = events.decode_payload(env)
    assert key == "7" and env.key == "7" and env.id == f"claim-{1 << 20}"
    assert ev.claimed_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert (ev.template_id, ev.source_kind, ev.source_ref) == ("5", "flash", "99")


async def test_template_claim_race(
    client: httpx.AsyncClient,
    accounts: Any,
    make_template: MakeTemplate,
    kernel: Kernel,
    stack_settings: Settings,
) -> None:
    merchant = await accounts.merchant()
    template = await make_template(merchant, total_count=150, per_user_limit=3)
    runners = await make_runners(kernel, 80)
    order = [runners[i % 80] for i in range(600)]
    random.Random(7).shuffle(order)
    async with roomy_client(stack_settings, node_id=203) as roomy:
        responses = await asyncio.gather(*(roomy.post(claim_path(template["id"]), headers=r.headers) for r in order))
        # Claims take no body: whatever arrives with one is ignored, never a 500.
        for raw, ctype in ((b"{", "application/json"), (b"\xff\xfe", "text/plain"), (b"x" * 5000, "a/b"), (b"", "")):
            odd = await roomy.post(claim_path(template["id"]), content=raw,
                                   headers={**runners[0].headers, "Content-Type": ctype})  # fmt: skip
            assert odd.status_code == 409 and odd.json()["code"] in {"sold_out", "limit_reached"}, odd.text
    codes = Counter(r.status_code for r in responses)
    assert codes == Counter({201: 150, 409: 450}), codes
    assert max(Counter(r.json()["user_id"] for r in responses if r.status_code == 201).values()) <= 3
    await persisted(kernel, template["id"], 150, timeout_s=30)
