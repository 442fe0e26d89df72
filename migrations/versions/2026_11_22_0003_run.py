"""run: running tasks and runs (with compact tracks)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_tasks",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("radius_m", sa.Float, nullable=False),
        sa.Column("geofence", postgresql.JSONB, nullable=True),
        sa.Column("min_distance_m", sa.Float, nullable=False),
        sa.Column("time_limit_s", sa.Integer, nullable=False),
        sa.Column("reward_template_id", sa.String(64), nullable=False),
        sa.Column("quota", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completed_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("reserved >= 0 AND completed_count >= 0", name="ck_run_tasks_counts_non_negative"),
        sa.CheckConstraint("reserved + completed_count <= quota", name="ck_run_tasks_within_quota"),
        sa.CheckConstraint("status IN ('active', 'paused', 'ended')", name="ck_run_tasks_status_known"),
    )
    op.create_index("ix_run_tasks_merchant_id_id", "run_tasks", ["merchant_id", "id"])
    op.create_index(
        "ix_run_tasks_live_ends_at", "run_tasks", ["ends_at"], postgresql_where=sa.text("status <> 'ended'")
    )
    op.create_index(
        "ix_run_tasks_unopened_starts_at", "run_tasks", ["starts_at"], postgresql_where=sa.text("NOT opened")
    )

    op.create_table(
        "run_runs",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column(
            "task_id",
            sa.BigInteger,
            sa.ForeignKey("run_tasks.id", name="fk_run_runs_task_id_run_tasks"),
            nullable=False,
        ),
        sa.Column("runner_id", sa.String(64), nullable=False),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("distance_m", sa.Float, nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("rejection_reason", sa.String(32), nullable=True),
        sa.Column("track", sa.LargeBinary, nullable=False, server_default=sa.text("''::bytea")),
        sa.Column("point_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_ts_ms", sa.BigInteger, nullable=True),
        sa.CheckConstraint("status IN ('active', 'completed', 'rejected', 'expired')", name="ck_run_runs_status_known"),
    )
    # Exactly one active run per (task, runner): the last line of defence behind the service's checks.
    op.create_index(
        "uq_run_runs_active_task_runner",
        "run_runs",
        ["task_id", "runner_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index("ix_run_runs_runner_id_id", "run_runs", ["runner_id", "id"])
    op.create_index(
        "ix_run_runs_active_deadline", "run_runs", ["deadline"], postgresql_where=sa.text("status = 'active'")
    )
    op.create_index("ix_run_runs_task_id", "run_runs", ["task_id"])
    # Uncompressed TOAST: the points upload reads only the 9-byte header with substring(), which then
    # fetches one chunk instead of decompressing the whole track; the encoding is compact already.
    op.execute("ALTER TABLE run_runs ALTER COLUMN track SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("run_runs")
    op.drop_table("run_tasks")
