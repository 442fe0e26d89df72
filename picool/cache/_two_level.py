"""The two-level cache itself: the local level, the Redis level, the loader, and their invalidation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

import msgspec
from cachetools import TTLCache
from redis.exceptions import NoScriptError

from picool.cache._bus import _INVALIDATE, CHANNEL, CacheBus
from picool.redis import direct

T = TypeVar("T")
_NEGATIVE = b"\x00"


class _Missing:
    pass


MISSING: Any = _Missing()


class CacheStats:
    """Hit counters per level."""

    def __init__(self) -> None:
        self.local_hits = 0
        self.redis_hits = 0
        self.misses = 0


class TwoLevelCache(Generic[T]):
    """A named cache of values of type ``T`` (msgspec-serialisable).

    ``slot_of`` names the group of a key (say, the user of ``"<user>:<variant>"``): a group's entries share
    one Redis Cluster slot, so :meth:`invalidate_many` clears each group in one script call. Every process
    must build a cache of one name with the same ``slot_of`` (it decides the Redis keys).
    """

    def __init__(
        self,
        name: str,
        bus: CacheBus,
        type_: Any,
        *,
        local_max: int = 10_000,
        local_ttl_s: float = 5.0,
        redis_ttl_s: float = 300.0,
        negative_ttl_s: float = 15.0,
        jitter: float = 0.2,
        slot_of: Callable[[str], str] | None = None,
    ) -> None:
        self.name = name
        self.slot_of = slot_of
        self.bus = bus
        self.redis = bus.redis
        self.local: TTLCache[str, Any] = TTLCache(maxsize=local_max, ttl=local_ttl_s)
        self.redis_ttl_s = redis_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.jitter = jitter
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type_)
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self.stats = CacheStats()
        bus.attach(self)

    def _k(self, key: str) -> str:
        # One hash tag per entry keeps the value and its generation in one Redis Cluster slot; with ``slot_of``
        # the tag is the key's group instead, so a group's entries share one (and are invalidated together).
        if self.slot_of is None:
            return f"picool:c:{{{self.name}:{key}}}"
        return f"picool:c:{{{self.name}:{self.slot_of(key)}}}:{key}"

    def _ttl_ms(self, base: float) -> int:
        return int(base * 1000 * (1 + random.uniform(-self.jitter, self.jitter)))

    def drop_local(self, key: str) -> None:
        """Forget the local copy of ``key``."""
        self.local.pop(key, None)

    def clear_local(self) -> None:
        """Forget every local copy."""
        self.local.clear()

    async def get(self, key: str, loader: Callable[[], Awaitable[T | None]]) -> T | None:
        """The value for ``key``: local, else Redis, else ``loader()`` (whose ``None`` is cached too)."""
        value = self.local.get(key, MISSING)
        if value is not MISSING:
            self.stats.local_hits += 1
            return None if value is None else value
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._fill(key, loader)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)

    async def _fill(self, key: str, loader: Callable[[], Awaitable[T | None]]) -> T | None:
        rkey = self._k(key)
        gkey = rkey + ":gen"
        raw, gen = await direct(self.redis).execute("MGET", rkey, gkey)
        if raw is not None:
            self.stats.redis_hits += 1
            value = None if raw == _NEGATIVE else self._decoder.decode(cast(bytes, raw))
            self.local[key] = value
            return value
        self.stats.misses += 1
        lock_key = rkey + ":lock"
        got_lock = await self.redis.set(lock_key, b"1", nx=True, px=3000)
        if not got_lock:
            # Someone else is rebuilding it: wait briefly for their value, then load ourselves.
            for _ in range(25):
                await asyncio.sleep(0.02)
                raw = await self.redis.get(rkey)
                if raw is not None:
                    value = None if raw == _NEGATIVE else self._decoder.decode(cast(bytes, raw))
                    self.local[key] = value
                    return value
        try:
            value = await loader()
            payload = _NEGATIVE if value is None else self._encoder.encode(value)
            ttl = self._ttl_ms(self.negative_ttl_s if value is None else self.redis_ttl_s)
            stored = await self.bus.set_if_gen(keys=[rkey, gkey], args=[(gen or b"0"), payload, ttl])
            if stored:
                self.local[key] = value
            return value
        finally:
            if got_lock:
                await self.redis.delete(lock_key)

    async def get_many(
        self, keys: Sequence[str], loader: Callable[[list[str]], Awaitable[Mapping[str, T | None]]]
    ) -> list[T | None]:
        """The values for ``keys``, in order: local hits, then one Redis round trip (a pipeline) for the rest,
        then one ``loader(missing_keys)`` call for what Redis lacks; keys the loader leaves out are cached
        as missing. For batch readers (a page of search results): the same levels, negative caching,
        jitter, generation check and one loader per key per process as :meth:`get`, without the per-key
        Redis rebuild lock (a single loader call rebuilds every missing key at once)."""
        out: list[Any] = [MISSING] * len(keys)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            value = self.local.get(key, MISSING)
            if value is not MISSING:
                self.stats.local_hits += 1
                out[i] = value
            else:
                todo.setdefault(key, []).append(i)
        if not todo:
            return out
        loop = asyncio.get_running_loop()
        others: dict[str, asyncio.Future[Any]] = {}
        mine: dict[str, asyncio.Future[Any]] = {}
        for key in todo:
            fut = self._inflight.get(key)
            if fut is not None:
                others[key] = fut
            else:
                mine[key] = self._inflight[key] = loop.create_future()
        found: dict[str, Any] = {}
        try:
            if mine:
                found = await self._fill_many(list(mine), loader)
            for key, fut in mine.items():
                fut.set_result(found[key])
        except BaseException as exc:
            for fut in mine.values():
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            for key in mine:
                self._inflight.pop(key, None)
        for key, fut in others.items():
            found[key] = await asyncio.shield(fut)
        for key, idx in todo.items():
            for i in idx:
                out[i] = found[key]
        return out

    async def _fill_many(
        self, keys: list[str], loader: Callable[[list[str]], Awaitable[Mapping[str, T | None]]]
    ) -> dict[str, Any]:
        rkeys = [self._k(k) for k in keys]
        # One MGET per entry (value and generation share a hash tag), pipelined: fine on Redis Cluster too.
        rows = await direct(self.redis).execute_many([("MGET", rkey, rkey + ":gen") for rkey in rkeys])
        found: dict[str, Any] = {}
        missing: list[tuple[str, str, Any]] = []
        for key, rkey, (raw, gen) in zip(keys, rkeys, rows, strict=True):
            if raw is not None:
                self.stats.redis_hits += 1
                value = None if raw == _NEGATIVE else self._decoder.decode(cast(bytes, raw))
                self.local[key] = value
                found[key] = value
            else:
                self.stats.misses += 1
                missing.append((key, rkey, gen))
        if not missing:
            return found
        loaded = await loader([key for key, _, _ in missing])
        pipe = self.redis.pipeline(transaction=False)
        for key, rkey, gen in missing:
            value = loaded.get(key)
            payload = _NEGATIVE if value is None else self._encoder.encode(value)
            ttl = self._ttl_ms(self.negative_ttl_s if value is None else self.redis_ttl_s)
            await self.bus.set_if_gen(keys=[rkey, rkey + ":gen"], args=[(gen or b"0"), payload, ttl], client=pipe)
        stored = await pipe.execute()
        for (key, _, _), ok in zip(missing, stored, strict=True):
            value = loaded.get(key)
            found[key] = value
            if ok:
                self.local[key] = value
        return found

    async def invalidate(self, key: str) -> None:
        """Drop ``key`` everywhere: this process, Redis and (via pub/sub) every other process."""
        self.local.pop(key, None)
        rkey = self._k(key)
        await self.bus.invalidate_script(keys=[rkey, rkey + ":gen"], args=[])
        await self.bus.publish(self.name, key)

    async def invalidate_many(self, keys: list[str], *, clear_above: int = 16) -> None:
        """:meth:`invalidate` for many keys in one Redis round trip (a pipeline, not a transaction), one
        script call per Cluster slot (per key, or per ``slot_of`` group).

        Past ``clear_above`` keys the other processes are told to drop their whole local copy of this
        cache in one message rather than one message per key (every process reads every message).
        """
        if not keys:
            return
        if self.local:  # a process that never read this cache (the claim consumer) has nothing to drop
            for key in keys:
                self.local.pop(key, None)
        commands = self.invalidation_commands(keys)
        if len(keys) > clear_above:
            commands.append(("PUBLISH", CHANNEL, f"{self.name}\x00*"))
        else:
            commands += [("PUBLISH", CHANNEL, f"{self.name}\x00{key}") for key in keys]
        try:
            await direct(self.redis).execute_many(commands)
        except NoScriptError:
            # Redis restarted and lost the script: load it and go again (a second bump is harmless).
            await self.redis.script_load(_INVALIDATE)
            await direct(self.redis).execute_many(commands)

    def invalidation_commands(self, keys: list[str]) -> list[tuple[Any, ...]]:
        """The script calls that drop ``keys`` from Redis and bump their generations: one per Cluster slot
        (per key, or per group of keys when ``slot_of`` groups them)."""
        slots: dict[str, list[str]] = {}
        for key in keys:
            rkey = self._k(key)
            slots.setdefault(key if self.slot_of is None else self.slot_of(key), []).extend((rkey, rkey + ":gen"))
        sha = self.bus.invalidate_script.sha
        return [("EVALSHA", sha, len(group), *group) for group in slots.values()]

    async def set(self, key: str, value: T) -> None:
        """Write a freshly computed value through both levels."""
        rkey = self._k(key)
        await self.redis.set(rkey, self._encoder.encode(value), px=self._ttl_ms(self.redis_ttl_s))
        self.local[key] = value
