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


async def _aof_size(kernel: Kernel) -> int:
    info = await kernel.redis.info("persistence")
    return int(info["aof_current_size"])


async def test_windows_are_kept_out_of_the_append_only_file(client: httpx.AsyncClient, kernel: Kernel) -> None:
    """The windows are not written to disk (nor to replicas): every request passes here, the ledger
    shares the disk. The control writes the same sorted-set entries directly and must grow the file."""
    redis = kernel.redis
    was = (await redis.config_get("appendonly"))["appendonly"]
    await redis.config_set("appendonly", "yes")
    try:
        for _ in range(200):  # switching it on rewrites the file in the background first
            info = await redis.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            await asyncio.sleep(0.05)
        limiter = RateLimiter(redis, prefix="test:rla:")
        before = await _aof_size(kernel)
        for i in range(100):
            decisions = await limiter.hit_many([(f"{{ip:10.0.0.{i % 4}}}:a", Limit(1000, 60)), ("b", Limit(1000, 60))])
            assert all(d.allowed for d in decisions)
        after_hits = await _aof_size(kernel)
        for i in range(100):
            await redis.zadd("test:rla:control", {f"1700000000000:{i}": 1_700_000_000_000 + i})
        after_control = await _aof_size(kernel)
    finally:
        await redis.config_set("appendonly", was)
    assert after_control - after_hits > 5_000  # the file does grow with writes that are propagated
    # 200 window updates would append well over 20 KB; allow for other processes' few writes meanwhile.
    assert after_hits - before < 2_000
    assert await redis.zcard("test:rla:b") == 100  # counted in memory all the same
