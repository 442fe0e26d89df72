"""Use cases of runs: accept (reserving a quota slot), upload points, finish (verify, reward), read,
list, runner stats, and expiry of runs past their deadline."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from picool import events, outbox
from picool.errors import Conflict, Forbidden, InvalidRequest, NotFound
from picool.tokens import Identity
from run import domain, geo, models, schemas
from run.service._context import INDEX_COLUMNS, RunContext, entry_of, run_view, to_ms, utcnow

MAX_ACTIVE_RUNS = 3
MAX_POINTS_PER_RUN = 50_000
# A track must have taken real time: points may not be stamped before the run was accepted or after
# the server's "now" (so a made-up track cannot be uploaded and finished at once). Phones keep network
# time, so a small skew either way is all the tolerance they need.
CLOCK_SKEW = timedelta(minutes=2)
EXPIRY_BATCH = 500
# Namespace of this subsystem's advisory locks (the second key is a hash of the runner id).
_RUNNER_LOCK_NS = 7301


def event_id_of(run_id: int) -> str:
    """The id of the RunCompletedV1 event of ``run_id``: fixed, so a re-sent event is the same event."""
    return f"run-completed-{run_id}"


class RunService:
    """Runners' runs of tasks."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    # ----------------------------------------------------------------------------------- accept

    async def accept(self, session: AsyncSession, identity: Identity, task_id: int) -> schemas.Run:
        """Start a run of ``task_id`` for the calling runner, holding one of the task's quota slots.

        One unit of work. 409 ``run_in_progress`` when this runner already runs this task, 409
        ``too_many_active_runs`` at ``MAX_ACTIVE_RUNS`` active runs, 409 ``task_unavailable`` when the
        task is paused, ended, outside its window or has no slot left; 404 for an unknown task.
        The slot is taken by a conditional UPDATE on the task row, so concurrent accepts never take
        more slots than the quota.
        """
        if identity.role != "runner":
            raise Forbidden("Only runner accounts can accept tasks.")
        runner_id = identity.user_id
        now = utcnow()
        # Serialise one runner's accepts so the active-run limit cannot be raced past.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:rid))"), {"ns": _RUNNER_LOCK_NS, "rid": runner_id}
        )
        _, freed = await _expire_overdue(session, now, runner_id=runner_id)
        active = (
            (
                await session.execute(
                    select(models.Run.task_id).where(models.Run.runner_id == runner_id, models.Run.status == "active")
                )
            )
            .scalars()
            .all()
        )
        if task_id in active:
            raise Conflict("You are already running this task.", code="run_in_progress")
        if len(active) >= MAX_ACTIVE_RUNS:
            raise Conflict(
                f"You already have {MAX_ACTIVE_RUNS} active runs; finish one first.", code="too_many_active_runs"
            )
        T = models.Task
        row = (
            await session.execute(
                update(T)
                .where(
                    T.id == task_id,
                    T.status == "active",
                    T.reserved + T.completed_count < T.quota,
                    or_(T.starts_at.is_(None), T.starts_at <= now),
                    or_(T.ends_at.is_(None), T.ends_at > now),
                )
                .values(reserved=T.reserved + 1, version=T.version + 1, updated_at=now)
                .returning(*INDEX_COLUMNS, T.merchant_id, T.time_limit_s)
            )
        ).one_or_none()
        if row is None:
            await self._explain_unavailable(session, task_id, now)
        run = models.Run(
            id=self.ctx.new_id(),
            task_id=task_id,
            runner_id=runner_id,
            merchant_id=row.merchant_id,
            status="active",
            accepted_at=now,
            deadline=now + timedelta(seconds=row.time_limit_s),
            track=b"",
            point_count=0,
        )
        session.add(run)
        try:
            await session.commit()
        except IntegrityError as exc:  # the unique partial index: a concurrent accept of the same task won
            raise Conflict("You are already running this task.", code="run_in_progress") from exc
        await self.ctx.task_changed([*freed, entry_of(row, now)])
        return run_view(run)

    async def _explain_unavailable(self, session: AsyncSession, task_id: int, now: datetime) -> NoReturn:
        task = await session.get(models.Task, task_id)
        if task is None:
            raise NotFound(f"No task {task_id}.")
        if task.status != "active":
            why = f"the task is {task.status}"
        elif task.starts_at is not None and task.starts_at > now:
            why = "the task's window has not opened yet"
        elif task.ends_at is not None and task.ends_at <= now:
            why = "the task's window has closed"
        else:
            why = "every slot of the task's quota is taken"
        raise Conflict(f"This task cannot be accepted: {why}.", code="task_unavailable")

    # ----------------------------------------------------------------------------------- points

    async def add_points(
        self, session: AsyncSession, identity: Identity, run_id: int, batch: schemas.PointBatch
    ) -> schemas.PointsAccepted:
        """Append a batch of GPS points to the caller's active run; all or nothing.

        Batches of the same run are serialised by a row lock; timestamps must increase strictly within
        the batch and after every point already stored (400 otherwise, nothing stored). 409
        ``run_not_active`` once the run is over (a run past its deadline is expired here), 409
        ``track_too_long`` beyond ``MAX_POINTS_PER_RUN`` points.
        """
        R = models.Run
        row = (
            await session.execute(
                select(
                    R.id,
                    R.runner_id,
                    R.status,
                    R.accepted_at,
                    R.deadline,
                    R.point_count,
                    R.last_ts_ms,
                    func.substring(R.track, 1, domain.TRACK_HEADER_SIZE).label("header"),
                )
                .where(R.id == run_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"No run {run_id}.")
        if row.runner_id != identity.user_id:
            raise Forbidden("This is not your run.")
        if row.status != "active":
            raise Conflict(f"This run is {row.status}; it takes no more points.", code="run_not_active")
        now = utcnow()
        if row.deadline <= now:
            _, freed = await _expire_overdue(session, now, run_id=run_id)
            await session.commit()
            await self.ctx.task_changed(freed)
            raise Conflict("This run passed its deadline and has expired.", code="run_not_active")
        points = [domain.TrackPoint(p.ts_ms, p.lat, p.lon, p.accuracy_m) for p in batch.points]
        _check_batch(points, row.last_ts_ms, to_ms(row.accepted_at), to_ms(now))
        if row.point_count + len(points) > MAX_POINTS_PER_RUN:
            raise Conflict(f"A run holds at most {MAX_POINTS_PER_RUN} points.", code="track_too_long")
        try:
            suffix = domain.append_suffix(bytes(row.header or b""), points)
        except domain.TrackEncodingError as exc:
            raise InvalidRequest(str(exc), errors=[_err("points", str(exc))]) from exc
        await session.execute(
            update(R)
            .where(R.id == run_id)
            .values(
                track=R.track.op("||")(suffix),
                point_count=R.point_count + len(points),
                last_ts_ms=points[-1].ts_ms,
            )
        )
        await session.commit()
        return schemas.PointsAccepted(accepted=len(points), total_points=row.point_count + len(points))

    # ----------------------------------------------------------------------------------- finish

    async def finish(self, session: AsyncSession, identity: Identity, run_id: int) -> schemas.Run:
        """Verify the caller's run and settle it: ``completed`` (the slot is used, RunCompletedV1 is
        written to the outbox in the same transaction) or ``rejected`` with a reason (the slot goes
        back). Idempotent: a run that is no longer active is returned unchanged.

        A finish after the deadline (before the expiry sweep got to the run) is rejected with
        ``time_limit_exceeded``.
        """
        q = select(models.Run).where(models.Run.id == run_id).with_for_update()
        run = (await session.execute(q)).scalar_one_or_none()
        if run is None:
            raise NotFound(f"No run {run_id}.")
        if run.runner_id != identity.user_id:
            raise Forbidden("This is not your run.")
        if run.status != "active":
            await session.commit()
            return run_view(run)
        task = await session.get(models.Task, run.task_id)
        assert task is not None  # a foreign key holds it
        now = utcnow()
        ring = [(float(p[0]), float(p[1])) for p in task.geofence] if task.geofence else None
        # A geofence replaces the radius as the arrival area.
        dest = domain.Destination(task.lat, task.lon, 0.0 if ring else task.radius_m, ring)
        verdict = domain.verify_run(
            domain.decode_track(run.track),
            dest,
            min_distance_m=task.min_distance_m,
            accepted_at_ms=to_ms(run.accepted_at),
            deadline_ms=to_ms(run.deadline),
            finished_at_ms=to_ms(now),
            config=self.ctx.verify_config,
        )
        run.status = "completed" if verdict.ok else "rejected"
        run.rejection_reason = verdict.reason
        run.distance_m = verdict.distance_m
        run.duration_s = verdict.duration_s
        run.finished_at = now
        T = models.Task
        if verdict.ok:
            change = {"reserved": T.reserved - 1, "completed_count": T.completed_count + 1}
        else:
            change = {"reserved": T.reserved - 1}
        row = (
            await session.execute(
                update(T)
                .where(T.id == task.id)
                .values(**change, version=T.version + 1, updated_at=now)
                .returning(*INDEX_COLUMNS)
            )
        ).one()
        if verdict.ok:
            event = events.RunCompletedV1(
                run_id=str(run.id),
                task_id=str(task.id),
                runner_id=run.runner_id,
                merchant_id=task.merchant_id,
                reward_template_id=task.reward_template_id,
                completed_at=now,
                distance_m=verdict.distance_m,
                duration_s=verdict.duration_s,
            )
            outbox.add_event(
                session,
                self.ctx.kernel.settings,
                events.TOPIC_RUN_COMPLETED,
                event,
                key=run.runner_id,
                event_id=event_id_of(run.id),
            )
        await session.commit()
        await self.ctx.task_changed([entry_of(row, now)])
        if verdict.ok:
            self.ctx.kernel.relay.wake()
        return run_view(run)

    # ------------------------------------------------------------------------------------ reads

    async def get(self, session: AsyncSession, identity: Identity, run_id: int) -> schemas.Run:
        """A run, for its runner, the task's merchant or an operator (403 for anyone else). A run past
        its deadline is expired (and its slot freed) on the way."""
        run = await session.get(models.Run, run_id)
        if run is None:
            raise NotFound(f"No run {run_id}.")
        allowed = (
            run.runner_id == identity.user_id
            or (identity.role == "merchant" and identity.merchant_id == run.merchant_id)
            or identity.role == "operator"
        )
        if not allowed:
            raise Forbidden("Only the runner and the task's merchant can see this run.")
        now = utcnow()
        if run.status == "active" and run.deadline <= now:
            _, freed = await _expire_overdue(session, now, run_id=run_id)
            await session.commit()
            await self.ctx.task_changed(freed)
            await session.refresh(run)
        return run_view(run)

    async def list_mine(
        self, session: AsyncSession, identity: Identity, cursor: str | None, limit: int, status: str | None
    ) -> schemas.RunList:
        """The caller's runs, newest first, ``limit`` per page, optionally of one status."""
        await self._expire_for(session, identity.user_id)
        q = select(models.Run).where(models.Run.runner_id == identity.user_id)
        if status is not None:
            q = q.where(models.Run.status == status)
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
                raise InvalidRequest("cursor is not one this API gave out.", errors=[_err("cursor", "invalid")])
            q = q.where(models.Run.id < int(cursor))
        rows = (await session.execute(q.order_by(models.Run.id.desc()).limit(limit + 1))).scalars().all()
        items = [run_view(r) for r in rows[:limit]]
        return schemas.RunList(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    async def list_for_task(
        self, session: AsyncSession, identity: Identity, task_id: int, cursor: str | None, limit: int
    ) -> schemas.RunList:
        """A task's runs, newest first, for the task's merchant or an operator (403 for anyone else,
        404 for an unknown task). The tracks stay in the database: a page is small whatever they hold."""
        task = await session.get(models.Task, task_id)
        if task is None:
            raise NotFound(f"No task {task_id}.")
        owner = identity.role == "merchant" and identity.merchant_id == task.merchant_id
        if not (owner or identity.role == "operator"):
            raise Forbidden("Only the task's merchant can see its runs.")
        q = select(models.Run).options(defer(models.Run.track)).where(models.Run.task_id == task_id)
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
                raise InvalidRequest("cursor is not one this API gave out.", errors=[_err("cursor", "invalid")])
            q = q.where(models.Run.id < int(cursor))
        rows = (await session.execute(q.order_by(models.Run.id.desc()).limit(limit + 1))).scalars().all()
        items = [run_view(r) for r in rows[:limit]]
        return schemas.RunList(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    async def stats(self, session: AsyncSession, identity: Identity) -> schemas.RunnerStats:
        """The caller's run counts and verified distances (total and since Monday 00:00 UTC)."""
        await self._expire_for(session, identity.user_id)
        now = utcnow()
        week = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        R = models.Run
        done = R.status == "completed"
        row = (
            await session.execute(
                select(
                    func.count(),
                    func.count().filter(done),
                    func.count().filter(R.status == "active"),
                    func.coalesce(func.sum(R.distance_m).filter(done), 0.0),
                    func.coalesce(func.sum(R.distance_m).filter(and_(done, R.finished_at >= week)), 0.0),
                ).where(R.runner_id == identity.user_id)
            )
        ).one()
        return schemas.RunnerStats(
            runs=row[0],
            completed=row[1],
            active=row[2],
            total_distance_m=round(float(row[3] or 0.0), 1),
            week_distance_m=round(float(row[4] or 0.0), 1),
            week_starts_at=week,
        )

    async def _expire_for(self, session: AsyncSession, runner_id: str) -> None:
        _, freed = await _expire_overdue(session, utcnow(), runner_id=runner_id)
        await session.commit()
        await self.ctx.task_changed(freed)

    # ----------------------------------------------------------------------------------- expiry

    async def sweep_expired(self) -> int:
        """Expire every active run past its deadline and give its slot back; returns how many."""
        total = 0
        while True:
            now = utcnow()
            async with self.ctx.kernel.sessionmaker() as session, session.begin():
                n, freed = await _expire_overdue(session, now)
            await self.ctx.task_changed(freed)
            total += n
            if n < EXPIRY_BATCH:
                return total


async def _expire_overdue(
    session: AsyncSession, now: datetime, *, runner_id: str | None = None, run_id: int | None = None
) -> tuple[int, list[geo.IndexEntry]]:
    """Mark active runs past their deadline as expired and free their slots, in the caller's
    transaction; returns how many expired and the index entries of the tasks that got slots back
    (to apply after the commit).

    Runs locked by someone else (a finish in progress) are skipped: that one settles them.
    """
    R = models.Run
    pick = select(R.id).where(R.status == "active", R.deadline <= now)
    if runner_id is not None:
        pick = pick.where(R.runner_id == runner_id)
    if run_id is not None:
        pick = pick.where(R.id == run_id)
    pick = pick.order_by(R.id).limit(EXPIRY_BATCH).with_for_update(skip_locked=True)
    task_ids = (
        (
            await session.execute(
                update(R)
                .where(R.id.in_(pick.scalar_subquery()))
                .values(status="expired", finished_at=R.deadline)
                .returning(R.task_id)
            )
        )
        .scalars()
        .all()
    )
    counts = Counter(task_ids)
    entries = []
    T = models.Task
    # One task at a time in id order, so two sweeps never lock the same rows in opposite orders.
    for task_id in sorted(counts):
        row = (
            await session.execute(
                update(T)
                .where(T.id == task_id)
                .values(reserved=T.reserved - counts[task_id], version=T.version + 1, updated_at=now)
                .returning(*INDEX_COLUMNS)
            )
        ).one()
        entries.append(entry_of(row, now))
    return len(task_ids), entries


def _check_batch(points: list[domain.TrackPoint], last_ts_ms: int | None, accepted_ms: int, now_ms: int) -> None:
    skew_ms = int(CLOCK_SKEW.total_seconds() * 1000)
    lo = accepted_ms - skew_ms
    hi = now_ms + skew_ms
    prev = last_ts_ms
    for k, p in enumerate(points):
        if prev is not None and p.ts_ms <= prev:
            where = "the previous point" if k else "the last point already stored"
            raise InvalidRequest(
                f"points[{k}].ts_ms must be greater than {where} ({prev}).",
                errors=[_err(f"points[{k}].ts_ms", "timestamps must increase strictly")],
            )
        if p.ts_ms < lo:
            raise InvalidRequest(
                f"points[{k}].ts_ms is before the run was accepted.",
                errors=[_err(f"points[{k}].ts_ms", "before the run was accepted")],
            )
        if p.ts_ms > hi:
            raise InvalidRequest(
                f"points[{k}].ts_ms is in the future (the server's clock says {now_ms}).",
                errors=[_err(f"points[{k}].ts_ms", "in the future")],
            )
        prev = p.ts_ms


def _err(key: str, message: str) -> dict[str, str]:
    return {"key": key, "message": message, "source": "body"}
