"""claims: flash sessions, the claim deny list, and an index to count a template's coupons by source

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

Claims themselves need no table of their own: Redis decides them (``coupon/lua/claim.lua``) and the
claim consumer writes them into ``user_coupons``. ``flash_sessions`` are the operators' daily flash
sales (their stock lives in Redis from the moment they are created); ``claim_denylist`` holds the
accounts operators barred from claiming (Redis keeps the hot copy the request path reads).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flash_sessions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("template_id", sa.BigInteger, sa.ForeignKey("coupon_templates.id"), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("created_by", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("ends_at > starts_at", name="ck_flash_sessions_window"),
        sa.CheckConstraint("stock BETWEEN 1 AND 10000000", name="ck_flash_sessions_stock"),
    )
    # The day listing asks for sessions with starts_at < day end AND ends_at > day start.
    op.create_index("ix_flash_sessions_starts_at", "flash_sessions", ["starts_at"])
    op.create_index("ix_flash_sessions_template_id", "flash_sessions", ["template_id"])

    op.create_table(
        "claim_denylist",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_by", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )

    # Rebuilding a template's Redis pool from PostgreSQL and checking a flash sale's invariants count a
    # template's coupons by source; without this they would scan all 16 partitions.
    op.create_index("ix_user_coupons_template_source", "user_coupons", ["template_id", "source_kind", "source_ref"])


def downgrade() -> None:
    op.drop_index("ix_user_coupons_template_source", table_name="user_coupons")
    op.drop_table("claim_denylist")
    op.drop_table("flash_sessions")
