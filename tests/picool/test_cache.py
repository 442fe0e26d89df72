"""The two-level cache: negative caching, one rebuild at a time, invalidation across processes, no stale write-back."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
from redis.asyncio import Redis

from picool.cache import CacheBus, TwoLevelCache
from picool.kernel import Kernel
from picool.testing import wait_for


class Item(msgspec.Struct):
    name: str
    n: int


def _pair(kernel: Kernel, name: str) -> tuple[TwoLevelCache[Item], TwoLevelCache[Item], CacheBus, Redis]:
    """Two caches of one name as two processes would have them: separate clients, buses and local levels."""
    local = kernel.cache(name, Item, local_ttl_s=60)
    other_redis = Redis.from_url(kernel.settings.redis_url)
    other_bus = CacheBus(other_redis)
    remote: TwoLevelCache[Item] = TwoLevelCache(name, other_bus, Item, local_ttl_s=60)
    return local, remote, other_bus, other_redis


async def test_read_through_levels_and_negative_caching(client: httpx.AsyncClient, kernel: Kernel) -> None:
    cache = kernel.cache("t.levels", Item)
    calls = 0

    async def load_none() -> Item | None:
        nonlocal calls
        calls += 1
        return None

    assert await cache.get("missing", load_none) is None
    assert await cache.get("missing", load_none) is None
    cache.clear_local()
    assert await cache.get("missing", load_none) is None  # from Redis: still no load
    assert calls == 1
    assert cache.stats.local_hits >= 1 and cache.stats.redis_hits >= 1

    async def load_item() -> Item:
        return Item("a", 1)

    assert await cache.get("k", load_item) == Item("a", 1)
    ttl_ms = await kernel.redis.pttl(cache._k("k"))
    assert 0.79 * cache.redis_ttl_s * 1000 <= ttl_ms <= 1.2 * cache.redis_ttl_s * 1000  # jittered


async def test_one_rebuild_for_many_concurrent_misses(client: httpx.AsyncClient, kernel: Kernel) -> None:
    local, remote, bus, redis = _pair(kernel, "t.flight")
    await bus.start()
    calls = 0

    async def slow_load() -> Item:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return Item("x", 7)

    try:
        results = await asyncio.gather(
            *[local.get("hot", slow_load) for _ in range(50)], *[remote.get("hot", slow_load) for _ in range(50)]
        )
        assert all(r == Item("x", 7) for r in results)
        assert calls == 1  # one per process at most, and the other process waited for Redis
    finally:
        await bus.stop()
        await redis.aclose()


async def test_invalidation_reaches_other_processes(client: httpx.AsyncClient, kernel: Kernel) -> None:
    local, remote, bus, redis = _pair(kernel, "t.inv")
    await bus.start()
    version = 1

    async def load() -> Item:
        return Item("v", version)

    try:
        assert (await local.get("k", load)).n == 1  # type: ignore[union-attr]
        assert (await remote.get("k", load)).n == 1  # type: ignore[union-attr]
        version = 2
        await local.invalidate("k")
        assert (await local.get("k", load)).n == 2  # type: ignore[union-attr]

        async def remote_sees_new() -> bool:
            item = await remote.get("k", load)
            return item is not None and item.n == 2

        await wait_for(remote_sees_new, timeout_s=5)
    finally:
        await bus.stop()
        await redis.aclose()


async def test_slow_reader_cannot_write_back_a_stale_value(client: httpx.AsyncClient, kernel: Kernel) -> None:
    cache = kernel.cache("t.stale", Item)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_stale_load() -> Item:
        started.set()
        await release.wait()
        return Item("old", 1)

    reader = asyncio.create_task(cache.get("k", slow_stale_load))
    await started.wait()
    await cache.invalidate("k")  # the row changed while the reader was loading
    release.set()
    assert await reader == Item("old", 1)  # the reader gets what it read...
    assert await kernel.redis.get(cache._k("k")) is None  # ...but it was not stored for anyone else

    async def fresh() -> Item:
        return Item("new", 2)

    assert await cache.get("k", fresh) == Item("new", 2)


async def test_get_many_reads_each_level_once(client: httpx.AsyncClient, kernel: Kernel) -> None:
    cache = kernel.cache("t.many", Item)
    asked: list[list[str]] = []

    async def load(keys: list[str]) -> dict[str, Item | None]:
        asked.append(sorted(keys))
        return {k: Item(k, int(k[1:])) for k in keys if k != "k404"}

    assert await cache.get("k1", lambda: load_one("k1")) == Item("k1", 1)  # k1 local
    await cache.get("k2", lambda: load_one("k2"))
    cache.drop_local("k2")  # k2 in Redis only
    got = await cache.get_many(["k3", "k1", "k2", "k404", "k3"], load)
    assert got == [Item("k3", 3), Item("k1", 1), Item("k2", 2), None, Item("k3", 3)]
    assert asked == [["k3", "k404"]]  # one loader call, only for what neither level had
    cache.clear_local()
    assert await cache.get_many(["k404", "k3"], load) == [None, Item("k3", 3)]  # missing cached too
    assert asked == [["k3", "k404"]]


async def load_one(key: str) -> Item:
    return Item(key, int(key[1:]))


async def test_get_many_does_not_write_back_what_changed_meanwhile(client: httpx.AsyncClient, kernel: Kernel) -> None:
    cache = kernel.cache("t.many-stale", Item)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(keys: list[str]) -> dict[str, Item | None]:
        started.set()
        await release.wait()
        return {k: Item("old", 1) for k in keys}

    reader = asyncio.create_task(cache.get_many(["a", "b"], slow))
    await started.wait()
    # get() of a key being loaded by get_many waits for that load rather than starting another
    waiter = asyncio.create_task(cache.get("a", lambda: load_one("a9")))
    await cache.invalidate("b")  # b changed while the batch was loading
    release.set()
    assert await reader == [Item("old", 1), Item("old", 1)]
    assert await waiter == Item("old", 1)
    assert await kernel.redis.get(cache._k("a")) is not None
    assert await kernel.redis.get(cache._k("b")) is None  # not stored for anyone else


async def test_invalidate_many_per_key_and_wholesale(client: httpx.AsyncClient, kernel: Kernel) -> None:
    local, remote, other_bus, other_redis = _pair(kernel, "t.many")
    await other_bus.start()
    try:

        async def load(n: int) -> Item | None:
            return Item(name="v", n=n)

        for key in ("a", "b", "c"):
            await local.get(key, lambda: load(1))
            await remote.get(key, lambda: load(1))
        await kernel.redis.script_flush()  # a restarted Redis: the scripts must come back by themselves
        await local.invalidate_many(["a", "b"])  # few keys: one message per key
        await wait_for(lambda: _dropped(remote, ["a", "b"]), timeout_s=5)
        assert "c" in remote.local
        assert (await remote.get("a", lambda: load(2))) == Item(name="v", n=2)  # Redis level dropped too
        await local.invalidate_many(["a"], clear_above=0)  # many keys: one "drop everything" message
        await wait_for(lambda: _dropped(remote, ["a", "b", "c"]), timeout_s=5)
    finally:
        await other_bus.stop()
        await other_redis.aclose()


async def _dropped(cache: TwoLevelCache[Item], keys: list[str]) -> bool:
    return all(k not in cache.local for k in keys)


async def test_grouped_keys_share_a_slot_and_go_in_one_script_call_per_group(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    cache = kernel.cache("t.grouped", Item, slot_of=lambda key: key.partition(":")[0])
    keys = ["u1:all", "u1:unused", "u2:all"]

    async def load(n: int) -> Item | None:
        return Item(name="v", n=n)

    for key in keys:
        await cache.get(key, lambda: load(1))
    assert cache._k("u1:all") == "picool:c:{t.grouped:u1}:u1:all"  # the group is the Cluster hash tag
    gens_before = [int(await kernel.redis.get(cache._k(k) + ":gen") or 0) for k in keys]
    calls = cache.invalidation_commands(keys)  # u1's two entries in one call, u2's in another
    assert [c[2:] for c in calls] == [
        (4, cache._k("u1:all"), cache._k("u1:all") + ":gen", cache._k("u1:unused"), cache._k("u1:unused") + ":gen"),
        (2, cache._k("u2:all"), cache._k("u2:all") + ":gen"),
    ]
    await cache.invalidate_many(keys)
    for key, before in zip(keys, gens_before, strict=True):
        assert await kernel.redis.get(cache._k(key)) is None
        assert int(await kernel.redis.get(cache._k(key) + ":gen")) == before + 1  # a loader in flight can't store
        assert key not in cache.local
    assert (await cache.get("u1:unused", lambda: load(2))) == Item(name="v", n=2)
