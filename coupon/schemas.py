"""Request and response bodies of the coupon API (msgspec Structs). Ids are strings, money int cents."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from coupon import domain as coupon_domain

MAX_CENTS = coupon_domain.MAX_CENTS
Cents = Annotated[int, Meta(ge=0, le=MAX_CENTS)]
IdStr = Annotated[str, Meta(min_length=1, max_length=20, pattern=r"^[0-9]+$")]


# --------------------------------------------------------------------------- templates


class TemplateCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new coupon batch. ``rule`` and ``validity`` are checked by :mod:`coupon.domain`, which names
    the failing field (``rule.threshold_cents``...) in the 400 problem."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    rule: dict[str, Any]
    validity: dict[str, Any]
    total_count: Annotated[int, Meta(ge=1, le=10_000_000)]
    per_user_limit: Annotated[int, Meta(ge=1, le=10_000_000)]
    distribution: Literal["claim", "task_reward"]
    description: Annotated[str, Meta(max_length=2000)] | None = None


class Template(msgspec.Struct, kw_only=True):
    """A coupon batch as the API shows it (``merchant_id`` null for platform coupons)."""

    id: str
    merchant_id: str | None
    name: str
    description: str
    rule: dict[str, Any]
    validity: dict[str, Any]
    total_count: int
    per_user_limit: int
    distribution: str
    status: str
    created_at: datetime
    # The rule as one English sentence ("20.00 off orders from 100.00"), so clients need not re-implement it.
    rule_text: str = ""


class TemplateList(msgspec.Struct, kw_only=True):
    """A page of templates, newest first."""

    items: list[Template]
    next_cursor: str | None = None


class TemplateStats(msgspec.Struct, kw_only=True):
    """Exact counters of a batch."""

    template_id: str
    total: int
    assigned: int
    used: int
    remaining: int


# --------------------------------------------------------------------------- coupons


class Source(msgspec.Struct, kw_only=True):
    """Where a coupon came from: a claim, a flash session or a run (``ref`` is that id)."""

    kind: str
    ref: str


class Coupon(msgspec.Struct, kw_only=True):
    """One coupon in a runner's wallet; ``status`` is as of the moment of the answer."""

    id: str
    code: str
    template_id: str
    merchant_id: str | None
    user_id: str
    status: str
    source: Source
    received_at: datetime
    valid_from: datetime
    valid_to: datetime
    used_at: datetime | None


class CouponList(msgspec.Struct, kw_only=True):
    """A page of coupons, newest first."""

    items: list[Coupon]
    next_cursor: str | None = None


class StatusChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An operator's optional reason for a freeze or unfreeze (kept in the audit trail)."""

    reason: Annotated[str, Meta(max_length=200)] = ""


# --------------------------------------------------------------------------- quotes


class OrderItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One order line."""

    sku: Annotated[str, Meta(min_length=1, max_length=64)]
    category: Annotated[str, Meta(min_length=1, max_length=64)]
    price_cents: Cents
    qty: Annotated[int, Meta(ge=1, le=1_000_000)] = 1


class QuoteRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An order at a merchant, to find which of the runner's coupons fit it best."""

    merchant_id: IdStr
    items: Annotated[list[OrderItem], Meta(min_length=1, max_length=500)]


class QuoteItem(msgspec.Struct, kw_only=True):
    """One usable coupon and what it would take off the order."""

    coupon: Coupon
    discount_cents: int
    payable_cents: int
    description: str


class QuoteList(msgspec.Struct, kw_only=True):
    """The runner's usable coupons for an order, best saving first."""

    order_amount_cents: int
    items: list[QuoteItem]
    next_cursor: str | None = None


# --------------------------------------------------------------------------- redemptions


class RedemptionCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A code presented at the till. ``items`` (optional) lets scoped coupons see what is in the order."""

    code: Annotated[str, Meta(min_length=1, max_length=64)]
    order_amount_cents: Cents
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    items: Annotated[list[OrderItem], Meta(max_length=500)] | None = None


class RedemptionPreviewRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A code and an order, to see what redeeming would take off before confirming."""

    code: Annotated[str, Meta(min_length=1, max_length=64)]
    order_amount_cents: Cents
    items: Annotated[list[OrderItem], Meta(max_length=500)] | None = None


class RedemptionPreview(msgspec.Struct, kw_only=True):
    """What a redemption of ``code`` for this order would give now; nothing is redeemed."""

    code: str
    coupon_id: str
    template_id: str
    template_name: str
    rule_text: str
    order_amount_cents: int
    discount_cents: int
    payable_cents: int
    valid_to: datetime


class Redemption(msgspec.Struct, kw_only=True):
    """The answer to a redemption (the same for every retry with its idempotency key)."""

    transaction_id: str
    coupon_id: str
    discount_cents: int
    payable_cents: int
    redeemed_at: datetime


# --------------------------------------------------------------------------- flash sessions and claims

AwareTime = Annotated[datetime, Meta(tz=True)]


class FlashSessionCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A flash session of a platform ``claim`` template: its window (times with a zone) and its stock."""

    template_id: IdStr
    starts_at: AwareTime
    ends_at: AwareTime
    stock: Annotated[int, Meta(ge=1, le=10_000_000)]


class FlashSession(msgspec.Struct, kw_only=True):
    """A flash session; ``remaining`` is at most a second old."""

    id: str
    template_id: str
    starts_at: datetime
    ends_at: datetime
    stock: int
    remaining: int


class FlashSessionList(msgspec.Struct, kw_only=True):
    """The flash sessions of one UTC day, by start time."""

    items: list[FlashSession]
    next_cursor: str | None = None


class DenylistCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An account to bar from claiming, and why."""

    user_id: IdStr
    reason: Annotated[str, Meta(max_length=200)] = ""


class DenylistEntry(msgspec.Struct, kw_only=True):
    """An account barred from claiming."""

    user_id: str
    reason: str
    created_by: str
    created_at: datetime


class DenylistList(msgspec.Struct, kw_only=True):
    """The barred accounts, newest first."""

    items: list[DenylistEntry]
    next_cursor: str | None = None
