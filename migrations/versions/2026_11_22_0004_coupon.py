"""coupon: templates, user coupons (16 hash partitions by user), redemptions, audit, reward failures

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

User coupons are hash-partitioned by ``user_id`` into ``user_coupons_p0`` .. ``user_coupons_p15``
with an operator class whose hash makes PostgreSQL put a user in partition ``user_id % 16``: the
same number the coupon id and code carry (``picool.ids.shard_of``, ``coupon.codes``), so a code
scanned at the till names its partition. PostgreSQL picks the partition of a row as
``hash_combine64(0, h) % modulus`` where ``hash_combine64(0, h) = h + 0x49a0f4dd15e5a8e3``
(mod 2**64) and ``h`` is the opclass's extended hash; returning ``user_id - 0x49a0f4dd15e5a8e3``
therefore routes by ``user_id`` itself. ``tests/coupon/test_models.py`` checks the routing
against the server. Creating an operator class needs a superuser (true for the embedded server
and for the owner role of a self-managed one).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SHARDS = 16
_COMBINE = 0x49A0F4DD15E5A8E3  # PostgreSQL's hash_combine64 constant (src/include/common/hashfn.h)


def upgrade() -> None:
    op.create_table(
        "coupon_templates",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", sa.BigInteger, nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(2000), nullable=False, server_default=""),
        sa.Column("rule", postgresql.JSONB, nullable=False),
        sa.Column("validity", postgresql.JSONB, nullable=False),
        sa.Column("total_count", sa.Integer, nullable=False),
        sa.Column("per_user_limit", sa.Integer, nullable=False),
        sa.Column("distribution", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("assigned", sa.Integer, nullable=False, server_default="0"),
        sa.Column("used", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_by", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # The counters are exact: the database refuses any update that would oversell or underflow.
        sa.CheckConstraint("total_count BETWEEN 1 AND 10000000", name="ck_coupon_templates_total_count"),
        sa.CheckConstraint("per_user_limit >= 1", name="ck_coupon_templates_per_user_limit"),
        sa.CheckConstraint("distribution IN ('claim', 'task_reward')", name="ck_coupon_templates_distribution"),
        sa.CheckConstraint("status IN ('active', 'paused')", name="ck_coupon_templates_status"),
        sa.CheckConstraint("assigned BETWEEN 0 AND total_count", name="ck_coupon_templates_assigned"),
        sa.CheckConstraint("used BETWEEN 0 AND assigned", name="ck_coupon_templates_used"),
    )
    op.create_index("ix_coupon_templates_merchant_id", "coupon_templates", ["merchant_id", "id"])

    op.execute(
        "CREATE FUNCTION coupon_user_shard_hash(value bigint, seed bigint) RETURNS bigint "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        f"AS 'SELECT value - {_COMBINE}'"
    )
    op.execute(
        "CREATE OPERATOR CLASS coupon_user_shard_ops FOR TYPE bigint USING hash AS "
        "OPERATOR 1 = (bigint, bigint), FUNCTION 2 coupon_user_shard_hash(bigint, bigint)"
    )
    # Cross-type members, so that ``user_id = 42`` (an integer literal) prunes partitions as well.
    op.execute(
        "CREATE FUNCTION coupon_user_shard_hash(value integer, seed bigint) RETURNS bigint "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        f"AS 'SELECT value::bigint - {_COMBINE}'"
    )
    op.execute(
        "ALTER OPERATOR FAMILY coupon_user_shard_ops USING hash ADD "
        "OPERATOR 1 = (bigint, integer), OPERATOR 1 = (integer, bigint), "
        "FUNCTION 2 (integer) coupon_user_shard_hash(integer, bigint)"
    )
    op.create_table(
        "user_coupons",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("code", sa.String(19), nullable=False),
        sa.Column("template_id", sa.BigInteger, sa.ForeignKey("coupon_templates.id"), nullable=False),
        sa.Column("merchant_id", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source_kind", sa.String(8), nullable=False),
        sa.Column("source_ref", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_by_merchant", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("user_id", "id", name="pk_user_coupons"),
        sa.CheckConstraint("user_id > 0", name="ck_user_coupons_user_id"),
        sa.CheckConstraint("status IN ('unused', 'used', 'expired', 'frozen')", name="ck_user_coupons_status"),
        sa.CheckConstraint("source_kind IN ('claim', 'flash', 'task')", name="ck_user_coupons_source_kind"),
        sa.CheckConstraint("valid_to > valid_from", name="ck_user_coupons_window"),
        postgresql_partition_by="HASH (user_id coupon_user_shard_ops)",
    )
    for n in range(SHARDS):
        op.execute(
            f"CREATE TABLE user_coupons_p{n} PARTITION OF user_coupons "
            f"FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {n})"
        )
        # The code carries the shard, so unique within a partition is unique everywhere.
        op.execute(f"CREATE UNIQUE INDEX uq_user_coupons_p{n}_code ON user_coupons_p{n} (code)")
    # Partitioned indexes (one per partition, created by PostgreSQL).
    op.create_index("ix_user_coupons_id", "user_coupons", ["id"])
    op.create_index("ix_user_coupons_user_template", "user_coupons", ["user_id", "template_id"])
    op.create_index(
        "ix_user_coupons_unused_valid_to",
        "user_coupons",
        ["valid_to"],
        postgresql_where=sa.text("status = 'unused'"),
    )
    # One coupon per completed run, whatever happens to the event that announced it.
    op.create_index(
        "uq_user_coupons_task_run",
        "user_coupons",
        ["user_id", "source_ref"],
        unique=True,
        postgresql_where=sa.text("source_kind = 'task'"),
    )

    op.create_table(
        "redemptions",
        sa.Column("transaction_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("merchant_id", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("coupon_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("template_id", sa.BigInteger, nullable=False),
        sa.Column("code", sa.String(19), nullable=False),
        sa.Column("order_amount_cents", sa.BigInteger, nullable=False),
        sa.Column("discount_cents", sa.BigInteger, nullable=False),
        sa.Column("payable_cents", sa.BigInteger, nullable=False),
        sa.Column("redeemed_by", sa.BigInteger, nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reversed_by", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("merchant_id", "idempotency_key", name="uq_redemptions_merchant_key"),
        sa.CheckConstraint(
            "discount_cents >= 0 AND discount_cents <= order_amount_cents", name="ck_redemptions_discount"
        ),
    )
    op.create_index("ix_redemptions_coupon_id", "redemptions", ["coupon_id"])

    op.create_table(
        "coupon_audit",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("coupon_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("template_id", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index("ix_coupon_audit_coupon_id", "coupon_audit", ["coupon_id", "at"])

    op.create_table(
        "reward_failures",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("runner_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("reward_failures")
    op.drop_table("coupon_audit")
    op.drop_table("redemptions")
    op.drop_table("user_coupons")  # drops its partitions too
    op.execute("DROP OPERATOR FAMILY coupon_user_shard_ops USING hash")
    op.execute("DROP FUNCTION coupon_user_shard_hash(integer, bigint)")
    op.execute("DROP FUNCTION coupon_user_shard_hash(bigint, bigint)")
    op.drop_table("coupon_templates")
