"""Lifecycle moves other than redemption: freeze and unfreeze (operators), the expiry sweep, reading one coupon."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, tuple_, update

from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _coupons, _wallet
from coupon.service._records import Actor, CouponRecord, system_actor
from picool.errors import Conflict, Forbidden, NotFound
from picool.kernel import Kernel

log = logging.getLogger("coupon.lifecycle")

UNUSED = coupon_domain.CouponStatus.UNUSED.value
FROZEN = coupon_domain.CouponStatus.FROZEN.value
EXPIRED = coupon_domain.CouponStatus.EXPIRED.value
EXPIRY_BATCH = 1000
_REFUSALS = {"used": "already_used", "expired": "expired", "frozen": "frozen"}


async def get_coupon(kernel: Kernel, actor: Actor, coupon_id: int) -> CouponRecord:
    """One coupon, for its owner or an operator (``NotFound`` / ``Forbidden`` otherwise)."""
    async with kernel.sessionmaker() as session:
        coupon = await _coupons.find_by_id(session, coupon_id)
    if coupon is None:
        raise NotFound("There is no coupon with this id.")
    if actor.role != "operator" and not (actor.role == "runner" and actor.user_id == coupon.user_id):
        raise Forbidden("Only the coupon's owner or an operator may see it.")
    return coupon


async def set_frozen(
    kernel: Kernel, actor: Actor, coupon_id: int, *, frozen: bool, reason: str, now: datetime
) -> CouponRecord:
    """Freeze (``unused → frozen``) or unfreeze (``frozen → unused``) a coupon; operators only.

    Asking for the status a coupon already has changes nothing and answers with it. A coupon whose
    window has closed cannot be frozen (409 ``expired``); a frozen one can always be unfrozen, and
    then reads as expired if its window closed meanwhile. Used or expired coupons answer 409 with
    ``already_used`` / ``expired``.
    """
    if actor.role != "operator":
        raise Forbidden("Only operators freeze or unfreeze coupons.")
    target = FROZEN if frozen else UNUSED
    async with kernel.sessionmaker() as session, session.begin():
        coupon = await _coupons.find_by_id(session, coupon_id, lock=True)
        if coupon is None:
            raise NotFound("There is no coupon with this id.")
        if coupon.status == target:
            return coupon
        # Freezing looks at the status shown now (a closed window reads expired); unfreezing only ever
        # starts from frozen (``used → unused`` is a legal move too, but it is a reversal, not this).
        shown = coupon.effective_status(now) if frozen else coupon.status
        if shown != (UNUSED if frozen else FROZEN):
            raise Conflict(
                f"This coupon is {shown}; it cannot be {'frozen' if frozen else 'unfrozen'}.",
                code=_REFUSALS.get(shown, "invalid_transition"),
            )
        table = _coupons.USER_COUPONS
        moved = (
            await session.execute(
                update(table)
                .where(table.c.user_id == coupon.user_id, table.c.id == coupon.id, table.c.status == coupon.status)
                .values(status=target, updated_at=now)
                .returning(*_coupons.columns(table))
            )
        ).one()
        changed = _coupons.to_record(moved)
        why = reason or ("frozen by an operator" if frozen else "unfrozen by an operator")
        await _coupons.audit(
            session, [changed], actor=actor, from_status=coupon.status, to_status=target, reason=why, at=now
        )
        _coupons.announce(
            session, kernel.settings, [changed], from_status=coupon.status, to_status=target, reason=why, at=now
        )
    await _wallet.invalidate_wallets(kernel, [changed.user_id])
    return changed


async def expire_due(kernel: Kernel, now: datetime, batch: int = EXPIRY_BATCH) -> int:
    """Write ``expired`` on every unused coupon whose window closed by ``now``; returns how many.

    Works partition by partition in batches of ``batch`` rows (``FOR UPDATE SKIP LOCKED``, so a
    redemption or a second sweeper is never waited for), one transaction per batch with its audit
    rows and events, and invalidates the wallets it touched after each commit.
    """
    actor = system_actor("expiry")
    total = 0
    for shard in range(models.SHARDS):
        table = models.partition(shard)
        while True:
            due = (
                select(table.c.user_id, table.c.id)
                .where(table.c.status == UNUSED, table.c.valid_to <= now)
                .order_by(table.c.valid_to)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
            async with kernel.sessionmaker() as session, session.begin():
                rows = (
                    await session.execute(
                        update(table)
                        .where(tuple_(table.c.user_id, table.c.id).in_(due), table.c.status == UNUSED)
                        .values(status=EXPIRED, updated_at=now)
                        .returning(*_coupons.columns(table))
                    )
                ).all()
                expired = [_coupons.to_record(r) for r in rows]
                await _coupons.audit(
                    session,
                    expired,
                    actor=actor,
                    from_status=UNUSED,
                    to_status=EXPIRED,
                    reason="validity ended",
                    at=now,
                )
                _coupons.announce(
                    session,
                    kernel.settings,
                    expired,
                    from_status=UNUSED,
                    to_status=EXPIRED,
                    reason="validity ended",
                    at=now,
                )
            if expired:
                await _wallet.invalidate_wallets(kernel, [c.user_id for c in expired])
            total += len(expired)
            if len(expired) < batch:
                break
    if total:
        log.info("expired %d coupons", total)
    return total
