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
