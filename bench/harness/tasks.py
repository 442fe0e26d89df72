"""Running tasks at scale: a country-sized field of task destinations, seeded fast (COPY into ``run_tasks``,
pipelined GEOADD into the nearby index), the nearby requests runners send, and a brute-force check of
the answers.

The field is deterministic (seeded RNG): 80 cities with Zipf-like sizes inside a 2,000 km box (roughly
eastern China), 85 % of the tasks scattered around a city centre (normal, sigma 20 km), 15 % anywhere in the
box. Runners search mostly from cities (90 %, sigma 10 km) and sometimes from anywhere.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from harness import load

LAT_RANGE = (22.0, 41.0)
LON_RANGE = (103.0, 122.0)
CITIES = 80
CITY_SHARE = 0.85
TASK_SIGMA_KM = 20.0
QUERY_SIGMA_KM = 10.0
ID_BASE = 10**15  # far below ids the app makes (time-based, ~2.5e17), so nothing collides
MERCHANTS = 5000
EARTH_RADIUS_M = 6_371_008.8  # run.domain.EARTH_RADIUS_M (checked in check_answers)
RADIUS_M = 3000
LIMIT = 20
COLUMNS = [
    "id", "merchant_id", "title", "description", "lat", "lon", "radius_m", "geofence", "min_distance_m",
    "time_limit_s", "reward_template_id", "quota", "reserved", "completed_count", "status", "starts_at",
    "ends_at", "opened", "version", "created_at", "updated_at",
]  # fmt: skip


@dataclass
class TaskField:
    """Where the tasks are (``lat``/``lon`` arrays, task ``i`` has id ``ID_BASE + i``)."""

    lat: np.ndarray
    lon: np.ndarray
    city_lat: np.ndarray
    city_lon: np.ndarray
    city_p: np.ndarray

    @classmethod
    def make(cls, n: int, seed: int = 42) -> TaskField:
        rng = np.random.default_rng(seed)
        city_lat = rng.uniform(*LAT_RANGE, CITIES)
        city_lon = rng.uniform(*LON_RANGE, CITIES)
        w = 1.0 / np.arange(1, CITIES + 1) ** 0.8
        city_p = w / w.sum()
        in_city = rng.random(n) < CITY_SHARE
        which = rng.choice(CITIES, size=n, p=city_p)
        dlat = rng.normal(0, TASK_SIGMA_KM / 111.32, n)
        lat = np.where(in_city, city_lat[which] + dlat, rng.uniform(*LAT_RANGE, n))
        dlon = rng.normal(0, 1, n) * TASK_SIGMA_KM / (111.32 * np.cos(np.radians(city_lat[which])))
        lon = np.where(in_city, city_lon[which] + dlon, rng.uniform(*LON_RANGE, n))
        return cls(np.clip(lat, -84.0, 84.0), lon, city_lat, city_lon, city_p)

    def __len__(self) -> int:
        return len(self.lat)

    def queries(self, n: int, seed: int) -> list[tuple[float, float]]:
        """``n`` search centres: mostly near cities, some anywhere."""
        rng = np.random.default_rng(seed)
        which = rng.choice(CITIES, size=n, p=self.city_p)
        near = rng.random(n) < 0.9
        lat = np.where(
            near, self.city_lat[which] + rng.normal(0, QUERY_SIGMA_KM / 111.32, n), rng.uniform(*LAT_RANGE, n)
        )
        dlon = rng.normal(0, 1, n) * QUERY_SIGMA_KM / (111.32 * np.cos(np.radians(self.city_lat[which])))
        lon = np.where(near, self.city_lon[which] + dlon, rng.uniform(*LON_RANGE, n))
        return [(round(float(a), 6), round(float(b), 6)) for a, b in zip(lat, lon, strict=True)]


def nearby_path(lat: float, lon: float) -> str:
    return f"/api/v1/run/tasks/nearby?lat={lat}&lon={lon}&radius_m={RADIUS_M}&limit={LIMIT}"


def requests(points: list[tuple[float, float]], headers: dict[str, str]) -> list[bytes]:
    """Prebuilt nearby searches, one per point."""
    return [load.get(nearby_path(lat, lon), headers) for lat, lon in points]


def _records(field: TaskField, start: int, end: int, now: datetime) -> Any:
    ends = now + timedelta(days=30)
    for i in range(start, end):
        m = i % MERCHANTS
        yield (
            ID_BASE + i, str(ID_BASE + m), f"Run to shop {m} #{i}",
            "Reach the shop within the time limit and show the app at the till to collect your coupon.",
            float(field.lat[i]), float(field.lon[i]), 80.0, None, 1000.0 + (i % 5) * 500, 3600,
            str(ID_BASE + 10_000 + m), 1000, 0, 0, "active", None, ends, True, 1, now, now,
        )  # fmt: skip


async def seed(database_url: str, redis_url: str, field: TaskField, start: int, end: int) -> dict[str, float]:
    """Tasks ``start..end-1`` of ``field``: COPY into ``run_tasks`` and GEOADD (pipelined, 10k a command) into
    the nearby index with their versions, as the app's index would hold them. Returns the seconds each took."""
    import asyncpg
    from redis.asyncio import Redis

    from run import geo

    t0 = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET synchronous_commit = off")
        now = datetime.now(UTC)
        step = 200_000
        for a in range(start, end, step):
            b = min(end, a + step)
            await conn.copy_records_to_table("run_tasks", records=_records(field, a, b, now), columns=COLUMNS)
        await conn.execute("ANALYZE run_tasks")
    finally:
        await conn.close()
    t1 = time.monotonic()
    redis = Redis.from_url(redis_url)
    try:
        chunk = 10_000
        for a in range(start, end, chunk * 10):
            async with redis.pipeline(transaction=False) as pipe:
                for c in range(a, min(end, a + chunk * 10), chunk):
                    d = min(end, c + chunk)
                    values: list[Any] = []
                    for i in range(c, d):
                        values += [float(field.lon[i]), float(field.lat[i]), str(ID_BASE + i)]
                    pipe.geoadd(geo.GEO_KEY, values)
                    pipe.hset(geo.VERSIONS_KEY, mapping={str(ID_BASE + i): 1 for i in range(c, d)})
                await pipe.execute()
    finally:
        await redis.aclose()
    t2 = time.monotonic()
    return {"copy_s": round(t1 - t0, 1), "geoadd_s": round(t2 - t1, 1)}


def seed_sync(servers: Any, field: TaskField, start: int, end: int) -> dict[str, float]:
    return asyncio.run(seed(servers.plain_database_url, servers.redis_url, field, start, end))


def brute_force(field: TaskField, n: int, lat: float, lon: float) -> list[int]:
    """The ids the API must answer for (lat, lon) over the first ``n`` tasks: within the radius, nearest first,
    ties by id, at most LIMIT (the haversine of run.domain, vectorised)."""
    la, lo = field.lat[:n], field.lon[:n]
    p1, p2 = math.radians(lat), np.radians(la)
    dphi = p2 - p1
    dl = np.radians(lo - lon)
    a = np.sin(dphi / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, a)))
    idx = np.nonzero(d <= RADIUS_M)[0]
    order = sorted(idx.tolist(), key=lambda i: (float(d[i]), i))
    return [ID_BASE + i for i in order[:LIMIT]]


def check_answers(
    base_url: str, headers: dict[str, str], field: TaskField, n: int, points: list[tuple[float, float]]
) -> tuple[int, int, float]:
    """Ask the API for ``points`` and compare with :func:`brute_force`: (matching answers, asked, mean items)."""
    import httpx

    from run import domain

    assert abs(domain.EARTH_RADIUS_M - EARTH_RADIUS_M) < 1e-6, "keep EARTH_RADIUS_M in step with run.domain"
    ok = 0
    items = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for lat, lon in points:
            resp = client.get(nearby_path(lat, lon))
            resp.raise_for_status()
            got = [int(t["id"]) for t in resp.json()["items"]]
            items += len(got)
            ok += got == brute_force(field, n, lat, lon)
    return ok, len(points), items / max(1, len(points))
