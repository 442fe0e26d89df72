"""Tables of the run subsystem: tasks and runs (each run carries its compact GPS track)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from picool.db import Base


class Task(Base):
    """A merchant's running task.

    ``reserved`` counts the slots held by active runs and ``completed_count`` the slots used by
    completed runs; ``reserved + completed_count <= quota`` always holds. ``version`` goes up on every
    change that can move the task in or out of the nearby index, so index updates that arrive out of
    order are ignored (see ``run.geo``). ``opened`` records that the window's start has been reached
    (set at creation or by the window scheduler).
    """

    __tablename__ = "run_tasks"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    merchant_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    radius_m: Mapped[float] = mapped_column(Float)
    geofence: Mapped[list[Any] | None] = mapped_column(JSONB, nullable=True)
    min_distance_m: Mapped[float] = mapped_column(Float)
    time_limit_s: Mapped[int] = mapped_column(Integer)
    reward_template_id: Mapped[str] = mapped_column(String(64))
    quota: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    completed_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    opened: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("reserved >= 0 AND completed_count >= 0", name="counts_non_negative"),
        CheckConstraint("reserved + completed_count <= quota", name="within_quota"),
        CheckConstraint("status IN ('active', 'paused', 'ended')", name="status_known"),
        Index("ix_run_tasks_merchant_id_id", "merchant_id", "id"),
        # The window scheduler looks only at tasks that are not over yet.
        Index("ix_run_tasks_live_ends_at", "ends_at", postgresql_where=text("status <> 'ended'")),
        Index("ix_run_tasks_unopened_starts_at", "starts_at", postgresql_where=text("NOT opened")),
    )


class Run(Base):
    """A runner's attempt at a task, with its track encoded by ``run.domain.encode_track``.

    At most one active run per (task, runner) is enforced by a unique partial index.
    """

    __tablename__ = "run_runs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("run_tasks.id"))
    runner_id: Mapped[str] = mapped_column(String(64))
    merchant_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    distance_m: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    rejection_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    track: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    point_count: Mapped[int] = mapped_column(Integer, default=0)
    last_ts_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        CheckConstraint("status IN ('active', 'completed', 'rejected', 'expired')", name="status_known"),
        Index(
            "uq_run_runs_active_task_runner",
            "task_id",
            "runner_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_run_runs_runner_id_id", "runner_id", "id"),
        Index("ix_run_runs_active_deadline", "deadline", postgresql_where=text("status = 'active'")),
        Index("ix_run_runs_task_id", "task_id"),
    )
