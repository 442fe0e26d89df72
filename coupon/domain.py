"""Pure coupon rules: rule types and their validation, rule math, validity windows and
the coupon lifecycle. No I/O and no framework: everything here is a function of its
arguments.

Money is integer cents; times are aware UTC datetimes.
"""

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeAlias, TypeVar

MAX_CENTS = 10**11
"""The largest amount of money (in cents) any rule may name: one billion units."""
MAX_SCOPE_IDS = 500
MAX_SCOPE_ID_LENGTH = 64
MAX_VALIDITY_DAYS = 3650

ScopeKind: TypeAlias = Literal["all", "category", "product"]
_SCOPE_KINDS: dict[str, ScopeKind] = {
    "all": "all",
    "category": "category",
    "product": "product",
}


class RuleError(ValueError):
    """A rule or validity is malformed. ``field`` names the offending field, dotted for
    nested ones (``"scope.ids[2]"``); ``str(error)`` is ``"<field>: <what is wrong>"``.
    """

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- checks


def _require_int(value: object, name: str, low: int, high: int) -> int:
    # bool is an int subclass; True must not mean one cent.
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleError(name, "must be an integer")
    if not low <= value <= high:
        raise RuleError(name, f"must be between {low} and {high}")
    return value


def _require_aware_utc(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise RuleError(name, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RuleError(name, "must be timezone-aware")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise RuleError(name, "is out of range") from None


# --------------------------------------------------------------------------- rule types


@dataclass(frozen=True, slots=True)
class Scope:
    """Which part of an order a rule applies to: the whole order (``all``, no ids), or
    the items whose category (``category``) or SKU (``product``) is one of ``ids``.
    Always valid once constructed: ids are 1..500 distinct non-empty strings of at most
    64 characters for category/product, and empty for all."""

    kind: ScopeKind = "all"
    ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in _SCOPE_KINDS:
            raise RuleError("scope.kind", "must be one of all, category, product")
        if not isinstance(self.ids, (tuple, list)):
            raise RuleError("scope.ids", "must be a list of strings")
        ids = tuple(self.ids)
        object.__setattr__(self, "ids", ids)
        if self.kind == "all":
            if ids:
                raise RuleError("scope.ids", "must be empty when kind is all")
            return
        if not ids:
            raise RuleError("scope.ids", f"must not be empty when kind is {self.kind}")
        if len(ids) > MAX_SCOPE_IDS:
            raise RuleError("scope.ids", f"must hold at most {MAX_SCOPE_IDS} ids")
        seen: set[str] = set()
        for i, item in enumerate(ids):
            name = f"scope.ids[{i}]"
            if not isinstance(item, str):
                raise RuleError(name, "must be a string")
            if not item or len(item) > MAX_SCOPE_ID_LENGTH:
                raise RuleError(name, f"must be 1 to {MAX_SCOPE_ID_LENGTH} characters")
            if item != item.strip():
                raise RuleError(name, "must not start or end with whitespace")
            if item in seen:
                raise RuleError(name, "is a duplicate")
            seen.add(item)


ALL = Scope()
"""The scope of a rule that applies to the whole order."""


@dataclass(frozen=True, slots=True)
class FullReduction:
    """Spend ``threshold_cents`` (within scope), get ``amount_cents`` off.
    Always valid once constructed: 0 < amount_cents < threshold_cents <= MAX_CENTS."""

    threshold_cents: int
    amount_cents: int
    scope: Scope = ALL

    def __post_init__(self) -> None:
        _require_int(self.threshold_cents, "threshold_cents", 2, MAX_CENTS)
        _require_int(self.amount_cents, "amount_cents", 1, MAX_CENTS)
        if self.amount_cents >= self.threshold_cents:
            raise RuleError("amount_cents", "must be less than threshold_cents")
        if not isinstance(self.scope, Scope):
            raise RuleError("scope", "must be a Scope")


@dataclass(frozen=True, slots=True)
class Discount:
    """``percent_off`` percent off the in-scope amount, at most ``max_discount_cents``
    if set, only when the in-scope amount reaches ``threshold_cents`` if set. Always
    valid once constructed: percent_off in 1..99, max_discount_cents in 1..MAX_CENTS or
    None, threshold_cents in 0..MAX_CENTS or None."""

    percent_off: int
    max_discount_cents: int | None = None
    threshold_cents: int | None = None
    scope: Scope = ALL

    def __post_init__(self) -> None:
        _require_int(self.percent_off, "percent_off", 1, 99)
        if self.max_discount_cents is not None:
            _require_int(self.max_discount_cents, "max_discount_cents", 1, MAX_CENTS)
        if self.threshold_cents is not None:
            _require_int(self.threshold_cents, "threshold_cents", 0, MAX_CENTS)
        if not isinstance(self.scope, Scope):
            raise RuleError("scope", "must be a Scope")


@dataclass(frozen=True, slots=True)
class Direct:
    """``amount_cents`` off, no threshold (never more than the in-scope amount).
    Always valid once constructed: 0 < amount_cents <= MAX_CENTS."""

    amount_cents: int
    scope: Scope = ALL

    def __post_init__(self) -> None:
        _require_int(self.amount_cents, "amount_cents", 1, MAX_CENTS)
        if not isinstance(self.scope, Scope):
            raise RuleError("scope", "must be a Scope")


Rule: TypeAlias = FullReduction | Discount | Direct


@dataclass(frozen=True, slots=True)
class FixedValidity:
    """A coupon valid from ``starts_at`` (inclusive) to ``ends_at`` (exclusive),
    whenever it was received. Always valid once constructed: both aware, normalised to
    UTC, and ``ends_at > starts_at``."""

    starts_at: datetime
    ends_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts_at", _require_aware_utc(self.starts_at, "starts_at"))
        object.__setattr__(self, "ends_at", _require_aware_utc(self.ends_at, "ends_at"))
        if self.ends_at <= self.starts_at:
            raise RuleError("ends_at", "must be after starts_at")


@dataclass(frozen=True, slots=True)
class RelativeValidity:
    """A coupon valid for ``days`` whole days (of 24 hours) from the moment it was
    received. Always valid once constructed: days in 1..3650."""

    days: int

    def __post_init__(self) -> None:
        _require_int(self.days, "days", 1, MAX_VALIDITY_DAYS)


Validity: TypeAlias = FixedValidity | RelativeValidity


# --------------------------------------------------------------------------- parsing


def _as_mapping(obj: object, name: str) -> Mapping[str, object]:
    if not isinstance(obj, Mapping):
        raise RuleError(name, "must be an object")
    return obj


def _reject_unknown(obj: Mapping[str, object], allowed: set[str], prefix: str = "") -> None:
    # Strict: a misspelt "max_discount", silently ignored, would be an uncapped coupon.
    for key in obj:
        if key not in allowed:
            raise RuleError(f"{prefix}{key}", "is not a known field")


def _optional_int(obj: Mapping[str, object], name: str, low: int) -> int | None:
    value = obj.get(name)
    return None if value is None else _require_int(value, name, low, MAX_CENTS)


def _parse_scope(obj: object) -> Scope:
    if obj is None:
        return ALL
    scope = _as_mapping(obj, "scope")
    _reject_unknown(scope, {"kind", "ids"}, "scope.")
    kind = scope.get("kind")
    if not isinstance(kind, str) or kind not in _SCOPE_KINDS:
        raise RuleError("scope.kind", "must be one of all, category, product")
    ids = scope.get("ids")
    if ids is None:
        ids = []
    if not isinstance(ids, list | tuple):
        raise RuleError("scope.ids", "must be a list of strings")
    return Scope(_SCOPE_KINDS[kind], tuple(ids))


_RULE_FIELDS: dict[str, set[str]] = {
    "full_reduction": {"type", "threshold_cents", "amount_cents", "scope"},
    "discount": {
        "type",
        "percent_off",
        "max_discount_cents",
        "threshold_cents",
        "scope",
    },
    "direct": {"type", "amount_cents", "scope"},
}


def parse_rule(obj: object) -> Rule:
    """Build a rule from its API JSON shape (a dict as decoded from the request body).

    Accepts exactly the fields of API.md; a missing or null ``scope`` means the whole
    order, and a null optional field of a discount means "not set". Raises ``RuleError``
    naming the first offending field for anything else: wrong types (bools are not
    integers), amounts out of range, unknown fields, an unknown ``type``.
    """
    rule = _as_mapping(obj, "rule")
    kind = rule.get("type")
    if not isinstance(kind, str) or kind not in _RULE_FIELDS:
        raise RuleError("type", "must be one of full_reduction, discount, direct")
    _reject_unknown(rule, _RULE_FIELDS[kind])
    if kind == "full_reduction":
        return FullReduction(
            threshold_cents=_require_int(rule.get("threshold_cents"), "threshold_cents", 2, MAX_CENTS),
            amount_cents=_require_int(rule.get("amount_cents"), "amount_cents", 1, MAX_CENTS),
            scope=_parse_scope(rule.get("scope")),
        )
    if kind == "discount":
        return Discount(
            percent_off=_require_int(rule.get("percent_off"), "percent_off", 1, 99),
            max_discount_cents=_optional_int(rule, "max_discount_cents", 1),
            threshold_cents=_optional_int(rule, "threshold_cents", 0),
            scope=_parse_scope(rule.get("scope")),
        )
    return Direct(
        amount_cents=_require_int(rule.get("amount_cents"), "amount_cents", 1, MAX_CENTS),
        scope=_parse_scope(rule.get("scope")),
    )


# RFC 3339 date-time (section 5.6); fromisoformat alone would also take dates, week
# dates and the basic format.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def parse_timestamp(value: object, name: str) -> datetime:
    """Parse an RFC 3339 date-time with an explicit offset into an aware UTC datetime.
    Raises ``RuleError(name, ...)`` for anything else (naive times, dates, other
    formats)."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise RuleError(name, "must be an RFC 3339 date-time such as 2026-11-22T08:00:00Z")
    # fromisoformat (3.11) takes "Z" and truncates fractions beyond microseconds.
    text = value.upper().replace(" ", "T")
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise RuleError(name, "is not a valid date-time") from None


def parse_validity(obj: object) -> Validity:
    """Build a validity from its API JSON shape: ``{"kind": "fixed", "starts_at",
    "ends_at"}`` (RFC 3339 strings, ends after starts) or ``{"kind": "relative",
    "days"}`` (1..3650). Raises ``RuleError`` naming the first offending field."""
    validity = _as_mapping(obj, "validity")
    kind = validity.get("kind")
    if kind == "fixed":
        _reject_unknown(validity, {"kind", "starts_at", "ends_at"})
        return FixedValidity(
            starts_at=parse_timestamp(validity.get("starts_at"), "starts_at"),
            ends_at=parse_timestamp(validity.get("ends_at"), "ends_at"),
        )
    if kind == "relative":
        _reject_unknown(validity, {"kind", "days"})
        return RelativeValidity(days=_require_int(validity.get("days"), "days", 1, MAX_VALIDITY_DAYS))
    raise RuleError("kind", "must be one of fixed, relative")


def format_timestamp(value: datetime) -> str:
    """Format an aware datetime as the API's RFC 3339 UTC string,
    ``2026-11-22T08:00:00Z`` (with ``.ffffff`` only when there are microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _scope_to_dict(scope: Scope) -> dict[str, object]:
    return {"kind": scope.kind, "ids": list(scope.ids)}


def rule_to_dict(rule: Rule) -> dict[str, object]:
    """The rule's API JSON shape; ``parse_rule(rule_to_dict(r)) == r``. The scope is
    always present and a discount always carries ``max_discount_cents`` and
    ``threshold_cents`` (null when not set)."""
    if isinstance(rule, FullReduction):
        return {
            "type": "full_reduction",
            "threshold_cents": rule.threshold_cents,
            "amount_cents": rule.amount_cents,
            "scope": _scope_to_dict(rule.scope),
        }
    if isinstance(rule, Discount):
        return {
            "type": "discount",
            "percent_off": rule.percent_off,
            "max_discount_cents": rule.max_discount_cents,
            "threshold_cents": rule.threshold_cents,
            "scope": _scope_to_dict(rule.scope),
        }
    return {
        "type": "direct",
        "amount_cents": rule.amount_cents,
        "scope": _scope_to_dict(rule.scope),
    }


def validity_to_dict(validity: Validity) -> dict[str, object]:
    """The validity's API JSON shape; ``parse_validity(validity_to_dict(v)) == v``."""
    if isinstance(validity, FixedValidity):
        return {
            "kind": "fixed",
            "starts_at": format_timestamp(validity.starts_at),
            "ends_at": format_timestamp(validity.ends_at),
        }
    return {"kind": "relative", "days": validity.days}


def validity_window(validity: Validity, received_at: datetime) -> tuple[datetime, datetime]:
    """The ``(valid_from, valid_to)`` window, in UTC, of a coupon received at
    ``received_at``: the template's fixed window, or ``days * 24h`` from receipt.
    ``valid_from`` is inclusive, ``valid_to`` exclusive. Raises ``ValueError`` for a
    naive ``received_at``."""
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    if isinstance(validity, FixedValidity):
        return validity.starts_at, validity.ends_at
    start = received_at.astimezone(UTC)
    return start, start + timedelta(days=validity.days)


# --------------------------------------------------------------------------- rule math


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One order line: ``qty`` (>= 1) of SKU ``sku`` in ``category`` at ``price_cents``
    (>= 0) each."""

    sku: str
    category: str
    price_cents: int
    qty: int = 1

    def __post_init__(self) -> None:
        _require_int(self.price_cents, "price_cents", 0, MAX_CENTS)
        _require_int(self.qty, "qty", 1, 10**6)


def base_amount(rule: Rule, order_amount_cents: int, items: Sequence[OrderItem] | None = None) -> int:
    """The part of the order a rule applies to, in cents: the whole order for scope
    ``all``; for ``category``/``product`` the sum of ``price_cents * qty`` of the
    matching items, never more than the order amount, and 0 when ``items`` is None (no
    basket, nothing provably in scope). Raises ``ValueError`` for a negative order
    amount, ``TypeError`` for a non-integer."""
    if not isinstance(order_amount_cents, int) or isinstance(order_amount_cents, bool):
        raise TypeError("order_amount_cents must be an integer")
    if order_amount_cents < 0:
        raise ValueError("order_amount_cents must not be negative")
    scope = rule.scope
    if scope.kind == "all":
        return order_amount_cents
    if items is None:
        return 0
    ids = frozenset(scope.ids)
    if scope.kind == "category":
        total = sum(i.price_cents * i.qty for i in items if i.category in ids)
    else:
        total = sum(i.price_cents * i.qty for i in items if i.sku in ids)
    return min(total, order_amount_cents)


def threshold_met(rule: Rule, base_cents: int) -> bool:
    """Whether an in-scope amount of ``base_cents`` reaches the rule's threshold. Rules
    without a threshold (direct, discount without one) always meet it."""
    if isinstance(rule, FullReduction):
        return base_cents >= rule.threshold_cents
    if isinstance(rule, Discount):
        return rule.threshold_cents is None or base_cents >= rule.threshold_cents
    return True


def discount_for(rule: Rule, order_amount_cents: int, items: Sequence[OrderItem] | None = None) -> int:
    """The discount, in cents, the rule gives on an order.

    The rule applies to ``base_amount(rule, order_amount_cents, items)`` (so a scoped
    rule with no ``items`` gives 0) and the threshold is checked against that base. A
    percentage is rounded down to the cent: ``floor(base * percent_off / 100)``, at most
    1 cent in the customer's disfavour (15% of 9.99 is 1.49), then capped by
    ``max_discount_cents``. Always ``0 <= discount <= base <= order_amount_cents``.
    """
    base = base_amount(rule, order_amount_cents, items)
    if not threshold_met(rule, base):
        return 0
    if isinstance(rule, Discount):
        amount = base * rule.percent_off // 100
        if rule.max_discount_cents is not None:
            amount = min(amount, rule.max_discount_cents)
    else:
        amount = rule.amount_cents
    return min(amount, base)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _describe_scope(scope: Scope) -> str:
    if scope.kind == "all":
        return ""
    shown = ", ".join(scope.ids[:5])
    more = f" and {len(scope.ids) - 5} more" if len(scope.ids) > 5 else ""
    return f" on {scope.kind} {shown}{more}"


def describe_rule(rule: Rule) -> str:
    """A one-line English description of the rule for people, e.g. ``"20.00 off orders
    from 100.00"``, ``"15% off, up to 30.00 off, on orders from 50.00"``, ``"5.00 off on
    category shoes, socks"`` (amounts in currency units, at most five scope ids named).
    """
    if isinstance(rule, FullReduction):
        amount, threshold = _money(rule.amount_cents), _money(rule.threshold_cents)
        text = f"{amount} off orders from {threshold}"
    elif isinstance(rule, Discount):
        text = f"{rule.percent_off}% off"
        if rule.max_discount_cents is not None:
            text += f", up to {_money(rule.max_discount_cents)} off"
        if rule.threshold_cents:
            text += f", on orders from {_money(rule.threshold_cents)}"
    else:
        text = f"{_money(rule.amount_cents)} off"
    return text + _describe_scope(rule.scope)


# --------------------------------------------------------------------------- lifecycle


class CouponStatus(enum.StrEnum):
    """The stored status of a user coupon."""

    UNUSED = "unused"
    USED = "used"
    EXPIRED = "expired"
    FROZEN = "frozen"


class TransitionError(Exception):
    """A coupon cannot move between two statuses (or cannot be redeemed now). ``code``
    is stable: ``already_used``, ``expired``, ``frozen``, ``not_yet_valid`` or
    ``invalid_transition``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_ALLOWED: frozenset[tuple[CouponStatus, CouponStatus]] = frozenset(
    {
        (CouponStatus.UNUSED, CouponStatus.USED),  # redemption
        (CouponStatus.UNUSED, CouponStatus.EXPIRED),  # expiry sweep
        (CouponStatus.UNUSED, CouponStatus.FROZEN),  # risk control
        (CouponStatus.FROZEN, CouponStatus.UNUSED),  # unfreeze
        (CouponStatus.USED, CouponStatus.UNUSED),  # reversal (refund)
    }
)

# Why a move is refused depends only on where the coupon is now.
_REFUSAL_CODES: dict[CouponStatus, str] = {
    CouponStatus.USED: "already_used",
    CouponStatus.EXPIRED: "expired",
    CouponStatus.FROZEN: "frozen",
    CouponStatus.UNUSED: "invalid_transition",
}


def can_transition(current: CouponStatus, target: CouponStatus) -> bool:
    """Whether a coupon may move from ``current`` to ``target``: unused→used,
    unused→expired, unused→frozen, frozen→unused and used→unused (reversal); nothing
    else, and never to the same status."""
    return (CouponStatus(current), CouponStatus(target)) in _ALLOWED


def transition(current: CouponStatus, target: CouponStatus) -> CouponStatus:
    """Return ``target`` if the move is allowed, else raise ``TransitionError`` whose
    code says why: ``already_used`` from used, ``expired`` from expired, ``frozen`` from
    frozen, ``invalid_transition`` for unused→unused."""
    current, target = CouponStatus(current), CouponStatus(target)
    if (current, target) not in _ALLOWED:
        raise TransitionError(_REFUSAL_CODES[current], f"cannot move a coupon from {current} to {target}")
    return target


def effective_status(stored: CouponStatus, valid_to: datetime, now: datetime) -> CouponStatus:
    """The status to show: an ``unused`` coupon whose window has closed (``now >=
    valid_to``) is ``expired`` even before the expiry sweep has written it; any other
    status as stored."""
    stored = CouponStatus(stored)
    if stored is CouponStatus.UNUSED and now >= valid_to:
        return CouponStatus.EXPIRED
    return stored


def ensure_redeemable(stored: CouponStatus, valid_from: datetime, valid_to: datetime, now: datetime) -> None:
    """Return if a coupon may be redeemed at ``now``; otherwise raise
    ``TransitionError`` with code ``already_used``, ``expired``, ``frozen`` or
    ``not_yet_valid`` (``now < valid_from``)."""
    status = effective_status(stored, valid_to, now)
    transition(status, CouponStatus.USED)
    if now < valid_from:
        raise TransitionError("not_yet_valid", "the coupon is not valid yet")


class Quote(Protocol):
    """Anything saying how much a coupon would take off and until when it is valid."""

    @property
    def discount_cents(self) -> int: ...

    @property
    def valid_to(self) -> datetime: ...


Q = TypeVar("Q", bound=Quote)


def best_first(quotes: Iterable[Q]) -> list[Q]:
    """The quotes ordered best first: largest discount first, then the one expiring
    soonest (use it before it is lost); equal quotes keep their input order."""
    return sorted(quotes, key=lambda q: (-q.discount_cents, q.valid_to))
