"""Use cases of tasks: create, pause/resume/end, read, list, nearby search, window scheduler, reindex."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from picool.errors import Conflict, Forbidden, InvalidRequest, NotFound
from picool.tokens import Identity
from run import domain, models, schemas
from run.service._context import (
    INDEX_COLUMNS,
    RunContext,
    cached_of,
    entry_of,
    is_available,
    lock_task,
    nearby_view,
    task_view,
    utcnow,
)

MAX_NEARBY_LIMIT = 100
MAX_NEARBY_RADIUS_M = 50_000.0
# The index may hold a few tasks a read must skip (window closed a moment ago, a change in flight):
# ask Redis for a few more than the page so one round trip usually suffices. Every candidate costs
# Redis and this process work, and the index is kept in step, so the headroom is small; a page that
# comes up short asks again for four times as many.
_HEADROOM = 10
_TRANSITIONS = {("active", "paused"), ("paused", "active"), ("active", "ended"), ("paused", "ended")}


class TaskService:
    """Merchants' tasks and the nearby search over them."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def create(self, session: AsyncSession, identity: Identity, body: schemas.TaskCreate) -> schemas.Task:
        """Create a task for the caller's merchant and list it; one unit of work.

        400 for a bad geofence or window or a reward template the merchant may not use; 403 unless the
        caller is a merchant account; 503 when coupon cannot confirm the template.
        """
        merchant_id = identity.merchant_id
        if identity.role != "merchant" or not merchant_id:
            raise Forbidden("Only a merchant account can create tasks.")
        ring = None
        if body.geofence is not None:
            try:
                ring = domain.validate_geofence(body.geofence)
            except domain.GeofenceError as exc:
                raise InvalidRequest(str(exc), code="invalid_geofence", errors=[_err("geofence", str(exc))]) from exc
        now = utcnow()
        if body.starts_at is not None and body.ends_at is not None and body.ends_at <= body.starts_at:
            raise InvalidRequest(
                "ends_at must be after starts_at.", errors=[_err("ends_at", "must be after starts_at")]
            )
        if body.ends_at is not None and body.ends_at <= now:
            raise InvalidRequest("ends_at must be in the future.", errors=[_err("ends_at", "must be in the future")])
        await self.ctx.templates.check_reward_template(body.reward_template_id, merchant_id)
        task = models.Task(
            id=self.ctx.new_id(),
            merchant_id=merchant_id,
            title=body.title,
            description=body.description,
            lat=body.destination.lat,
            lon=body.destination.lon,
            radius_m=body.radius_m,
            geofence=[list(p) for p in ring] if ring else None,
            min_distance_m=body.min_distance_m,
            time_limit_s=body.time_limit_s,
            reward_template_id=body.reward_template_id,
            quota=body.quota,
            reserved=0,
            completed_count=0,
            status="active",
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            opened=body.starts_at is None or body.starts_at <= now,
            version=1,
            created_at=now,
            updated_at=now,
        )
        session.add(task)
        await session.commit()
        await self.ctx.task_changed([entry_of(task, now)])
        return task_view(cached_of(task))

    async def get(self, task_id: int) -> schemas.Task:
        """A task (any signed-in caller may read any task); 404 when there is none."""
        t = await self.ctx.load_task(task_id)
        if t is None:
            raise NotFound(f"No task {task_id}.")
        return task_view(t)

    async def set_status(self, session: AsyncSession, identity: Identity, task_id: int, status: str) -> schemas.Task:
        """Pause (``paused``), resume (``active``) or end (``ended``) a task; one unit of work.

        The owning merchant may do all three, operators too (moderation). Setting the current status
        again changes nothing. An ended task stays ended (409 ``task_ended``); a task whose window has
        closed cannot be resumed (409 ``window_closed``). Runs already accepted keep their slots.
        """
        task = await lock_task(session, task_id)
        if task is None:
            raise NotFound(f"No task {task_id}.")
        _check_owner(identity, task)
        now = utcnow()
        if task.status != status:
            if (task.status, status) not in _TRANSITIONS:
                raise Conflict("This task has ended; it cannot change any more.", code="task_ended")
            if status == "active" and task.ends_at is not None and task.ends_at <= now:
                raise Conflict("This task's window has closed; it cannot be resumed.", code="window_closed")
            # The row is locked, so this read-modify-write of the version cannot lose an update.
            task.status = status
            task.version += 1
            task.updated_at = now
            await session.flush()
        entry = entry_of(task, now)
        await session.commit()
        await self.ctx.task_changed([entry])
        return task_view(cached_of(task))

    async def list_mine(
        self, session: AsyncSession, identity: Identity, cursor: str | None, limit: int
    ) -> schemas.TaskList:
        """The caller's merchant's tasks, newest first, ``limit`` per page (merchants only)."""
        if identity.role != "merchant" or not identity.merchant_id:
            raise Forbidden("Only a merchant account has tasks.")
        q = select(models.Task).where(models.Task.merchant_id == identity.merchant_id)
        if cursor is not None:
            q = q.where(models.Task.id < _cursor(cursor))
        rows = (await session.execute(q.order_by(models.Task.id.desc()).limit(limit + 1))).scalars().all()
        items = [task_view(cached_of(t)) for t in rows[:limit]]
        return schemas.TaskList(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    async def nearby(self, lat: float, lon: float, radius_m: float, limit: int) -> list[schemas.NearbyTask]:
        """Available tasks whose destination is within ``radius_m`` metres of (lat, lon), nearest first.

        Exactly the tasks a brute-force haversine filter over all available tasks would give (ties in
        distance ordered by id), provided the index is in step: Redis proposes candidates, and the
        cached task decides availability and the exact distance.
        """
        if not 1 <= limit <= MAX_NEARBY_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_NEARBY_LIMIT}.")
        if not 0 < radius_m <= MAX_NEARBY_RADIUS_M:
            raise InvalidRequest(f"radius_m must be more than 0 and at most {MAX_NEARBY_RADIUS_M:.0f}.")
        count = limit + _HEADROOM
        while True:
            found = await self.ctx.index.search(lat, lon, radius_m, count)
            tasks = await self.ctx.load_tasks(found.task_ids)
            now = utcnow()
            hits: list[tuple[float, int, schemas.CachedTask]] = []
            for t in tasks:
                if t is None or not is_available(t, now):
                    continue
                d = domain.haversine_m(lat, lon, t.lat, t.lon)
                if d <= radius_m and d < found.complete_below_m:
                    hits.append((d, t.id, t))
            hits.sort(key=lambda h: (h[0], h[1]))
            if len(hits) >= limit or found.complete_below_m > radius_m:
                return [nearby_view(t, d) for d, _, t in hits[:limit]]
            count *= 4

    async def sweep_windows(self) -> int:
        """End tasks whose window has closed and list tasks whose window has opened; returns how many
        changed. Safe to run concurrently and repeatedly."""
        now = utcnow()
        T = models.Task
        closing = select(T.id).where(T.status != "ended", T.ends_at <= now)
        opening = select(T.id).where(~T.opened, T.status != "ended", T.starts_at <= now)
        async with self.ctx.kernel.sessionmaker() as session, session.begin():
            # Lock in id order (as the expiry sweep does), so concurrent multi-row changes cannot deadlock.
            ended = (
                await session.execute(
                    update(T)
                    .where(T.id.in_(closing.order_by(T.id).with_for_update().scalar_subquery()))
                    .values(status="ended", version=T.version + 1, updated_at=now)
                    .returning(*INDEX_COLUMNS)
                )
            ).all()
            opened = (
                await session.execute(
                    update(T)
                    .where(T.id.in_(opening.order_by(T.id).with_for_update().scalar_subquery()))
                    .values(opened=True, version=T.version + 1, updated_at=now)
                    .returning(*INDEX_COLUMNS)
                )
            ).all()
        entries = [entry_of(r, now) for r in [*ended, *opened]]
        await self.ctx.task_changed(entries)
        return len(entries)

    async def reindex(self) -> int:
        """Rebuild the nearby index from PostgreSQL; returns how many tasks are listed."""
        now = utcnow()
        async with self.ctx.kernel.sessionmaker() as session:
            # Ended tasks too: their versions are the tombstones that keep late updates from re-adding them.
            rows = (await session.execute(select(*INDEX_COLUMNS))).all()
        return await self.ctx.index.rebuild([entry_of(r, now) for r in rows])


def _check_owner(identity: Identity, task: models.Task) -> None:
    if identity.role == "operator":
        return
    if identity.role != "merchant":
        raise Forbidden("Only the task's merchant can change it.")
    if identity.merchant_id != task.merchant_id:
        raise Forbidden("This task belongs to another merchant.")


def _cursor(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidRequest("cursor is not one this API gave out.", errors=[_err("cursor", "invalid")])
    return int(text)


def _err(key: str, message: str) -> dict[str, str]:
    return {"key": key, "message": message, "source": "body"}
