"""Settlement hint: which of a runner's coupons fit an order at a merchant, best saving first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coupon import domain as coupon_domain
from coupon.service import _templates, _wallet
from coupon.service._records import CouponRecord, TemplateRecord
from picool.errors import InvalidRequest
from picool.kernel import Kernel


@dataclass(frozen=True, slots=True)
class CouponQuote:
    """A usable coupon and what it takes off the order (a :class:`coupon.domain.Quote`)."""

    coupon: CouponRecord
    discount_cents: int
    payable_cents: int
    description: str

    @property
    def valid_to(self) -> datetime:
        """When the coupon stops being usable (ties between equal discounts go to the sooner)."""
        return self.coupon.valid_to


def order_amount(items: Sequence[coupon_domain.OrderItem]) -> int:
    """The order's total in cents; ``InvalidRequest`` beyond what any rule can name."""
    total = sum(i.price_cents * i.qty for i in items)
    if total > coupon_domain.MAX_CENTS:
        raise InvalidRequest(f"items: the order total must not exceed {coupon_domain.MAX_CENTS} cents")
    return total


async def quote(
    kernel: Kernel, user_id: int, merchant_id: int, items: Sequence[coupon_domain.OrderItem], now: datetime
) -> tuple[int, list[CouponQuote]]:
    """The order total and the runner's coupons usable on it at ``merchant_id`` now (the merchant's own
    and platform coupons, unused, inside their window, giving a discount), best saving first."""
    amount = order_amount(items)
    coupons = await _wallet.all_unused(kernel, user_id, now)
    templates: dict[int, TemplateRecord | None] = {}
    quotes: list[CouponQuote] = []
    for c in coupons:
        if c.valid_from > now or (c.merchant_id is not None and c.merchant_id != merchant_id):
            continue
        if c.template_id not in templates:
            templates[c.template_id] = await _templates.get_template(kernel, c.template_id)
        template = templates[c.template_id]
        if template is None:
            continue
        rule = template.parsed_rule()
        discount = coupon_domain.discount_for(rule, amount, items)
        if discount > 0:
            quotes.append(CouponQuote(c, discount, amount - discount, coupon_domain.describe_rule(rule)))
    return amount, coupon_domain.best_first(quotes)
