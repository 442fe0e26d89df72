"""Claim pools: a ``claim`` template's stock, per-user counts and flash sessions, kept in Redis.

A pool is made when its template is created (:func:`create_pool`). Should Redis ever lose it (all of a
template's keys share one slot, so they go together), the first claim rebuilds it from PostgreSQL
(:func:`ensure_pool`) under a short lock: stock = ``total_count - assigned`` minus what flash sessions
still hold, each session's stock = its stock minus the coupons it already gave, the per-user counts
from the stored coupons. That rebuild is right when nothing accepted was in flight at the moment of the
loss; Redis runs with an append-only file so that the loss itself is the rare case.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from coupon import domain as coupon_domain
from coupon import models
from coupon import store as coupon_store
from coupon.service._records import TemplateRecord
from picool.errors import ServiceUnavailable
from picool.kernel import Kernel

STORE_SERVICE = "coupon.claim-store"


def claim_store(kernel: Kernel) -> coupon_store.ClaimStore:
    """The process's claim store (made on first use)."""
    store = kernel.services.get(STORE_SERVICE)
    if not isinstance(store, coupon_store.ClaimStore):
        store = coupon_store.ClaimStore(kernel.redis, kernel.scripts)
        kernel.services[STORE_SERVICE] = store
    return store


def ms(at: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return int(at.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(value: int) -> datetime:
    """An epoch-milliseconds instant as an aware UTC datetime, exactly (integer arithmetic, no float)."""
    return _EPOCH + timedelta(milliseconds=value)


def claim_window_ms(template: TemplateRecord) -> tuple[int, int]:
    """When template claims are open: from creation until a fixed validity ends (a coupon claimed later
    would be born expired); always for a relative validity. Claiming before a fixed window starts is
    allowed: the coupon waits in the wallet until it becomes valid."""
    validity = template.parsed_validity()
    if isinstance(validity, coupon_domain.FixedValidity):
        return 0, ms(validity.ends_at)
    return 0, coupon_store.NEVER_MS


def is_claimable(template: TemplateRecord) -> bool:
    """Whether runners may claim this template at all (its distribution and status)."""
    return template.distribution == "claim" and template.status == "active"


async def create_pool(kernel: Kernel, template: TemplateRecord) -> None:
    """Put a newly created ``claim`` template's pool in Redis (full stock, nobody has claimed yet)."""
    if not is_claimable(template):
        return
    start, end = claim_window_ms(template)
    spec = coupon_store.PoolSpec(
        limit=template.per_user_limit,
        start_ms=start,
        end_ms=end,
        stock=template.total_count,
        total=template.total_count,
    )
    await claim_store(kernel).init_pool(template.id, spec)


async def _rebuild(kernel: Kernel, template: TemplateRecord) -> None:
    store = claim_store(kernel)
    uc = models.UserCoupon
    async with kernel.sessionmaker() as session:
        assigned = (
            await session.execute(select(models.CouponTemplate.assigned).where(models.CouponTemplate.id == template.id))
        ).scalar_one()
        sessions = (
            await session.execute(select(models.FlashSession).where(models.FlashSession.template_id == template.id))
        ).scalars()
        sessions_list = list(sessions)
        given = dict(
            (
                await session.execute(
                    select(uc.source_ref, func.count())
                    .where(uc.template_id == template.id, uc.source_kind == "flash")
                    .group_by(uc.source_ref)
                )
            ).all()
        )
        users = dict(
            (
                await session.execute(
                    select(uc.user_id, func.count()).where(uc.template_id == template.id).group_by(uc.user_id)
                )
            ).all()
        )
    specs = [
        coupon_store.SessionSpec(
            session_id=s.id,
            start_ms=ms(s.starts_at),
            end_ms=ms(s.ends_at),
            stock=max(0, s.stock - int(given.get(str(s.id), 0))),
            initial=s.stock,
        )
        for s in sessions_list
    ]
    held_by_sessions = sum(s.stock for s in specs)
    start, end = claim_window_ms(template)
    spec = coupon_store.PoolSpec(
        limit=template.per_user_limit,
        start_ms=start,
        end_ms=end,
        stock=max(0, template.total_count - int(assigned) - held_by_sessions),
        total=template.total_count,
    )
    if await store.load_users(template.id, {int(u): int(n) for u, n in users.items()}):
        await store.init_pool(template.id, spec, specs)


async def ensure_pool(kernel: Kernel, template: TemplateRecord, *, wait_s: float = 5.0) -> None:
    """Make sure the template's pool is in Redis, rebuilding it from PostgreSQL if it was lost.

    One process rebuilds (a Redis lock); the others wait for it. ``ServiceUnavailable`` when the pool
    is still missing after ``wait_s``.
    """
    store = claim_store(kernel)
    if not is_claimable(template) or await store.pool_exists(template.id):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        if await store.lock_rebuild(template.id):
            try:
                if not await store.pool_exists(template.id):
                    await _rebuild(kernel, template)
            finally:
                await store.unlock_rebuild(template.id)
            return
        await asyncio.sleep(0.05)
        if await store.pool_exists(template.id):
            return
    raise ServiceUnavailable("The coupon pool is being rebuilt; try again in a moment.")
