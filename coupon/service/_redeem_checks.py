"""What a redemption checks before it writes (the caller's merchant, the code, the coupon's status, window and
threshold), and the preview that makes every check without redeeming."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coupon import codes as coupon_codes
from coupon import domain as coupon_domain
from coupon.service import _coupons, _templates
from coupon.service._records import Actor, CouponRecord, TemplateRecord
from picool.errors import Conflict, Forbidden, InvalidRequest, NotFound
from picool.kernel import Kernel

USED = coupon_domain.CouponStatus.USED.value
UNUSED = coupon_domain.CouponStatus.UNUSED.value


class UnknownCode(NotFound):
    """No coupon has this code (or the code has a typo its check symbol caught)."""

    code = "unknown_code"
    title = "Unknown coupon code"


def merchant_of(actor: Actor) -> int:
    """The merchant whose till ``actor`` works at; ``Forbidden`` for anyone but merchant staff."""
    if actor.role != "merchant" or actor.merchant_id is None:
        raise Forbidden("Only a merchant's staff redeem coupons.")
    return actor.merchant_id


def refusal(err: coupon_domain.TransitionError) -> Conflict:
    """The 409 problem saying why a coupon cannot be redeemed (its code is the transition's)."""
    messages = {
        "already_used": "This coupon has already been used.",
        "expired": "This coupon has expired.",
        "frozen": "This coupon is frozen.",
        "not_yet_valid": "This coupon is not valid yet.",
    }
    return Conflict(messages.get(err.code, str(err)), code=err.code)


def checked_code(code: str, order_amount_cents: int) -> coupon_codes.ParsedCode:
    """The parsed code of a till request; 400 for an amount out of range, ``UnknownCode`` for a code no
    coupon can have."""
    if not 0 <= order_amount_cents <= coupon_domain.MAX_CENTS:
        raise InvalidRequest(f"order_amount_cents: must be between 0 and {coupon_domain.MAX_CENTS}")
    try:
        return coupon_codes.parse_code(code)
    except coupon_codes.CodeError as err:
        raise UnknownCode(f"No coupon has this code ({err}).") from None


async def check_redeemable(
    kernel: Kernel,
    merchant_id: int,
    coupon: CouponRecord,
    order_amount_cents: int,
    *,
    items: Sequence[coupon_domain.OrderItem] | None,
    now: datetime,
) -> tuple[TemplateRecord, int]:
    """The coupon's template and the discount it gives this order at this merchant now; the same
    409 problems as a redemption when it cannot be redeemed."""
    if coupon.merchant_id is not None and coupon.merchant_id != merchant_id:
        raise Conflict("This coupon belongs to another merchant.", code="wrong_merchant")
    try:
        coupon_domain.ensure_redeemable(
            coupon_domain.CouponStatus(coupon.status), coupon.valid_from, coupon.valid_to, now
        )
    except coupon_domain.TransitionError as err:
        raise refusal(err) from None
    template = await _templates.require_template(kernel, coupon.template_id)
    rule = template.parsed_rule()
    base = coupon_domain.base_amount(rule, order_amount_cents, items)
    discount = coupon_domain.discount_for(rule, order_amount_cents, items)
    if not coupon_domain.threshold_met(rule, base) or discount == 0:
        raise Conflict(
            f"The order does not meet this coupon's conditions ({coupon_domain.describe_rule(rule)}).",
            code="threshold_not_met",
        )
    return template, discount


@dataclass(frozen=True, slots=True)
class RedemptionPreview:
    """What redeeming a code for an order would give at this moment (nothing was redeemed)."""

    coupon: CouponRecord
    template: TemplateRecord
    order_amount_cents: int
    discount_cents: int

    @property
    def payable_cents(self) -> int:
        """What the customer would pay."""
        return self.order_amount_cents - self.discount_cents


async def preview_redemption(
    kernel: Kernel,
    actor: Actor,
    code: str,
    order_amount_cents: int,
    *,
    items: Sequence[coupon_domain.OrderItem] | None,
    now: datetime,
) -> RedemptionPreview:
    """Every check of :func:`redeem` without redeeming: the till shows the discount before the cashier
    confirms. Raises exactly what :func:`redeem` would (except ``idempotency_conflict``)."""
    merchant_id = merchant_of(actor)
    parsed = checked_code(code, order_amount_cents)
    async with kernel.sessionmaker() as session:
        coupon = await _coupons.find_by_code(session, parsed.canonical)
    if coupon is None:
        raise UnknownCode("No coupon has this code.")
    template, discount = await check_redeemable(kernel, merchant_id, coupon, order_amount_cents, items=items, now=now)
    return RedemptionPreview(coupon, template, order_amount_cents, discount)
