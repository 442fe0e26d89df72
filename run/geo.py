"""The nearby index: listed tasks' destinations in one Redis GEO set.

A task is *listed* while it is active, its window has opened and not closed, and it has quota left
(``listed``). Every change to a task hands an :class:`IndexEntry` (taken from the committed row) to
:meth:`TaskIndex.apply`; a Lua script applies it only if it is not older than what the index already
holds (per-task versions), so updates that race each other still leave the newest state in place.

Both keys share the hash tag ``{run:geo}`` so the script's keys sit in one Redis Cluster slot.

Redis measures distances on a slightly larger sphere than ``run.domain`` and stores positions to
within a fraction of a metre, so :meth:`TaskIndex.search` widens the radius a little and reports up
to which true distance its answer is complete; callers filter with ``run.domain.haversine_m``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from picool.redis import DirectScript, direct
from run import domain
from run.schemas import MAX_TASK_LAT

GEO_KEY = "run:{run:geo}:tasks"
VERSIONS_KEY = "run:{run:geo}:versions"
_REBUILD_KEY = "run:{run:geo}:tasks:rebuild"
_REBUILD_VERSIONS_KEY = "run:{run:geo}:versions:rebuild"

# Redis' Earth radius (geohash_helper.c) over ours: Redis distances are this much longer.
REDIS_EARTH_RADIUS_M = 6_372_797.560856
SCALE = REDIS_EARTH_RADIUS_M / domain.EARTH_RADIUS_M
# A 52-bit geohash cell is < 0.6 m across; a stored position is off by less than this.
POSITION_ERROR_M = 1.0
# Redis rounds WITHDIST to 0.1 mm; this also covers floating-point differences between the formulas.
SLACK_M = 1.0

# KEYS: geo set, versions hash.  ARGV: member, version, listed (1/0), lon, lat.
_APPLY = """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if current > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('GEOADD', KEYS[1], ARGV[4], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS: geo set.  ARGV: lon, lat, radius m (Redis scale), first radius m, count.
# The nearest ``count`` within a small circle are the nearest ``count`` within any larger one, so the
# circle starts small and doubles only while it holds fewer than ``count``: Redis examines every member
# of the geohash cells around the circle, so in a dense city a 3 km search would read thousands of
# members to return tens (measured at 1M tasks: 0.85 ms of Redis time a search before, 0.34 ms after).
_SEARCH = """
local radius = tonumber(ARGV[3])
local r = math.min(radius, tonumber(ARGV[4]))
local count = tonumber(ARGV[5])
while true do
  local rows = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', r, 'm',
                          'ASC', 'COUNT', count, 'WITHDIST')
  if #rows >= count or r >= radius then return rows end
  r = math.min(radius, r * 2)
end
"""
# Where the growing search starts (metres).
FIRST_RADIUS_M = 750.0


def redis_lon(lon: float) -> float:
    """``lon`` as handed to Redis: 180 becomes -180 (the same meridian). Redis files 180 in the last
    geohash cell, where searches from the -180 side do not look, so one spelling is used throughout."""
    return lon - 360.0 if lon >= 180.0 else lon


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the index needs to know about one task at one version."""

    task_id: int
    version: int
    lat: float
    lon: float
    listed: bool


def is_listed(
    *,
    status: str,
    opened: bool,
    reserved: int,
    completed_count: int,
    quota: int,
    ends_at: datetime | None,
    now: datetime,
) -> bool:
    """True when a task in this state belongs in the nearby index at ``now``."""
    return status == "active" and opened and reserved + completed_count < quota and (ends_at is None or ends_at > now)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Candidate task ids of a search, and the true distance below which the list is complete.

    Every listed task closer than ``complete_below_m`` to the search point is among ``task_ids``
    (``inf`` when the search returned everything within the radius). ``task_ids`` may also hold
    tasks a little beyond the radius, which the caller filters out.
    """

    task_ids: list[int]
    complete_below_m: float


class TaskIndex:
    """The Redis side of nearby search."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._apply = redis.register_script(_APPLY)
        self._search = DirectScript(direct(redis), _SEARCH)

    async def apply(self, entries: Iterable[IndexEntry]) -> None:
        """Bring the index in step with ``entries`` (older versions than already applied are ignored)."""
        for e in entries:
            await self._apply(
                keys=[GEO_KEY, VERSIONS_KEY],
                args=[str(e.task_id), e.version, 1 if e.listed else 0, repr(redis_lon(e.lon)), repr(e.lat)],
            )

    async def search(self, lat: float, lon: float, radius_m: float, count: int) -> SearchResult:
        """Up to ``count`` listed tasks nearest to (lat, lon) within about ``radius_m`` metres.

        Any point on Earth may be the centre. Task destinations stay within ``MAX_TASK_LAT``, which Redis
        can index; a centre beyond it is moved to that latitude on the same meridian with the radius
        grown by the distance moved (every task near the real centre is near the moved one), and then
        the whole widened circle is fetched, since order from the moved centre says nothing exact.
        """
        if abs(lat) > MAX_TASK_LAT:
            edge_lat = math.copysign(MAX_TASK_LAT, lat)
            moved = domain.haversine_m(lat, lon, edge_lat, lon)
            if moved > radius_m:
                # No point at or below MAX_TASK_LAT is within radius_m (the meridian is the shortest way).
                return SearchResult([], math.inf)
            rows = await self._geosearch(edge_lat, lon, radius_m + moved, None)
            return SearchResult([int(m) for m, _ in rows], math.inf)
        rows = await self._geosearch(lat, lon, radius_m, count)
        ids = [int(m) for m, _ in rows]
        if len(rows) < count:
            return SearchResult(ids, math.inf)
        # A task left out is at least as far (by Redis) as the last one returned.
        farthest = rows[-1][1]
        return SearchResult(ids, farthest / SCALE - POSITION_ERROR_M - SLACK_M)

    async def _geosearch(self, lat: float, lon: float, radius_m: float, count: int | None) -> list[tuple[bytes, float]]:
        redis_radius = SCALE * (radius_m + POSITION_ERROR_M) + SLACK_M
        rows: Any
        if count is None:
            rows = await self.redis.geosearch(
                GEO_KEY, longitude=redis_lon(lon), latitude=lat, radius=redis_radius, unit="m", withdist=True
            )
        else:
            args = [repr(redis_lon(lon)), repr(lat), repr(redis_radius), FIRST_RADIUS_M, count]
            rows = await self._search([GEO_KEY], args)
        return [(m, float(d)) for m, d in rows]

    async def members(self) -> set[int]:
        """Every task id in the index (for checks and tests; O(index size))."""
        rows: Any = await self.redis.zrange(GEO_KEY, 0, -1)
        return {int(m) for m in rows}

    async def rebuild(self, entries: Sequence[IndexEntry]) -> int:
        """Replace the whole index with the listed ``entries``; returns how many are listed.

        The new set is built under a side key and renamed into place, so searches never see it half
        built. An :meth:`apply` racing the rebuild can be lost; run it again, or let the next change to
        that task put it right.
        """
        listed = [e for e in entries if e.listed]
        await self.redis.delete(_REBUILD_KEY, _REBUILD_VERSIONS_KEY)
        for start in range(0, len(entries), 1000):
            chunk = entries[start : start + 1000]
            geo_chunk = [e for e in chunk if e.listed]
            async with self.redis.pipeline(transaction=False) as pipe:
                if geo_chunk:
                    values: list[Any] = []
                    for e in geo_chunk:
                        values += [redis_lon(e.lon), e.lat, str(e.task_id)]
                    pipe.geoadd(_REBUILD_KEY, values)
                pipe.hset(_REBUILD_VERSIONS_KEY, mapping={str(e.task_id): e.version for e in chunk})
                await pipe.execute()
        async with self.redis.pipeline(transaction=True) as pipe:
            if listed:
                pipe.rename(_REBUILD_KEY, GEO_KEY)
            else:
                pipe.delete(GEO_KEY)
            if entries:
                pipe.rename(_REBUILD_VERSIONS_KEY, VERSIONS_KEY)
            else:
                pipe.delete(VERSIONS_KEY)
            await pipe.execute()
        return len(listed)
