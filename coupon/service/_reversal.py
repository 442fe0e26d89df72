"""Reversing a redemption (a refund): the coupon is unused again while its window is open."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from coupon import models
from coupon.service import _coupons, _wallet
from coupon.service._records import Actor, CouponRecord
from coupon.service._redeem_checks import UNUSED, USED, merchant_of
from picool.errors import Conflict, Forbidden, NotFound
from picool.kernel import Kernel


async def reverse(kernel: Kernel, actor: Actor, transaction_id: int, now: datetime) -> CouponRecord:
    """Undo a redemption (a refund): the coupon goes back to unused while its window is open.

    Only the redeeming merchant may (``Forbidden`` otherwise); an unknown transaction is
    ``NotFound``; a coupon whose window has closed stays used (409 ``expired``). Reversing twice
    is harmless: the second call answers with the coupon as it is.
    """
    merchant_id = merchant_of(actor)
    async with kernel.sessionmaker() as session, session.begin():
        redemption = (
            await session.execute(
                select(models.Redemption).where(models.Redemption.transaction_id == transaction_id).with_for_update()
            )
        ).scalar_one_or_none()
        if redemption is None:
            raise NotFound("There is no redemption with this transaction id.")
        if redemption.merchant_id != merchant_id:
            raise Forbidden("Only the merchant that redeemed this coupon may reverse the redemption.")
        if redemption.reversed_at is not None:
            current = await _coupons.find_of_user(session, redemption.user_id, redemption.coupon_id)
            assert current is not None
            return current
        table = _coupons.USER_COUPONS
        moved = (
            await session.execute(
                update(table)
                .where(
                    table.c.user_id == redemption.user_id,
                    table.c.id == redemption.coupon_id,
                    table.c.status == USED,
                    table.c.valid_to > now,
                )
                .values(status=UNUSED, used_at=None, redeemed_by_merchant=None, updated_at=now)
                .returning(*_coupons.columns(table))
            )
        ).first()
        if moved is None:
            current = await _coupons.find_of_user(session, redemption.user_id, redemption.coupon_id)
            assert current is not None
            if current.status == USED:
                raise Conflict("This coupon's validity has ended; the redemption cannot be reversed.", code="expired")
            raise Conflict(
                f"This coupon is {current.status}; the redemption cannot be reversed.", code="invalid_transition"
            )
        coupon = _coupons.to_record(moved)
        redemption.reversed_at = now
        redemption.reversed_by = actor.user_id
        await session.execute(
            update(models.CouponTemplate)
            .where(models.CouponTemplate.id == coupon.template_id)
            .values(used=models.CouponTemplate.used - 1)
        )
        reason = f"redemption {transaction_id} reversed"
        await _coupons.audit(session, [coupon], actor=actor, from_status=USED, to_status=UNUSED, reason=reason, at=now)
        _coupons.announce(session, kernel.settings, [coupon], from_status=USED, to_status=UNUSED, reason=reason, at=now)
    await _wallet.invalidate_wallets(kernel, [coupon.user_id])
    return coupon
