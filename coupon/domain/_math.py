"""Rule math: what a rule takes off an order, its description for people, and which quote saves most."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from coupon.domain._rules import MAX_CENTS, Discount, FullReduction, Rule, Scope, require_int


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One order line: ``qty`` (>= 1) of SKU ``sku`` in ``category`` at ``price_cents``
    (>= 0) each."""

    sku: str
    category: str
    price_cents: int
    qty: int = 1

    def __post_init__(self) -> None:
        require_int(self.price_cents, "price_cents", 0, MAX_CENTS)
        require_int(self.qty, "qty", 1, 10**6)


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
