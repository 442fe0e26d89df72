"""The cache bus: invalidations carried between processes over one Redis pub/sub channel, and the Lua
scripts every cache of a process shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from picool.subscriber import Subscriber

if TYPE_CHECKING:
    from picool.cache._two_level import TwoLevelCache

CHANNEL = "picool:cache:invalidate"

# KEYS: value key, generation key.  ARGV: expected generation, value, ttl ms.
_SET_IF_GEN = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# KEYS: value key, generation key.  Returns the new generation.
# KEYS: value, generation[, value, generation ...] (one or more entries, all in one Cluster slot).
# Drops each value and bumps its generation (so a loader that read before cannot store after); returns the
# last generation.
_INVALIDATE = """
local g = 0
for i = 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  g = redis.call('INCR', KEYS[i + 1])
  redis.call('PEXPIRE', KEYS[i + 1], 86400000)
end
return g
"""


class CacheBus:
    """Carries invalidations between processes over one Redis pub/sub channel."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._caches: dict[str, TwoLevelCache[Any]] = {}
        # Lost invalidations cannot be replayed: every local copy goes when the subscription drops.
        self._subscriber = Subscriber(
            redis, CHANNEL, self._on_message, on_lost=self._clear_all, on_subscribed=self._cleared_all, name="cache-bus"
        )
        self.set_if_gen = redis.register_script(_SET_IF_GEN)
        self.invalidate_script = redis.register_script(_INVALIDATE)

    def attach(self, cache: TwoLevelCache[Any]) -> None:
        """Deliver invalidations for ``cache.name`` to ``cache``."""
        self._caches[cache.name] = cache

    async def start(self) -> None:
        """Subscribe (returns once the subscription is live)."""
        await self._subscriber.start()

    def _clear_all(self) -> None:
        for c in self._caches.values():
            c.clear_local()

    async def _cleared_all(self) -> None:
        # Subscribed again: invalidations published while we were away are lost, so drop what we keep.
        self._clear_all()

    async def _on_message(self, text: str) -> None:
        name, _, key = text.partition("\x00")
        cache = self._caches.get(name)
        if cache is not None:
            if key == "*":
                cache.clear_local()
            else:
                cache.drop_local(key)

    async def publish(self, name: str, key: str) -> None:
        """Tell every process to drop ``name:key`` from its local cache."""
        await self.redis.publish(CHANNEL, f"{name}\x00{key}")

    async def stop(self) -> None:
        """Unsubscribe."""
        await self._subscriber.stop()
