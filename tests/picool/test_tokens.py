"""The denylist's local copy: loaded after subscribing, kept current by every process's notices, expired with
its Redis keys, and given up for Redis when the subscription is lost.

Each denylist here has its own Redis client, as another process would (the verifier tests are in tests/auth).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from picool.redis import create_redis
from picool.settings import Settings
from picool.testing import wait_for
from picool.tokens import Denylist

Make = Callable[..., Awaitable[Denylist]]


@pytest.fixture
async def make(stack_settings: Settings) -> AsyncIterator[Make]:
    """Denylists as separate processes would have them (own client each); ``start=True`` keeps a copy."""
    made: list[Denylist] = []

    async def make_one(*, start: bool = True, cls: type[Denylist] = Denylist, **redis_kw: Any) -> Denylist:
        d = cls(create_redis(stack_settings, **redis_kw))
        made.append(d)
        if start:
            await d.start()
            assert d.mirrored
        return d

    try:
        yield make_one
    finally:
        for d in made:
            await d.stop()
            await d.redis.aclose()


def _ids() -> tuple[str, str, str]:
    u = uuid.uuid4().hex
    return f"jti-{u}", f"fam-{u}", f"sub-{u}"


async def _becomes(d: Denylist, expected: bool, jti: str, fam: str | None, sub: str) -> None:
    async def reached() -> bool:
        return await d.is_denied(jti, fam, sub) is expected

    await wait_for(reached, timeout_s=3, interval_s=0.01)


async def test_a_started_denylist_answers_from_its_copy(make: Make) -> None:
    mirror, plain = await make(), await make(start=False)
    jti, fam, sub = _ids()
    # A key written behind the denylist's back (no notice): Redis has it, the copy does not.
    await plain.redis.set(f"{Denylist.PREFIX}jti:{jti}", b"1", ex=60)
    assert await plain.is_denied(jti, fam, sub)
    assert not await mirror.is_denied(jti, fam, sub)
    assert not plain.mirrored


async def test_revocations_from_another_process_reach_the_copy(make: Make) -> None:
    mirror, other = await make(), await make(start=False)
    for kind in ("jti", "fam", "sub"):
        jti, fam, sub = _ids()
        value = {"jti": jti, "fam": fam, "sub": sub}[kind]
        await other.deny(kind, value, 60)
        assert await other.redis.exists(f"{Denylist.PREFIX}{kind}:{value}")
        await _becomes(mirror, True, jti, fam, sub)
        assert mirror.mirrored
    # A bare notice in the form every process sends, through a raw client.
    jti, fam, sub = _ids()
    await other.redis.set(f"{Denylist.PREFIX}sub:{sub}", b"1", px=60_000)
    await other.redis.publish(Denylist.CHANNEL, f"deny 60000 sub:{sub}")
    await _becomes(mirror, True, jti, None, sub)


async def test_an_unfreeze_in_another_process_reaches_the_copy(make: Make) -> None:
    mirror, other = await make(), await make()
    jti, fam, sub = _ids()
    await other.deny("sub", sub, 60)
    assert await other.is_denied(jti, fam, sub)  # its own, at once
    await _becomes(mirror, True, jti, fam, sub)
    await other.allow("sub", sub)
    assert not await other.redis.exists(f"{Denylist.PREFIX}sub:{sub}")
    assert not await other.is_denied(jti, fam, sub)
    await _becomes(mirror, False, jti, fam, sub)


async def test_denials_made_before_start_are_loaded_and_expire_with_their_keys(make: Make) -> None:
    other = await make(start=False)
    jti, fam, sub = _ids()
    await other.deny("fam", fam, 1)
    mirror = await make()
    assert await mirror.is_denied(jti, fam, sub)
    await asyncio.sleep(1.1)
    assert not await mirror.is_denied(jti, fam, sub)
    assert mirror.mirrored


class _ChangedWhileLoading(Denylist):
    """A denylist whose load is followed, before any notice is read, by another process's changes: the
    moment a real load can be overtaken (its SCAN saw a key that is lifted right after, or missed one
    that is added right after)."""

    other: Denylist
    lift: str
    add: str

    async def _load(self) -> None:
        await super()._load()
        await self.other.allow("sub", self.lift)
        await self.other.deny("jti", self.add, 60)


async def test_changes_during_the_load_are_applied_over_it(make: Make) -> None:
    other = await make(start=False)
    jti, _, sub = _ids()
    await other.deny("sub", sub, 60)
    _ChangedWhileLoading.other, _ChangedWhileLoading.lift, _ChangedWhileLoading.add = other, sub, jti
    mirror = await make(cls=_ChangedWhileLoading)
    # start() returns once the notices that came during the load are applied: no wait needed.
    assert not await mirror.is_denied("-", None, sub)  # the allow is not undone by the older snapshot
    assert await mirror.is_denied(jti, None, "-")  # the deny its snapshot missed


async def test_a_copy_started_amid_revocations_agrees_with_redis(make: Make) -> None:
    # Many processes denying and lifting while this one starts: once they are done, every answer of
    # the copy is exactly Redis's.
    writers = [await make(start=False) for _ in range(4)]
    plain = await make(start=False)
    subs = [f"sub-{uuid.uuid4().hex}" for _ in range(60)]
    rng = random.Random(7)

    async def churn(d: Denylist) -> None:
        for _ in range(60):
            s = rng.choice(subs)
            if rng.random() < 0.6:
                await d.deny("sub", s, 60)
            else:
                await d.allow("sub", s)

    results = await asyncio.gather(*(churn(w) for w in writers), make(), *(churn(w) for w in writers))
    mirror = results[len(writers)]
    assert isinstance(mirror, Denylist)

    async def agrees() -> bool:
        for s in subs:
            if await mirror.is_denied("-", None, s) != await plain.is_denied("-", None, s):
                return False
        return True

    await wait_for(agrees, timeout_s=3)
    assert mirror.mirrored


async def _kill_pubsub(redis: Redis, client_name: str) -> None:
    listing = await redis.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    for line in listing.splitlines():
        if f" name={client_name} ".encode() in line:
            await redis.execute_command("CLIENT", "KILL", "ID", line.split()[0].split(b"=", 1)[1])


async def test_a_copy_that_lost_its_subscription_asks_redis_until_it_is_back(make: Make) -> None:
    name = f"deny-{uuid.uuid4().hex[:8]}"
    # No redis-py retries: the loss shows as an error and the subscriber waits before subscribing again.
    mirror = await make(client_name=name, retry=Retry(NoBackoff(), 0))
    assert mirror._subscriber is not None
    mirror._subscriber.backoff_s = 2.0  # a window wide enough to look at it on a busy machine
    other = await make(start=False)
    jti, fam, sub = _ids()
    await _kill_pubsub(other.redis, name)

    async def lost() -> bool:
        return not mirror.mirrored

    await wait_for(lost, timeout_s=3, interval_s=0.01)
    # Written behind its back (no notice): only a Redis lookup sees it.
    await other.redis.set(f"{Denylist.PREFIX}jti:{jti}", b"1", ex=60)
    assert await mirror.is_denied(jti, fam, sub)
    assert not mirror.mirrored

    async def back() -> bool:
        return mirror.mirrored

    await wait_for(back, timeout_s=10)
    assert await mirror.is_denied(jti, fam, sub)  # reloaded with the key it had not been told about
