"""A two-level read-through cache: in-process ``cachetools`` in front of Redis in front of the loader.

- Penetration: a loader answer of ``None`` is cached too (a short negative TTL).
- Avalanche: every TTL gets a random jitter so entries made together do not expire together.
- Breakdown: one request per process rebuilds a missing entry (a per-key future) and, across
  processes, one holds a short Redis lock while the others wait briefly for its value.
- Consistency: :meth:`TwoLevelCache.invalidate` bumps a per-key generation in Redis, deletes the
  value and tells every process (pub/sub) to drop its local copy. A loader only stores its result
  if the generation it started with is still current, so a slow reader can never write back a value
  that a concurrent change already invalidated.
"""

from picool.cache._bus import CHANNEL, CacheBus
from picool.cache._two_level import MISSING, CacheStats, TwoLevelCache

__all__ = ["CHANNEL", "MISSING", "CacheBus", "CacheStats", "TwoLevelCache"]
