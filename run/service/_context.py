"""What every run use case shares: the kernel's pieces it needs, the index, the task cache and views."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from picool.cache import TwoLevelCache
from picool.errors import NotFound
from picool.ids import parse_id_str
from picool.kernel import Kernel
from run import domain, geo, models, schemas
from run.templates import TemplateDirectory

TASK_CACHE = "run.task"


def utcnow() -> datetime:
    """The current time (aware, UTC)."""
    return datetime.now(UTC)


def to_ms(t: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return math.floor(t.timestamp() * 1000)


def parse_id(text: str, what: str) -> int:
    """The numeric id of an API id string; a 404 problem when it cannot be one."""
    value = parse_id_str(text)
    if value is None:
        raise NotFound(f"No {what} {text[:40]!r}.")
    return value


def verify_config_from(extra: Any) -> domain.VerifyConfig:
    """Verification thresholds: the defaults, overridden by ``PICOOL_RUN_MAX_SPEED_MPS`` and
    ``PICOOL_RUN_SPEED_WINDOW_S`` (read once, when the app is built)."""
    default = domain.DEFAULT_VERIFY_CONFIG
    try:
        max_speed = float(extra.get("run_max_speed_mps", default.max_speed_mps))
        window = float(extra.get("run_speed_window_s", default.speed_window_s))
    except ValueError as exc:
        raise ValueError(f"PICOOL_RUN_MAX_SPEED_MPS / PICOOL_RUN_SPEED_WINDOW_S must be numbers: {exc}") from exc
    if not (math.isfinite(max_speed) and max_speed > 0 and math.isfinite(window) and window > 0):
        raise ValueError("PICOOL_RUN_MAX_SPEED_MPS and PICOOL_RUN_SPEED_WINDOW_S must be positive")
    return dataclasses.replace(default, max_speed_mps=max_speed, speed_window_s=window)


# Columns an index entry is built from; every UPDATE of a task returns them.
INDEX_COLUMNS = (
    models.Task.id,
    models.Task.version,
    models.Task.lat,
    models.Task.lon,
    models.Task.status,
    models.Task.opened,
    models.Task.reserved,
    models.Task.completed_count,
    models.Task.quota,
    models.Task.ends_at,
)


def entry_of(row: Any, now: datetime) -> geo.IndexEntry:
    """The index entry of a row holding ``INDEX_COLUMNS``."""
    return geo.IndexEntry(
        task_id=row.id,
        version=row.version,
        lat=row.lat,
        lon=row.lon,
        listed=geo.is_listed(
            status=row.status,
            opened=row.opened,
            reserved=row.reserved,
            completed_count=row.completed_count,
            quota=row.quota,
            ends_at=row.ends_at,
            now=now,
        ),
    )


def cached_of(task: models.Task) -> schemas.CachedTask:
    """The cacheable form of a task row."""
    ring = task.geofence
    return schemas.CachedTask(
        id=task.id,
        merchant_id=task.merchant_id,
        title=task.title,
        description=task.description,
        lat=task.lat,
        lon=task.lon,
        radius_m=task.radius_m,
        geofence=[(float(p[0]), float(p[1])) for p in ring] if ring else None,
        min_distance_m=task.min_distance_m,
        time_limit_s=task.time_limit_s,
        reward_template_id=task.reward_template_id,
        quota=task.quota,
        reserved=task.reserved,
        completed_count=task.completed_count,
        status=task.status,  # type: ignore[arg-type]
        starts_at=task.starts_at,
        ends_at=task.ends_at,
        opened=task.opened,
        version=task.version,
        created_at=task.created_at,
    )


def task_view(t: schemas.CachedTask) -> schemas.Task:
    """The API form of a task."""
    return schemas.Task(**_task_fields(t))


def nearby_view(t: schemas.CachedTask, distance_m: float) -> schemas.NearbyTask:
    """The API form of a task found by a nearby search."""
    return schemas.NearbyTask(**_task_fields(t), distance_m=round(distance_m, 1))


def _task_fields(t: schemas.CachedTask) -> dict[str, Any]:
    geofence = {"type": "Polygon", "coordinates": [[list(p) for p in t.geofence]]} if t.geofence else None
    return {
        "id": str(t.id),
        "merchant_id": t.merchant_id,
        "title": t.title,
        "description": t.description,
        "destination": schemas.LatLon(lat=t.lat, lon=t.lon),
        "radius_m": t.radius_m,
        "geofence": geofence,
        "min_distance_m": t.min_distance_m,
        "time_limit_s": t.time_limit_s,
        "reward_template_id": t.reward_template_id,
        "quota": t.quota,
        "completed_count": t.completed_count,
        "status": t.status,
        "starts_at": t.starts_at,
        "ends_at": t.ends_at,
        "created_at": t.created_at,
    }


def is_available(t: schemas.CachedTask, now: datetime) -> bool:
    """True when a runner could accept the task at ``now``: active, inside its window, quota left."""
    return (
        t.status == "active"
        and (t.starts_at is None or t.starts_at <= now)
        and (t.ends_at is None or t.ends_at > now)
        and t.reserved + t.completed_count < t.quota
    )


def run_view(r: models.Run) -> schemas.Run:
    """The API form of a run."""
    return schemas.Run(
        id=str(r.id),
        task_id=str(r.task_id),
        runner_id=r.runner_id,
        status=r.status,  # type: ignore[arg-type]
        accepted_at=r.accepted_at,
        deadline=r.deadline,
        finished_at=r.finished_at,
        distance_m=None if r.distance_m is None else round(r.distance_m, 1),
        duration_s=None if r.duration_s is None else round(r.duration_s, 3),
        rejection_reason=r.rejection_reason,
        point_count=r.point_count,
    )


@dataclass
class RunContext:
    """The kernel pieces, index, cache and template directory the run use cases work with."""

    kernel: Kernel
    index: geo.TaskIndex
    cache: TwoLevelCache[schemas.CachedTask]
    templates: TemplateDirectory
    verify_config: domain.VerifyConfig

    @classmethod
    def create(cls, kernel: Kernel, templates: TemplateDirectory | None = None) -> RunContext:
        """The context for ``kernel``'s process (settings are read here, once)."""
        return cls(
            kernel=kernel,
            index=geo.TaskIndex(kernel.redis),
            cache=kernel.cache(TASK_CACHE, schemas.CachedTask),
            templates=templates or TemplateDirectory(kernel),
            verify_config=verify_config_from(kernel.settings.extra),
        )

    def new_id(self) -> int:
        """A fresh id (the kernel leases its id node at start, so ask it each time)."""
        return self.kernel.ids.next_id()

    async def load_task(self, task_id: int) -> schemas.CachedTask | None:
        """A task through the two-level cache (None when there is no such task)."""

        async def loader() -> schemas.CachedTask | None:
            async with self.kernel.sessionmaker() as session:
                row = await session.get(models.Task, task_id)
                return None if row is None else cached_of(row)

        return await self.cache.get(str(task_id), loader)

    async def load_tasks(self, task_ids: Sequence[int]) -> list[schemas.CachedTask | None]:
        """Many tasks through the two-level cache, in order: one Redis round trip and at most one query for
        all of them (a search page), not one of each per task."""

        async def loader(keys: list[str]) -> dict[str, schemas.CachedTask | None]:
            async with self.kernel.sessionmaker() as session:
                rows = await session.execute(select(models.Task).where(models.Task.id.in_([int(k) for k in keys])))
                return {str(t.id): cached_of(t) for t in rows.scalars()}

        return await self.cache.get_many([str(i) for i in task_ids], loader)

    async def task_changed(self, entries: Iterable[geo.IndexEntry]) -> None:
        """After a commit: bring the nearby index in step and drop the cached copies everywhere."""
        entries = list(entries)
        await self.index.apply(entries)
        for e in entries:
            await self.cache.invalidate(str(e.task_id))


async def lock_task(session: AsyncSession, task_id: int) -> models.Task | None:
    """The task row, locked for this transaction."""
    q = select(models.Task).where(models.Task.id == task_id).with_for_update()
    return (await session.execute(q)).scalar_one_or_none()
