"""Row access shared by the coupon use cases: one-partition lookups, the audit trail, change events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Row, Select, Table, any_, bindparam, insert, select, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from coupon import codes as coupon_codes
from coupon import models
from coupon.service._records import Actor, CouponRecord
from picool import events, ids, outbox
from picool.settings import Settings

COLUMNS = (
    "id",
    "user_id",
    "code",
    "template_id",
    "merchant_id",
    "status",
    "source_kind",
    "source_ref",
    "received_at",
    "valid_from",
    "valid_to",
    "used_at",
)


def columns(table: Table) -> list[Any]:
    """The columns a :class:`CouponRecord` is made of, from ``table`` (the parent or a partition)."""
    return [table.c[name] for name in COLUMNS]


def to_record(row: Row[Any]) -> CouponRecord:
    """A record from a row selected or returned with :func:`columns`."""
    m = row._mapping
    return CouponRecord(**{name: m[name] for name in COLUMNS})


USER_COUPONS = cast(Table, models.UserCoupon.__table__)
"""The parent table. Queries that name ``user_id`` go here: PostgreSQL prunes them to the user's one
partition (``tests/coupon/test_models.py`` shows the plans), just as a distributed table would route
them by the same key."""


def code_query(canonical: str, shard: int) -> Select[Any]:
    """The lookup of a code in the one partition its shard names (no user id to prune on)."""
    table = models.partition(shard)
    return select(*columns(table)).where(table.c.code == canonical)


async def find_by_code(session: AsyncSession, code: str, *, lock: bool = False) -> CouponRecord | None:
    """The coupon with ``code`` (as a person typed it), looked up in the one partition its shard names.

    None for text that is not a well-formed code (a typo caught by the check symbol), a shard that
    holds no coupons, or a well-formed code nobody has.
    """
    try:
        parsed = coupon_codes.parse_code(code)
    except coupon_codes.CodeError:
        return None
    if parsed.shard >= models.SHARDS:
        return None
    stmt = code_query(parsed.canonical, parsed.shard)
    if lock:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    return None if row is None else to_record(row)


async def find_by_id(session: AsyncSession, coupon_id: int, *, lock: bool = False) -> CouponRecord | None:
    """The coupon with ``coupon_id``, looked up in the one partition the id's shard names."""
    shard = ids.shard_of(coupon_id)
    if shard >= models.SHARDS:
        return None
    table = models.partition(shard)
    stmt = select(*columns(table)).where(table.c.id == coupon_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    return None if row is None else to_record(row)


async def find_of_user(session: AsyncSession, user_id: int, coupon_id: int) -> CouponRecord | None:
    """The coupon ``coupon_id`` of ``user_id`` (primary-key lookup in one partition)."""
    table = USER_COUPONS
    stmt = select(*columns(table)).where(table.c.user_id == user_id, table.c.id == coupon_id)
    row = (await session.execute(stmt)).first()
    return None if row is None else to_record(row)


async def stored_of(conn: AsyncConnection | AsyncSession, pairs: Sequence[tuple[int, int]]) -> set[int]:
    """Which coupon ids of ``(user_id, coupon_id)`` pairs PostgreSQL has.

    Each id is looked up in the one partition its shard names (an index probe per id, in one statement),
    so the cost follows the number of pairs, not the size of the table. (A row-value ``IN`` over the
    parent table is not indexable: PostgreSQL scanned every partition for it, in parallel, testing each
    row against every pair.) An id whose shard holds no partition is not stored.
    """
    wanted = set(pairs)
    by_shard: dict[int, list[int]] = {}
    for _user_id, coupon_id in wanted:
        shard = ids.shard_of(coupon_id)
        if shard < models.SHARDS:
            by_shard.setdefault(shard, []).append(coupon_id)
    if not by_shard:
        return set()
    parts = []
    for shard, coupon_ids in sorted(by_shard.items()):
        table = models.partition(shard)
        param = bindparam(f"ids_{shard}", coupon_ids, type_=ARRAY(BigInteger))
        parts.append(select(table.c.user_id, table.c.id).where(table.c.id == any_(param)))
    rows = (await conn.execute(parts[0] if len(parts) == 1 else union_all(*parts))).all()
    return {row.id for row in rows if (row.user_id, row.id) in wanted}


async def audit(
    session: AsyncSession,
    coupons: Sequence[CouponRecord],
    *,
    actor: Actor,
    from_status: str | None,
    to_status: str,
    reason: str,
    at: datetime,
) -> None:
    """Write one audit row per coupon for a transition ``from_status`` → ``to_status``."""
    if not coupons:
        return
    await session.execute(
        insert(models.CouponAudit),
        [
            {
                "coupon_id": c.id,
                "user_id": c.user_id,
                "template_id": c.template_id,
                "actor": actor.label[:64],
                "at": at,
                "from_status": from_status,
                "to_status": to_status,
                "reason": reason[:200],
            }
            for c in coupons
        ],
    )


def announce(
    session: AsyncSession,
    settings: Settings,
    coupons: Sequence[CouponRecord],
    *,
    from_status: str,
    to_status: str,
    reason: str,
    at: datetime,
) -> None:
    """Stage a ``CouponChangedV1`` per coupon in the caller's transaction (keyed by user, as DESIGN asks)."""
    for c in coupons:
        event = events.CouponChangedV1(
            coupon_id=str(c.id),
            user_id=str(c.user_id),
            template_id=str(c.template_id),
            from_status=from_status,
            to_status=to_status,
            at=at,
            reason=reason,
        )
        outbox.add_event(session, settings, events.TOPIC_COUPON_EVENTS, event, key=str(c.user_id))
