"""Request and response bodies of the run API (msgspec), plus the cached form of a task.

Field constraints here reject malformed input (wrong types, out-of-range or non-finite numbers) with a
400 before any service code runs; the rules that need more than one field live in the service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# The nearby index (Redis GEO, Web Mercator) cannot hold points beyond ~85.05 degrees of latitude, so a
# task's destination stays within 85 degrees; searches may start anywhere.
MAX_TASK_LAT = 85.0
MAX_POINTS_PER_BATCH = 1000
# Ids travel as decimal strings; a loose cap keeps junk out of URLs and log lines.
TEMPLATE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Lat = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Lon = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
TaskLat = Annotated[float, msgspec.Meta(ge=-MAX_TASK_LAT, le=MAX_TASK_LAT)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
TaskStatus = Literal["active", "paused", "ended"]
RunStatus = Literal["active", "completed", "rejected", "expired"]


class LatLon(msgspec.Struct, frozen=True, kw_only=True):
    """A WGS84 position in degrees."""

    lat: Lat
    lon: Lon


class Destination(msgspec.Struct, frozen=True, kw_only=True):
    """A task's destination point (latitude limited to +-85 degrees, see ``MAX_TASK_LAT``)."""

    lat: TaskLat
    lon: Lon


class TaskCreate(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /api/v1/run/tasks``. ``geofence`` (a GeoJSON Polygon) replaces the radius as the arrival area."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    destination: Destination
    radius_m: Annotated[float, msgspec.Meta(ge=10, le=1000)]
    min_distance_m: Annotated[float, msgspec.Meta(ge=0, le=100_000)]
    time_limit_s: Annotated[int, msgspec.Meta(ge=60, le=21_600)]
    reward_template_id: Annotated[str, msgspec.Meta(pattern=TEMPLATE_ID_PATTERN)]
    quota: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    geofence: dict[str, Any] | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None


class TaskUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """``PATCH /api/v1/run/tasks/{id}``: pause (``paused``), resume (``active``) or end (``ended``)."""

    status: TaskStatus


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """A task as the API shows it. ``geofence`` is the GeoJSON Polygon or null."""

    id: str
    merchant_id: str
    title: str
    description: str
    destination: LatLon
    radius_m: float
    geofence: dict[str, Any] | None
    min_distance_m: float
    time_limit_s: int
    reward_template_id: str
    quota: int
    completed_count: int
    status: TaskStatus
    starts_at: datetime | None
    ends_at: datetime | None
    created_at: datetime


class NearbyTask(Task, frozen=True, kw_only=True):
    """A task in a nearby search, with its destination's distance from the search point."""

    distance_m: float


class NearbyTasks(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/run/tasks/nearby``: nearest first."""

    items: list[NearbyTask]
    next_cursor: str | None = None


class TaskList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a merchant's tasks, newest first."""

    items: list[Task]
    next_cursor: str | None


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """One GPS fix: device time in epoch milliseconds, position, optional horizontal accuracy in metres."""

    ts_ms: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    lat: Lat
    lon: Lon
    accuracy_m: Annotated[float, msgspec.Meta(ge=0, le=10_000)] | None = None


class PointBatch(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /api/v1/run/runs/{id}/points``: 1 to 1000 points, timestamps strictly increasing."""

    points: Annotated[list[Point], msgspec.Meta(min_length=1, max_length=MAX_POINTS_PER_BATCH)]


class PointsAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """How many points of the batch were stored, and how many the run holds now."""

    accepted: int
    total_points: int


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """A run as the API shows it."""

    id: str
    task_id: str
    runner_id: str
    status: RunStatus
    accepted_at: datetime
    deadline: datetime
    finished_at: datetime | None
    distance_m: float | None
    duration_s: float | None
    rejection_reason: str | None
    point_count: int


class RunList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/run/me/runs`` and ``GET /api/v1/run/tasks/{id}/runs``: newest first."""

    items: list[Run]
    next_cursor: str | None


class RunnerStats(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/run/me/stats``. Distances count completed runs only (verified distance); the week
    starts on Monday 00:00 UTC."""

    runs: int
    completed: int
    active: int
    total_distance_m: float
    week_distance_m: float
    week_starts_at: datetime


class CachedTask(msgspec.Struct, frozen=True, kw_only=True):
    """A task row as the two-level cache keeps it (everything the API and the nearby filter need)."""

    id: int
    merchant_id: str
    title: str
    description: str
    lat: float
    lon: float
    radius_m: float
    geofence: list[tuple[float, float]] | None
    min_distance_m: float
    time_limit_s: int
    reward_template_id: str
    quota: int
    reserved: int
    completed_count: int
    status: TaskStatus
    starts_at: datetime | None
    ends_at: datetime | None
    opened: bool
    version: int
    created_at: datetime
