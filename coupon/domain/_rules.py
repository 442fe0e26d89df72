"""The rule and validity types, always valid once constructed, and the checks that make them so."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

MAX_CENTS = 10**11
"""The largest amount of money (in cents) any rule may name: one billion units."""
MAX_SCOPE_IDS = 500
MAX_SCOPE_ID_LENGTH = 64
MAX_VALIDITY_DAYS = 3650

ScopeKind: TypeAlias = Literal["all", "category", "product"]
SCOPE_KINDS: dict[str, ScopeKind] = {
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


def require_int(value: object, name: str, low: int, high: int) -> int:
    """``value`` when it is an integer (not a bool) in ``low..high``; ``RuleError(name, ...)`` otherwise."""
    # bool is an int subclass; True must not mean one cent.
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleError(name, "must be an integer")
    if not low <= value <= high:
        raise RuleError(name, f"must be between {low} and {high}")
    return value


def require_aware_utc(value: object, name: str) -> datetime:
    """``value`` in UTC when it is an aware datetime; ``RuleError(name, ...)`` otherwise."""
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
        if not isinstance(self.kind, str) or self.kind not in SCOPE_KINDS:
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
        require_int(self.threshold_cents, "threshold_cents", 2, MAX_CENTS)
        require_int(self.amount_cents, "amount_cents", 1, MAX_CENTS)
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
        require_int(self.percent_off, "percent_off", 1, 99)
        if self.max_discount_cents is not None:
            require_int(self.max_discount_cents, "max_discount_cents", 1, MAX_CENTS)
        if self.threshold_cents is not None:
            require_int(self.threshold_cents, "threshold_cents", 0, MAX_CENTS)
        if not isinstance(self.scope, Scope):
            raise RuleError("scope", "must be a Scope")


@dataclass(frozen=True, slots=True)
class Direct:
    """``amount_cents`` off, no threshold (never more than the in-scope amount).
    Always valid once constructed: 0 < amount_cents <= MAX_CENTS."""

    amount_cents: int
    scope: Scope = ALL

    def __post_init__(self) -> None:
        require_int(self.amount_cents, "amount_cents", 1, MAX_CENTS)
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
        object.__setattr__(self, "starts_at", require_aware_utc(self.starts_at, "starts_at"))
        object.__setattr__(self, "ends_at", require_aware_utc(self.ends_at, "ends_at"))
        if self.ends_at <= self.starts_at:
            raise RuleError("ends_at", "must be after starts_at")


@dataclass(frozen=True, slots=True)
class RelativeValidity:
    """A coupon valid for ``days`` whole days (of 24 hours) from the moment it was
    received. Always valid once constructed: days in 1..3650."""

    days: int

    def __post_init__(self) -> None:
        require_int(self.days, "days", 1, MAX_VALIDITY_DAYS)


Validity: TypeAlias = FixedValidity | RelativeValidity


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
