"""Coupon tables (the schema itself is created by migrations/versions/2026_11_22_0004_coupon.py).

User coupons are hash-partitioned by ``user_id`` into :data:`SHARDS` partitions whose number is
``user_id % SHARDS`` (see the migration for how PostgreSQL is told so). :func:`partition` gives
the table of one partition, for the queries that know a shard but not a user (a code at the till,
a coupon id, the expiry sweep).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from picool.db import Base

SHARDS = 16
"""How many partitions user coupons are spread over; a user's shard is ``user_id % SHARDS``."""


def shard_of_user(user_id: int) -> int:
    """The partition (and the shard carried by coupon ids and codes) of ``user_id``'s coupons."""
    return user_id % SHARDS


class CouponTemplate(Base):
    """A batch of coupons: its rule, validity, stock and exact counters."""

    __tablename__ = "coupon_templates"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(2000), server_default="")
    rule: Mapped[dict[str, Any]] = mapped_column(JSONB)
    validity: Mapped[dict[str, Any]] = mapped_column(JSONB)
    total_count: Mapped[int] = mapped_column(Integer)
    per_user_limit: Mapped[int] = mapped_column(Integer)
    distribution: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    assigned: Mapped[int] = mapped_column(Integer, server_default="0")
    used: Mapped[int] = mapped_column(Integer, server_default="0")
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("assigned BETWEEN 0 AND total_count", name="assigned"),
        CheckConstraint("used BETWEEN 0 AND assigned", name="used"),
    )


class UserCoupon(Base):
    """One coupon in one runner's wallet (the parent of the 16 partitions)."""

    __tablename__ = "user_coupons"

    user_id: Mapped[int] = mapped_column(BigInteger)
    id: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str] = mapped_column(String(19))
    template_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("coupon_templates.id"))
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    source_kind: Mapped[str] = mapped_column(String(8))
    source_ref: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    redeemed_by_merchant: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        PrimaryKeyConstraint("user_id", "id"),
        {"postgresql_partition_by": "HASH (user_id coupon_user_shard_ops)"},
    )


class Redemption(Base):
    """A coupon redeemed at a merchant's till; the stored answer of its idempotency key."""

    __tablename__ = "redemptions"

    transaction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    coupon_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    template_id: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str] = mapped_column(String(19))
    order_amount_cents: Mapped[int] = mapped_column(BigInteger)
    discount_cents: Mapped[int] = mapped_column(BigInteger)
    payable_cents: Mapped[int] = mapped_column(BigInteger)
    redeemed_by: Mapped[int] = mapped_column(BigInteger)
    redeemed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reversed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reversed_by: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("merchant_id", "idempotency_key", name="uq_redemptions_merchant_key"),)


class CouponAudit(Base):
    """One status transition of one coupon: who, when, from, to, why."""

    __tablename__ = "coupon_audit"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    coupon_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    template_id: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200), server_default="")


class RewardFailure(Base):
    """Why a completed run did not earn its coupon (the run keeps its result)."""

    __tablename__ = "reward_failures"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    template_id: Mapped[str] = mapped_column(String(64))
    runner_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(500), server_default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FlashSession(Base):
    """A flash sale of a platform template: a window and a stock taken out of the template's pool."""

    __tablename__ = "flash_sessions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    template_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("coupon_templates.id"))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stock: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ClaimDenial(Base):
    """An account operators barred from claiming coupons (Redis holds the copy the claim path reads)."""

    __tablename__ = "claim_denylist"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(String(200), server_default="")
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Partition tables live in their own MetaData: they are queried, never created from here.
_partition_metadata = MetaData()
_PARTITIONS: tuple[Table, ...] = tuple(
    UserCoupon.__table__.to_metadata(_partition_metadata, name=f"user_coupons_p{n}")  # type: ignore[attr-defined]
    for n in range(SHARDS)
)


def partition(shard: int) -> Table:
    """The table of partition ``shard`` (0..SHARDS-1) of ``user_coupons``; ``ValueError`` otherwise."""
    if not 0 <= shard < SHARDS:
        raise ValueError(f"shard must be in 0..{SHARDS - 1}")
    return _PARTITIONS[shard]
