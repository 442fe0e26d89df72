"""RateLimiter.hit_many: several sliding windows in one round trip, exact under concurrency, and still
working after Redis lost its scripts."""

from __future__ import annotations

import asyncio

import httpx

from picool.kernel import Kernel
from picool.ratelimit import Limit, RateLimiter


async def test_hit_many_checks_each_key_exactly(client: httpx.AsyncClient, kernel: Kernel) -> None:
    limiter = RateLimiter(kernel.redis, prefix="test:rlm:")
    tight, loose = Limit(5, 60), Limit(12, 60)
    decisions = await asyncio.gather(*(limiter.hit_many([("a", tight), ("b", loose)]) for _ in range(20)))
    assert sum(d[0].allowed for d in decisions) == 5
    assert sum(d[1].allowed for d in decisions) == 12  # each key counts every request, whatever the other said
    refused = next(d[0] for d in decisions if not d[0].allowed)
    assert refused.remaining == 0 and 1 <= refused.retry_after_s <= 60
    assert await limiter.hit_many([]) == []


async def test_hit_many_after_redis_lost_its_scripts(client: httpx.AsyncClient, kernel: Kernel) -> None:
    limiter = RateLimiter(kernel.redis, prefix="test:rlm:")
    assert [d.allowed for d in await limiter.hit_many([("x", Limit(1, 60))])] == [True]
    await kernel.redis.script_flush()
    again = await limiter.hit_many([("x", Limit(1, 60)), ("y", Limit(1, 60))])
    assert [d.allowed for d in again] == [False, True]  # counted once each, not twice by the retry


async def test_keys_of_one_hash_tag_share_a_script_call_and_stay_exact(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    limiter = RateLimiter(kernel.redis, prefix="test:rlg:")
    checks = [
        ("{ip:10.0.0.1}:default", Limit(6, 60)),
        ("{user:7}:default", Limit(9, 60)),
        ("{ip:10.0.0.1}:claims", Limit(3, 60)),  # same address as the first: one script call for both
        ("{user:7}:claims", Limit(4, 60)),
        ("plain", Limit(2, 60)),
    ]
    commands = limiter.commands(checks, now_ms=1_700_000_000_000)
    assert [tuple(c[2 : 3 + c[2]]) for c in commands] == [
        (2, "test:rlg:{ip:10.0.0.1}:default", "test:rlg:{ip:10.0.0.1}:claims"),
        (2, "test:rlg:{user:7}:default", "test:rlg:{user:7}:claims"),
        (1, "test:rlg:plain"),
    ]
    decisions = await asyncio.gather(*(limiter.hit_many(checks) for _ in range(12)))
    assert [sum(d[i].allowed for d in decisions) for i in range(5)] == [6, 9, 3, 4, 2]  # in order, each exact
    refused = next(d[2] for d in decisions if not d[2].allowed)
    assert (refused.limit, refused.remaining) == (3, 0) and 1 <= refused.retry_after_s <= 60
