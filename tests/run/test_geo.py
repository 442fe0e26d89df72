"""The nearby index against real Redis: versioned updates, rebuild, and nearby == brute-force haversine."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from picool.kernel import Kernel
from run import domain, geo, models
from run.service import TaskService
from run.service._context import entry_of

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def tasks_service(kernel: Kernel) -> TaskService:
    svc: TaskService = kernel.services["run.tasks"]
    return svc


def destination(lat: float, lon: float, bearing_deg: float, dist_m: float) -> tuple[float, float]:
    """The point ``dist_m`` from (lat, lon) along ``bearing_deg`` on the sphere, latitude clamped to the
    indexable +-85 degrees, longitude folded into [-180, 180]."""
    d = dist_m / domain.EARTH_RADIUS_M
    phi1, lmb1, th = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    phi2 = math.asin(max(-1.0, min(1.0, math.sin(phi1) * math.cos(d) + math.cos(phi1) * math.sin(d) * math.cos(th))))
    lmb2 = lmb1 + math.atan2(math.sin(th) * math.sin(d) * math.cos(phi1), math.cos(d) - math.sin(phi1) * math.sin(phi2))
    lat2 = max(-85.0, min(85.0, math.degrees(phi2)))
    lon2 = (math.degrees(lmb2) + 180.0) % 360.0 - 180.0
    return lat2, lon2


def spelled(lon: float, as_180: bool) -> float:
    """The antimeridian may be written 180 or -180; both must work."""
    return 180.0 if as_180 and lon == -180.0 else lon


@dataclass
class Spec:
    """One generated task: where it is relative to the centre and what state it is in."""

    bearing: float
    factor: float  # distance from the centre as a multiple of the search radius
    status: str
    quota: int
    reserved: int
    completed: int
    window: str  # none | open | future | past
    same_as_previous: bool
    as_180: bool


specs = st.builds(
    Spec,
    bearing=st.floats(0, 360),
    factor=st.one_of(st.floats(0, 2.5), st.sampled_from([0.0, 0.999, 1.0, 1.001])),
    status=st.sampled_from(["active", "active", "active", "paused", "ended"]),
    quota=st.integers(1, 3),
    reserved=st.integers(0, 3),
    completed=st.integers(0, 3),
    window=st.sampled_from(["none", "none", "open", "future", "past"]),
    same_as_previous=st.booleans(),
    as_180=st.booleans(),
)
centre_lats = st.one_of(st.floats(-90, 90), st.floats(84.0, 90.0), st.floats(-90.0, -84.0), st.just(85.0))
centre_lons = st.one_of(
    st.floats(-180, 180), st.floats(179.0, 180.0), st.floats(-180.0, -179.0), st.sampled_from([180.0, -180.0])
)


async def clear(kernel: Kernel) -> None:
    async with kernel.sessionmaker() as s, s.begin():
        await s.execute(delete(models.Run))
        await s.execute(delete(models.Task))
    await kernel.redis.delete(geo.GEO_KEY, geo.VERSIONS_KEY)


async def insert(kernel: Kernel, rows: list[models.Task]) -> None:
    """Store tasks as the service would and bring the index in step (as every change does)."""
    now = datetime.now(UTC)
    async with kernel.sessionmaker() as s, s.begin():
        s.add_all(rows)
    await tasks_service(kernel).ctx.task_changed([entry_of(r, now) for r in rows])


def task_row(kernel: Kernel, lat: float, lon: float, **over: Any) -> models.Task:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": kernel.ids.next_id(),
        "merchant_id": "1",
        "title": "t",
        "description": "",
        "lat": lat,
        "lon": lon,
        "radius_m": 100.0,
        "geofence": None,
        "min_distance_m": 0.0,
        "time_limit_s": 600,
        "reward_template_id": "1",
        "quota": 5,
        "reserved": 0,
        "completed_count": 0,
        "status": "active",
        "starts_at": None,
        "ends_at": None,
        "opened": True,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    values.update(over)
    return models.Task(**values)


def available(t: models.Task, now: datetime) -> bool:
    return (
        t.status == "active"
        and (t.starts_at is None or t.starts_at <= now)
        and (t.ends_at is None or t.ends_at > now)
        and t.reserved + t.completed_count < t.quota
    )


@PROPERTY
@given(
    lat=centre_lats,
    lon=centre_lons,
    radius=st.one_of(st.floats(10, 50_000), st.sampled_from([10.0, 3000.0, 50_000.0])),
    limit=st.integers(1, 25),
    generated=st.lists(specs, max_size=40),
)
async def test_nearby_equals_brute_force_haversine(
    client: httpx.AsyncClient, kernel: Kernel, lat: float, lon: float, radius: float, limit: int, generated: list[Spec]
) -> None:
    await clear(kernel)
    now = datetime.now(UTC)
    day = timedelta(days=1)
    windows = {"none": (None, None), "open": (now - day, now + day), "future": (now + day, now + 2 * day),
               "past": (now - 2 * day, now - day)}  # fmt: skip
    rows: list[models.Task] = []
    for spec in generated:
        if spec.same_as_previous and rows:
            t_lat, t_lon = rows[-1].lat, rows[-1].lon  # a tie in distance
        else:
            t_lat, t_lon = destination(lat, lon, spec.bearing, spec.factor * radius)
            t_lon = spelled(t_lon, spec.as_180)
        starts, ends = windows[spec.window]
        reserved = min(spec.reserved, spec.quota)
        rows.append(
            task_row(
                kernel,
                t_lat,
                t_lon,
                status=spec.status,
                quota=spec.quota,
                reserved=reserved,
                completed_count=min(spec.completed, spec.quota - reserved),
                starts_at=starts,
                ends_at=ends,
                opened=starts is None or starts <= now,
            )
        )
    await insert(kernel, rows)

    got = await tasks_service(kernel).nearby(lat, lon, radius, limit)

    check_now = datetime.now(UTC)
    expected = sorted(
        ((domain.haversine_m(lat, lon, t.lat, t.lon), t.id) for t in rows if available(t, check_now)),
    )
    expected = [(d, i) for d, i in expected if d <= radius][:limit]
    assert [t.id for t in got] == [str(i) for _, i in expected]
    for t, (d, _) in zip(got, expected, strict=True):
        assert t.distance_m == round(d, 1)


async def test_nearby_in_a_dense_area_equals_brute_force(client: httpx.AsyncClient, kernel: Kernel) -> None:
    """The search circle starts small and grows while it holds too few: a dense core, a sparse ring and
    searches from the core, its edge and the ring still give exactly the brute-force answer."""
    rng = random.Random(11)
    lat, lon = 31.2, 121.4
    rows = [task_row(kernel, *destination(lat, lon, rng.uniform(0, 360), rng.uniform(0, 400))) for _ in range(150)]
    rows += [task_row(kernel, *destination(lat, lon, rng.uniform(0, 360), rng.uniform(400, 6000))) for _ in range(150)]
    await insert(kernel, rows)
    for bearing, dist in ((0, 0), (90, 350), (200, 900), (45, 2500), (300, 5000)):
        c_lat, c_lon = destination(lat, lon, bearing, dist)
        for radius, limit in ((3000.0, 20), (3000.0, 1), (800.0, 25), (50_000.0, 5)):
            got = await tasks_service(kernel).nearby(c_lat, c_lon, radius, limit)
            expected = sorted((domain.haversine_m(c_lat, c_lon, t.lat, t.lon), t.id) for t in rows)
            expected = [(d, i) for d, i in expected if d <= radius][:limit]
            assert [t.id for t in got] == [str(i) for _, i in expected], (bearing, dist, radius, limit)


async def test_nearby_reads_past_stale_index_entries(client: httpx.AsyncClient, kernel: Kernel) -> None:
    """When the index lags behind (entries for tasks no longer available), a page still fills up."""
    lat, lon = 10.0, 20.0
    stale = [task_row(kernel, *destination(lat, lon, k * 6.0, 100 + k), status="paused") for k in range(60)]
    live = task_row(kernel, *destination(lat, lon, 0, 2000))
    await insert(kernel, [*stale, live])
    # Simulate the lag: put the paused tasks back in the index behind the service's back.
    await kernel.redis.geoadd(geo.GEO_KEY, [v for t in stale for v in (t.lon, t.lat, str(t.id))])
    got = await tasks_service(kernel).nearby(lat, lon, 3000, 5)
    assert [t.id for t in got] == [str(live.id)]


async def test_index_ignores_older_versions(client: httpx.AsyncClient, kernel: Kernel) -> None:
    index = geo.TaskIndex(kernel.redis)
    await index.apply([geo.IndexEntry(7, 2, 1.0, 2.0, listed=True)])
    await index.apply([geo.IndexEntry(7, 1, 1.0, 2.0, listed=False)])  # late and stale
    assert await index.members() == {7}
    await index.apply([geo.IndexEntry(7, 2, 1.0, 2.0, listed=True)])  # the same again: harmless
    assert await index.members() == {7}
    await index.apply([geo.IndexEntry(7, 3, 1.0, 2.0, listed=False)])
    assert await index.members() == set()
    await index.apply([geo.IndexEntry(7, 2, 1.0, 2.0, listed=True)])
    assert await index.members() == set()


async def test_search_from_beyond_85_degrees(client: httpx.AsyncClient, kernel: Kernel) -> None:
    index = geo.TaskIndex(kernel.redis)
    await index.apply([geo.IndexEntry(1, 1, 84.99, 10.0, listed=True), geo.IndexEntry(2, 1, 84.9, -170.0, listed=True)])
    # 85.2N on the same meridian is ~23 km from task 1; task 2 is on the far side of the pole.
    near_pole = await index.search(85.2, 10.0, 30_000, 10)
    assert near_pole.task_ids == [1]
    assert (await index.search(85.5, 10.0, 30_000, 10)).task_ids == []
    assert (await index.search(90.0, 0.0, 50_000, 10)).task_ids == []


async def test_reindex_rebuilds_from_postgres(client: httpx.AsyncClient, kernel: Kernel) -> None:
    now = datetime.now(UTC)
    listed = [task_row(kernel, 1.0 + k / 100, 2.0) for k in range(3)]
    hidden = [
        task_row(kernel, 1.0, 2.0, status="paused"),
        task_row(kernel, 1.0, 2.0, quota=1, reserved=1),
        task_row(kernel, 1.0, 2.0, starts_at=now + timedelta(hours=1), opened=False),
        task_row(kernel, 1.0, 2.0, status="ended"),
    ]
    await insert(kernel, [*listed, *hidden])
    index = geo.TaskIndex(kernel.redis)
    # Lose one listed task and gain a ghost.
    await kernel.redis.zrem(geo.GEO_KEY, str(listed[0].id))
    await kernel.redis.geoadd(geo.GEO_KEY, [2.0, 1.0, "999"])
    assert await tasks_service(kernel).reindex() == 3
    assert await index.members() == {t.id for t in listed}
    # Versions came along: an out-of-date update cannot undo the rebuild.
    await index.apply([geo.IndexEntry(listed[1].id, 0, 1.0, 2.0, listed=False)])
    assert listed[1].id in await index.members()
    await clear(kernel)
    assert await tasks_service(kernel).reindex() == 0
    assert await index.members() == set()


async def test_antimeridian_written_either_way(client: httpx.AsyncClient, kernel: Kernel) -> None:
    east = task_row(kernel, 0.0, 180.0)
    west = task_row(kernel, 0.00005, -180.0)
    across = task_row(kernel, 0.0, -179.9999)
    await insert(kernel, [east, west, across])
    for lon in (180.0, -180.0, 179.99995):
        got = await tasks_service(kernel).nearby(0.0, lon, 20, 10)
        assert {t.id for t in got} == {str(east.id), str(west.id), str(across.id)}, lon
