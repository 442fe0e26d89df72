"""Pure coupon rules: rule types and their validation, rule math, validity windows and
the coupon lifecycle. No I/O and no framework: everything here is a function of its
arguments.

Money is integer cents; times are aware UTC datetimes.
"""

from coupon.domain._json import (
    format_timestamp,
    parse_rule,
    parse_timestamp,
    parse_validity,
    rule_to_dict,
    validity_to_dict,
)
from coupon.domain._lifecycle import (
    CouponStatus,
    TransitionError,
    can_transition,
    effective_status,
    ensure_redeemable,
    transition,
)
from coupon.domain._math import (
    OrderItem,
    Q,
    Quote,
    base_amount,
    best_first,
    describe_rule,
    discount_for,
    threshold_met,
)
from coupon.domain._rules import (
    ALL,
    MAX_CENTS,
    MAX_SCOPE_ID_LENGTH,
    MAX_SCOPE_IDS,
    MAX_VALIDITY_DAYS,
    Direct,
    Discount,
    FixedValidity,
    FullReduction,
    RelativeValidity,
    Rule,
    RuleError,
    Scope,
    ScopeKind,
    Validity,
    validity_window,
)

__all__ = [
    "ALL",
    "MAX_CENTS",
    "MAX_SCOPE_IDS",
    "MAX_SCOPE_ID_LENGTH",
    "MAX_VALIDITY_DAYS",
    "CouponStatus",
    "Direct",
    "Discount",
    "FixedValidity",
    "FullReduction",
    "OrderItem",
    "Q",
    "Quote",
    "RelativeValidity",
    "Rule",
    "RuleError",
    "Scope",
    "ScopeKind",
    "TransitionError",
    "Validity",
    "base_amount",
    "best_first",
    "can_transition",
    "describe_rule",
    "discount_for",
    "effective_status",
    "ensure_redeemable",
    "format_timestamp",
    "parse_rule",
    "parse_timestamp",
    "parse_validity",
    "rule_to_dict",
    "threshold_met",
    "transition",
    "validity_to_dict",
    "validity_window",
]
