"""The Redis side of claims, straight against Redis: one hash slot per template, the claim script's rules
and their order, pool creation that cannot double the stock, flash reservations, and a property test of
the claim script against a model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot
from redis.exceptions import ResponseError

from coupon import store as coupon_store
from coupon.store import ClaimOutcome, ClaimRecord, PoolKeys, PoolSpec, SessionSpec
from picool.kernel import Kernel
from picool.settings import Settings

NOW = 1_800_000_000_000


def fresh_template() -> int:
    return uuid.uuid4().int >> 80  # a template id nobody uses


def record(user: int, n: int, ms: int = NOW, kind: str = "claim", ref: str = "1") -> ClaimRecord:
    return ClaimRecord(coupon_id=user * 1000 + n, user_id=user, code=f"C{user}-{n}", claimed_ms=ms,
                       source_kind=kind, source_ref=ref)  # fmt: skip


def spec(stock: int, limit: int = 1, start: int = 0, end: int = coupon_store.NEVER_MS) -> PoolSpec:
    return PoolSpec(limit=limit, start_ms=start, end_ms=end, stock=stock, total=stock)


@pytest.fixture
def store(kernel: Kernel, client: Any) -> coupon_store.ClaimStore:
    return coupon_store.ClaimStore(kernel.redis, kernel.scripts)


def test_every_key_of_a_pool_is_in_one_cluster_slot() -> None:
    keys = PoolKeys(987654321)
    names = [*keys.all_static(), keys.rebuild_lock, keys.session(1), keys.session(2**62)]
    assert len({key_slot(k.encode()) for k in names}) == 1
    assert key_slot(PoolKeys(1).meta.encode()) != key_slot(PoolKeys(2).meta.encode())  # pools spread out


async def test_claim_rules_in_order(store: coupon_store.ClaimStore) -> None:
    t = fresh_template()
    assert (await store.claim(t, None, record(1, 1))).outcome is ClaimOutcome.NO_POOL
    assert await store.init_pool(t, spec(stock=2, limit=2, start=NOW, end=NOW + 1000))
    before = await store.claim(t, None, record(1, 1, ms=NOW - 1))
    after = await store.claim(t, None, record(1, 1, ms=NOW + 1000))
    assert before.outcome is after.outcome is ClaimOutcome.NOT_OPEN
    first = await store.claim(t, None, record(1, 1))
    assert first.outcome is ClaimOutcome.OK and first.remaining == 1 and first.record == record(1, 1)
    assert (await store.claim(t, None, record(1, 2, ms=NOW + 999))).outcome is ClaimOutcome.OK
    assert (await store.claim(t, None, record(1, 3))).outcome is ClaimOutcome.LIMIT_REACHED
    assert (await store.claim(t, None, record(2, 1))).outcome is ClaimOutcome.SOLD_OUT
    assert await store.pool_stock(t) == 0
    assert await store.user_count(t, 1) == 2 and await store.user_count(t, 2) == 0
    assert await store.all_records(t) == {r.coupon_id: r for r in (record(1, 1), record(1, 2, ms=NOW + 999))}
    assert await store.due(t, NOW + 998) == [record(1, 1).coupon_id]
    await store.ack({t: [record(1, 1).coupon_id]})
    assert await store.pending_count(t) == 1


async def test_idempotency_key_replays_even_after_the_window(store: coupon_store.ClaimStore) -> None:
    t = fresh_template()
    await store.init_pool(t, spec(stock=5, limit=5, end=NOW + 10))
    first = await store.claim(t, None, record(1, 1), "k")
    replay = await store.claim(t, None, record(1, 2, ms=NOW + 50), "k")
    assert replay.outcome is ClaimOutcome.REPLAY and replay.record == first.record
    other_user = await store.claim(t, None, record(2, 1), "k")  # keys are per runner
    assert other_user.outcome is ClaimOutcome.OK
    assert await store.pool_stock(t) == 3 and await store.claim_count(t) == 2


async def test_two_initialisers_cannot_double_the_stock(store: coupon_store.ClaimStore) -> None:
    t = fresh_template()
    created = await asyncio.gather(*(store.init_pool(t, spec(stock=7)) for _ in range(10)))
    assert created.count(True) == 1
    assert await store.pool_stock(t) == 7
    assert not await store.load_users(t, {5: 1})  # once the pool exists only claims change counts
    assert t in await store.pools()


async def test_flash_reservation_and_release(store: coupon_store.ClaimStore) -> None:
    t = fresh_template()
    assert await store.reserve_session(t, 1, 5, NOW, NOW + 10) == ("no_pool", None)
    await store.init_pool(t, spec(stock=10, limit=3))
    assert await store.reserve_session(t, 1, 11, NOW, NOW + 10) == ("short", 10)
    assert await store.reserve_session(t, 1, 6, NOW, NOW + 10) == ("ok", 4)
    assert await store.reserve_session(t, 1, 1, NOW, NOW + 10) == ("exists", None)
    assert await store.reserve_session(t, 2, 4, NOW, NOW + 10) == ("ok", 0)
    assert await store.release_session(t, 2)
    assert await store.pool_stock(t) == 4
    grab = await store.claim(t, 1, record(1, 1, ms=NOW + 5, kind="flash", ref="1"))
    assert grab.outcome is ClaimOutcome.OK and grab.remaining == 5
    assert not await store.release_session(t, 1)  # someone claimed from it: its stock stays
    assert await store.session_remaining([(t, 1), (t, 2)]) == [5, None]
    assert (await store.claim(t, 1, record(2, 1, ms=NOW + 10))).outcome is ClaimOutcome.NOT_OPEN
    # the per-user limit counts template and flash claims together
    assert (await store.claim(t, None, record(1, 2))).outcome is ClaimOutcome.OK
    assert (await store.claim(t, 1, record(1, 3, ms=NOW + 1))).outcome is ClaimOutcome.OK
    assert (await store.claim(t, None, record(1, 4))).outcome is ClaimOutcome.LIMIT_REACHED


async def test_rebuilt_pool_with_sessions(store: coupon_store.ClaimStore) -> None:
    t = fresh_template()
    assert await store.load_users(t, {7: 2, 8: 1}, chunk=1)
    sessions = [SessionSpec(session_id=3, start_ms=0, end_ms=coupon_store.NEVER_MS, stock=2, initial=5)]
    assert await store.init_pool(t, spec(stock=4, limit=2), sessions)
    assert (await store.claim(t, 3, record(7, 1, kind="flash", ref="3"))).outcome is ClaimOutcome.LIMIT_REACHED
    assert (await store.claim(t, 3, record(8, 1, kind="flash", ref="3"))).outcome is ClaimOutcome.OK
    assert await store.session_remaining([(t, 3)]) == [1]


async def test_claims_of_one_turn_share_a_script_call_and_decide_as_one_by_one(
    store: coupon_store.ClaimStore,
) -> None:
    t = fresh_template()
    await store.init_pool(t, spec(stock=4, limit=1))
    assert await store.reserve_session(t, 9, 1, 0, coupon_store.NEVER_MS) == ("ok", 3)  # a session of 1 unit
    calls, sent = store.script_calls, store.claims_sent
    claims = [
        store.claim(t, None, record(1, 1), "k"),
        store.claim(t, None, record(1, 2), "k"),  # the same key again: the first claim, replayed
        store.claim(t, None, record(2, 1)),
        store.claim(t, None, record(2, 2)),  # the limit (1) already met inside the batch
        store.claim(t, None, record(3, 1)),
        store.claim(t, None, record(4, 1)),  # the stock (3) ran out inside the batch
        store.claim(t, 9, record(5, 1, kind="flash", ref="9")),  # another pool of the template: its own call
    ]
    results = await asyncio.gather(*claims)
    assert [r.outcome for r in results] == [ClaimOutcome.OK, ClaimOutcome.REPLAY, ClaimOutcome.OK,
                                            ClaimOutcome.LIMIT_REACHED, ClaimOutcome.OK, ClaimOutcome.SOLD_OUT,
                                            ClaimOutcome.OK]  # fmt: skip
    assert results[1].record == record(1, 1) and [results[i].remaining for i in (0, 2, 4)] == [2, 1, 0]
    assert (store.script_calls - calls, store.claims_sent - sent) == (2, 7)
    assert await store.pool_stock(t) == 0 and await store.claim_count(t) == 4
    assert await store.session_remaining([(t, 9)]) == [0]


async def test_a_batch_shares_its_error_and_a_cancelled_claim_is_still_decided(
    store: coupon_store.ClaimStore,
) -> None:
    t = fresh_template()
    await store.init_pool(t, spec(stock=5, limit=5))
    waiting = asyncio.ensure_future(store.claim(t, None, record(1, 1)))
    other = asyncio.ensure_future(store.claim(t, None, record(2, 1)))
    await asyncio.sleep(0)  # both queued for the next turn
    waiting.cancel()
    assert (await other).outcome is ClaimOutcome.OK
    assert await store.claim_count(t) == 2  # the cancelled caller's claim was sent with its batch
    # A pool Redis cannot read (its limit is not a number): the script fails, and both claims of the batch
    # get the error.
    bad = fresh_template()
    await store.redis.hset(PoolKeys(bad).meta, mapping={"limit": "x", "start_ms": 0, "end_ms": NOW * 2, "stock": 5})
    both = await asyncio.gather(store.claim(bad, None, record(1, 1)), store.claim(bad, None, record(2, 1)),
                                return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, ResponseError) for r in both), both
    await store.redis.delete(PoolKeys(bad).meta)


# --------------------------------------------------------------------------- property test


@pytest.fixture(scope="module")
def sync_claim(stack_settings: Settings) -> Iterator[Any]:
    """The claim script on a synchronous client (hypothesis drives plain functions)."""
    client = sync_redis.Redis.from_url(stack_settings.redis_url)
    source = resources.files("coupon").joinpath("lua/claim.lua").read_text("utf-8")
    yield client, client.register_script(source)
    client.close()


claim_ops = st.lists(st.tuples(st.integers(1, 6), st.integers(-3, 12), st.sampled_from(["", "a", "b"])), max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stock=st.integers(0, 12), limit=st.integers(1, 4), ops=claim_ops, batch=st.integers(1, 7))
def test_claim_script_matches_its_model(sync_claim: Any, stock: int, limit: int, ops: list[Any], batch: int) -> None:
    """Claims sent ``batch`` to a script call are decided exactly as one by one (the model)."""
    client, script = sync_claim
    t = fresh_template()
    k = PoolKeys(t)
    client.hset(k.meta, mapping={"limit": limit, "start_ms": 0, "end_ms": 10, "stock": stock, "total": stock})
    model_stock, held, idem, accepted = stock, dict[int, int](), dict[str, int](), 0
    replies: list[Any] = []
    for i in range(0, len(ops), batch):
        args: list[Any] = []
        for n, (user, at, key) in enumerate(ops[i : i + batch], start=i):
            args += [at, user, n, f"{user}|c|{at}|claim|{t}", f"{user}:{key}" if key else ""]
        got = script(keys=[k.meta, k.meta, k.users, k.claims, k.pending, k.idem], args=args)
        replies += [got[j : j + 3] for j in range(0, len(got), 3)]
    assert len(replies) == len(ops)
    try:
        for n, (user, at, key) in enumerate(ops):
            field = f"{user}:{key}" if key else ""
            reply = replies[n]
            outcome = reply[0].decode()
            if field and field in idem:
                expected = "replay"
            elif not 0 <= at < 10:
                expected = "not_open"
            elif held.get(user, 0) >= limit:
                expected = "limit_reached"
            elif model_stock <= 0:
                expected = "sold_out"
            else:
                expected = "ok"
                model_stock -= 1
                held[user] = held.get(user, 0) + 1
                accepted += 1
                if field:
                    idem[field] = n
            assert outcome == expected, (n, user, at, key)
            if expected == "replay":
                assert int(reply[1]) == idem[field]
        assert int(client.hget(k.meta, "stock")) == model_stock >= 0
        assert model_stock + accepted == stock
        assert client.hlen(k.claims) == client.zcard(k.pending) == accepted
        assert all(int(v) <= limit for v in client.hvals(k.users))
    finally:
        client.delete(*k.all_static())
