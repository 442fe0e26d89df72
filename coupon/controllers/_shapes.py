"""The API shapes (:mod:`coupon.schemas`) of what the coupon services return, and the order items of a
request as the domain takes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from coupon import domain as coupon_domain
from coupon import schemas
from coupon import service as coupon_service


def id_str(value: int | None) -> str | None:
    """An optional id as the API shows it."""
    return None if value is None else str(value)


def template_out(t: coupon_service.TemplateRecord) -> schemas.Template:
    """The API shape of a template."""
    return schemas.Template(
        id=str(t.id),
        merchant_id=id_str(t.merchant_id),
        name=t.name,
        description=t.description,
        rule=t.rule,
        validity=t.validity,
        total_count=t.total_count,
        per_user_limit=t.per_user_limit,
        distribution=t.distribution,
        status=t.status,
        created_at=t.created_at,
        rule_text=coupon_domain.describe_rule(t.parsed_rule()),
    )


def coupon_out(c: coupon_service.CouponRecord, now: datetime) -> schemas.Coupon:
    """The API shape of a coupon, with the status it shows at ``now``."""
    return schemas.Coupon(
        id=str(c.id),
        code=c.code,
        template_id=str(c.template_id),
        merchant_id=id_str(c.merchant_id),
        user_id=str(c.user_id),
        status=c.effective_status(now),
        source=schemas.Source(kind=c.source_kind, ref=c.source_ref),
        received_at=c.received_at,
        valid_from=c.valid_from,
        valid_to=c.valid_to,
        used_at=c.used_at,
    )


def redemption_out(r: coupon_service.RedemptionResult) -> schemas.Redemption:
    """The API shape of a redemption answer."""
    return schemas.Redemption(
        transaction_id=str(r.transaction_id),
        coupon_id=str(r.coupon_id),
        discount_cents=r.discount_cents,
        payable_cents=r.payable_cents,
        redeemed_at=r.redeemed_at,
    )


def order_items(items: list[schemas.OrderItem] | None) -> list[coupon_domain.OrderItem] | None:
    """The order items of a request as the domain takes them (None when the request has none)."""
    if items is None:
        return None
    return [coupon_domain.OrderItem(i.sku, i.category, i.price_cents, i.qty) for i in items]


def flash_out(s: coupon_service.FlashSessionRecord, remaining: int) -> schemas.FlashSession:
    """The API shape of a flash session."""
    return schemas.FlashSession(
        id=str(s.id),
        template_id=str(s.template_id),
        starts_at=s.starts_at,
        ends_at=s.ends_at,
        stock=s.stock,
        remaining=remaining,
    )


def denial_out(row: Any) -> schemas.DenylistEntry:
    """The API shape of a deny list entry."""
    return schemas.DenylistEntry(
        user_id=str(row.user_id), reason=row.reason, created_by=str(row.created_by), created_at=row.created_at
    )
