"""Pure coupon rules: validation, rule math, validity windows, lifecycle."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon import domain as coupon_domain
from coupon.domain import (
    ALL,
    CouponStatus,
    Direct,
    Discount,
    FixedValidity,
    FullReduction,
    OrderItem,
    RelativeValidity,
    RuleError,
    Scope,
    TransitionError,
)

MAX = coupon_domain.MAX_CENTS
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- strategies

cents = st.integers(min_value=1, max_value=MAX)
ids = st.lists(
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Z", "Cc")),
        min_size=1,
        max_size=64,
    ),
    min_size=1,
    max_size=8,
    unique=True,
)
scope_dicts = st.one_of(
    st.just({"kind": "all", "ids": []}),
    st.builds(
        lambda k, i: {"kind": k, "ids": i},
        st.sampled_from(["category", "product"]),
        ids,
    ),
)


@st.composite
def full_reduction_dicts(draw: st.DrawFn) -> dict[str, Any]:
    threshold = draw(st.integers(min_value=2, max_value=MAX))
    amount = draw(st.integers(min_value=1, max_value=threshold - 1))
    return {
        "type": "full_reduction",
        "threshold_cents": threshold,
        "amount_cents": amount,
        "scope": draw(scope_dicts),
    }


discount_dicts = st.builds(
    lambda p, m, t, s: {
        "type": "discount",
        "percent_off": p,
        "max_discount_cents": m,
        "threshold_cents": t,
        "scope": s,
    },
    st.integers(min_value=1, max_value=99),
    st.none() | cents,
    st.none() | st.integers(min_value=0, max_value=MAX),
    scope_dicts,
)
direct_dicts = st.builds(lambda a, s: {"type": "direct", "amount_cents": a, "scope": s}, cents, scope_dicts)
rule_dicts = st.one_of(full_reduction_dicts(), discount_dicts, direct_dicts)
unscoped_rules = rule_dicts.map(lambda d: coupon_domain.parse_rule({**d, "scope": None}))
rules = rule_dicts.map(coupon_domain.parse_rule)
order_amounts = st.integers(min_value=0, max_value=10 * MAX)

items = st.lists(
    st.builds(
        OrderItem,
        sku=st.sampled_from(["sku-1", "sku-2", "sku-3"]),
        category=st.sampled_from(["food", "shoes", "socks"]),
        price_cents=st.integers(min_value=0, max_value=100_000),
        qty=st.integers(min_value=1, max_value=5),
    ),
    max_size=6,
)
small_scopes = st.one_of(
    st.just(ALL),
    st.builds(
        Scope,
        st.just("category"),
        st.lists(st.sampled_from(["food", "shoes", "socks"]), min_size=1, unique=True).map(tuple),
    ),
    st.builds(
        Scope,
        st.just("product"),
        st.lists(st.sampled_from(["sku-1", "sku-2", "sku-3"]), min_size=1, unique=True).map(tuple),
    ),
)


@st.composite
def rules_with_small_scopes(draw: st.DrawFn) -> coupon_domain.Rule:
    """Rules whose amounts are in the range of the generated baskets."""
    scope = draw(small_scopes)
    small = st.integers(min_value=1, max_value=200_000)
    kind = draw(st.sampled_from(["full_reduction", "discount", "direct"]))
    if kind == "full_reduction":
        threshold = draw(st.integers(min_value=2, max_value=200_000))
        amount = draw(st.integers(min_value=1, max_value=threshold - 1))
        return FullReduction(threshold, amount, scope)
    if kind == "discount":
        return Discount(
            draw(st.integers(min_value=1, max_value=99)),
            draw(st.none() | small),
            draw(st.none() | st.integers(min_value=0, max_value=200_000)),
            scope,
        )
    return Direct(draw(small), scope)


# --------------------------------------------------------------------------- rule math


@given(rules_with_small_scopes(), items, st.integers(min_value=0, max_value=10**6))
def test_discount_never_exceeds_base_or_order(rule: coupon_domain.Rule, basket: list[OrderItem], order: int) -> None:
    base = coupon_domain.base_amount(rule, order, basket)
    discount = coupon_domain.discount_for(rule, order, basket)
    assert 0 <= discount <= base <= order


@given(rules, order_amounts)
def test_invariants_hold_for_any_order_amount(rule: coupon_domain.Rule, order: int) -> None:
    base = coupon_domain.base_amount(rule, order)
    discount = coupon_domain.discount_for(rule, order)
    assert 0 <= discount <= base <= order


@given(rules_with_small_scopes(), items, st.integers(min_value=0, max_value=10**6))
def test_threshold_not_met_gives_nothing(rule: coupon_domain.Rule, basket: list[OrderItem], order: int) -> None:
    base = coupon_domain.base_amount(rule, order, basket)
    if not coupon_domain.threshold_met(rule, base):
        assert coupon_domain.discount_for(rule, order, basket) == 0


@given(unscoped_rules, order_amounts, order_amounts)
def test_discount_is_monotone_in_order_amount(rule: coupon_domain.Rule, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert coupon_domain.discount_for(rule, low) <= coupon_domain.discount_for(rule, high)


@given(discount_dicts.map(lambda d: {**d, "scope": None}), order_amounts)
def test_discount_respects_cap_and_rounds_down(d: dict[str, Any], order: int) -> None:
    rule = coupon_domain.parse_rule(d)
    assert isinstance(rule, Discount)
    discount = coupon_domain.discount_for(rule, order)
    cap = rule.max_discount_cents
    if cap is not None:
        assert discount <= cap
    if not coupon_domain.threshold_met(rule, order):
        assert discount == 0
    elif cap is None or discount < cap:
        # floor: never more than the exact percentage, less by under one cent
        shortfall = order * rule.percent_off - 100 * discount
        assert 0 <= shortfall < 100


def test_rounding_is_floor() -> None:
    assert coupon_domain.discount_for(Discount(15), 999) == 149
    assert coupon_domain.discount_for(Discount(33), 1) == 0
    assert coupon_domain.discount_for(Discount(50, max_discount_cents=3000), 10_000) == 3000


def test_full_reduction_and_direct() -> None:
    rule = FullReduction(10_000, 2_000)
    assert coupon_domain.discount_for(rule, 9_999) == 0
    assert coupon_domain.discount_for(rule, 10_000) == 2_000
    assert coupon_domain.discount_for(Direct(500), 300) == 300
    assert coupon_domain.discount_for(Direct(500), 0) == 0


def test_scoped_rules_use_matching_items() -> None:
    basket = [
        OrderItem("sku-1", "shoes", 6_000, 1),
        OrderItem("sku-2", "socks", 1_000, 3),
        OrderItem("sku-3", "food", 2_000, 2),
    ]
    shoes_socks = Scope("category", ("shoes", "socks"))
    rule = FullReduction(9_000, 1_500, shoes_socks)
    assert coupon_domain.base_amount(rule, 13_000, basket) == 9_000
    assert coupon_domain.discount_for(rule, 13_000, basket) == 1_500
    food_only = FullReduction(5_000, 1_000, Scope("category", ("food",)))
    assert coupon_domain.discount_for(food_only, 13_000, basket) == 0  # 40.00 < 50.00
    by_sku = Discount(10, scope=Scope("product", ("sku-3",)))
    assert coupon_domain.discount_for(by_sku, 13_000, basket) == 400
    # no basket: a scoped rule cannot prove anything is in scope
    assert coupon_domain.discount_for(by_sku, 13_000) == 0
    # the base never exceeds the order amount (say, after an order-level markdown)
    assert coupon_domain.base_amount(rule, 5_000, basket) == 5_000


def test_order_amount_must_be_non_negative_int() -> None:
    with pytest.raises(ValueError, match="negative"):
        coupon_domain.discount_for(Direct(1), -1)
    with pytest.raises(TypeError):
        coupon_domain.discount_for(Direct(1), True)


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        (FullReduction(10_000, 2_000), "20.00 off orders from 100.00"),
        (Discount(15, 3_000, 5_000), "15% off, up to 30.00 off, on orders from 50.00"),
        (Discount(15), "15% off"),
        (Discount(15, threshold_cents=0), "15% off"),
        (Direct(500), "5.00 off"),
        (Direct(5, Scope("category", ("X", "Y"))), "0.05 off on category X, Y"),
        (
            Direct(500, Scope("product", tuple(f"p{i}" for i in range(7)))),
            "5.00 off on product p0, p1, p2, p3, p4 and 2 more",
        ),
    ],
)
def test_describe_rule(rule: coupon_domain.Rule, text: str) -> None:
    assert coupon_domain.describe_rule(rule) == text


# --------------------------------------------------------------------------- parsing


def _normalized(d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    scope = out.get("scope") or {"kind": "all"}
    out["scope"] = {"kind": scope["kind"], "ids": list(scope.get("ids") or [])}
    if out["type"] == "discount":
        out.setdefault("max_discount_cents", None)
        out.setdefault("threshold_cents", None)
    return out


@given(rule_dicts)
def test_rule_round_trip(d: dict[str, Any]) -> None:
    rule = coupon_domain.parse_rule(d)
    assert coupon_domain.rule_to_dict(rule) == _normalized(d)
    assert coupon_domain.parse_rule(coupon_domain.rule_to_dict(rule)) == rule


def test_api_shapes_parse_with_defaults() -> None:
    assert coupon_domain.parse_rule(
        {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_000}
    ) == FullReduction(10_000, 2_000, ALL)
    assert coupon_domain.parse_rule({"type": "discount", "percent_off": 15}) == Discount(15)
    assert coupon_domain.parse_rule({"type": "direct", "amount_cents": 500, "scope": {"kind": "all"}}) == Direct(500)
    assert coupon_domain.rule_to_dict(Discount(15)) == {
        "type": "discount",
        "percent_off": 15,
        "max_discount_cents": None,
        "threshold_cents": None,
        "scope": {"kind": "all", "ids": []},
    }


FR = {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_000}
DC = {"type": "discount", "percent_off": 15}
DR = {"type": "direct", "amount_cents": 500}
CAT = {"kind": "category", "ids": ["food"]}


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ([], "rule"),
        ({}, "type"),
        ({"type": "bogus"}, "type"),
        ({"type": 1}, "type"),
        ({**FR, "threshold_cents": 2_000}, "amount_cents"),
        ({**FR, "amount_cents": 0}, "amount_cents"),
        ({**FR, "amount_cents": -5}, "amount_cents"),
        ({**FR, "amount_cents": 20.0}, "amount_cents"),
        ({**FR, "amount_cents": "2000"}, "amount_cents"),
        ({**FR, "amount_cents": True}, "amount_cents"),
        ({**FR, "threshold_cents": None}, "threshold_cents"),
        ({**FR, "threshold_cents": MAX + 1}, "threshold_cents"),
        ({"type": "full_reduction", "amount_cents": 1}, "threshold_cents"),
        ({**FR, "percent_off": 10}, "percent_off"),
        ({**DC, "percent_off": 0}, "percent_off"),
        ({**DC, "percent_off": 100}, "percent_off"),
        ({**DC, "percent_off": 15.5}, "percent_off"),
        ({"type": "discount"}, "percent_off"),
        ({**DC, "max_discount_cents": 0}, "max_discount_cents"),
        ({**DC, "max_discount_cents": False}, "max_discount_cents"),
        ({**DC, "max_discount": 100}, "max_discount"),
        ({**DC, "threshold_cents": -1}, "threshold_cents"),
        ({**DR, "amount_cents": 0}, "amount_cents"),
        ({**DR, "amount_cents": MAX + 1}, "amount_cents"),
        ({**DR, "threshold_cents": 5}, "threshold_cents"),
        ({**DR, "scope": "all"}, "scope"),
        ({**DR, "scope": {"kind": "shop", "ids": []}}, "scope.kind"),
        ({**DR, "scope": {"ids": []}}, "scope.kind"),
        ({**DR, "scope": {"kind": "all", "ids": ["x"]}}, "scope.ids"),
        ({**DR, "scope": {"kind": "category"}}, "scope.ids"),
        ({**DR, "scope": {"kind": "category", "ids": []}}, "scope.ids"),
        ({**DR, "scope": {"kind": "category", "ids": "food"}}, "scope.ids"),
        ({**DR, "scope": {"kind": "product", "ids": ["a", ""]}}, "scope.ids[1]"),
        ({**DR, "scope": {"kind": "product", "ids": ["a", 7]}}, "scope.ids[1]"),
        ({**DR, "scope": {"kind": "product", "ids": ["x" * 65]}}, "scope.ids[0]"),
        ({**DR, "scope": {"kind": "product", "ids": [" a"]}}, "scope.ids[0]"),
        ({**DR, "scope": {"kind": "product", "ids": ["a", "a"]}}, "scope.ids[1]"),
        (
            {**DR, "scope": {"kind": "product", "ids": [str(i) for i in range(501)]}},
            "scope.ids",
        ),
        ({**DR, "scope": {**CAT, "extra": 1}}, "scope.extra"),
    ],
)
def test_parse_rule_errors_name_the_field(obj: object, field: str) -> None:
    with pytest.raises(RuleError) as info:
        coupon_domain.parse_rule(obj)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert info.value.code == "invalid_request"


def test_limits_are_inclusive() -> None:
    assert coupon_domain.parse_rule({**DR, "amount_cents": MAX}) == Direct(MAX)
    ok = {"kind": "product", "ids": ["x" * 64] + [str(i) for i in range(499)]}
    assert len(coupon_domain.parse_rule({**DR, "scope": ok}).scope.ids) == 500


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    )
)
def test_hostile_rule_input_only_raises_rule_error(obj: object) -> None:
    try:
        coupon_domain.parse_rule(obj)
    except RuleError:
        pass
    try:
        coupon_domain.parse_validity(obj)
    except RuleError:
        pass


def test_constructors_validate_too() -> None:
    with pytest.raises(RuleError, match="amount_cents"):
        FullReduction(100, 100)
    with pytest.raises(RuleError, match="scope.ids"):
        Scope("category", ())
    with pytest.raises(RuleError, match="ends_at"):
        FixedValidity(T0, T0)
    with pytest.raises(RuleError, match="starts_at"):
        FixedValidity(datetime(2026, 1, 1), T0)  # naive on purpose
    assert Scope("product", ["a"]).ids == ("a",)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validity


def test_parse_validity_fixed_and_relative() -> None:
    fixed = coupon_domain.parse_validity(
        {
            "kind": "fixed",
            "starts_at": "2026-11-22T16:00:00+08:00",
            "ends_at": "2026-12-01T00:00:00Z",
        }
    )
    assert fixed == FixedValidity(T0, datetime(2026, 12, 1, tzinfo=UTC))
    assert fixed.starts_at.tzinfo is UTC
    assert coupon_domain.validity_to_dict(fixed) == {
        "kind": "fixed",
        "starts_at": "2026-11-22T08:00:00Z",
        "ends_at": "2026-12-01T00:00:00Z",
    }
    assert coupon_domain.parse_validity({"kind": "relative", "days": 7}) == RelativeValidity(7)
    assert coupon_domain.validity_to_dict(RelativeValidity(7)) == {
        "kind": "relative",
        "days": 7,
    }


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (None, "validity"),
        ({}, "kind"),
        ({"kind": "forever"}, "kind"),
        ({"kind": "relative", "days": 0}, "days"),
        ({"kind": "relative", "days": 3651}, "days"),
        ({"kind": "relative", "days": "7"}, "days"),
        ({"kind": "relative", "days": True}, "days"),
        ({"kind": "relative", "days": 7, "starts_at": "x"}, "starts_at"),
        ({"kind": "fixed", "ends_at": "2026-12-01T00:00:00Z"}, "starts_at"),
        (
            {
                "kind": "fixed",
                "starts_at": "2026-11-22",
                "ends_at": "2026-12-01T00:00:00Z",
            },
            "starts_at",
        ),
        (
            {
                "kind": "fixed",
                "starts_at": "2026-11-22T08:00:00",
                "ends_at": "2026-12-01T00:00:00Z",
            },
            "starts_at",
        ),
        (
            {
                "kind": "fixed",
                "starts_at": "20261122T080000Z",
                "ends_at": "2026-12-01T00:00:00Z",
            },
            "starts_at",
        ),
        (
            {
                "kind": "fixed",
                "starts_at": "2026-02-30T08:00:00Z",
                "ends_at": "2026-12-01T00:00:00Z",
            },
            "starts_at",
        ),
        (
            {
                "kind": "fixed",
                "starts_at": "0001-01-01T00:00:00+01:00",
                "ends_at": "2026-12-01T00:00:00Z",
            },
            "starts_at",
        ),
        (
            {"kind": "fixed", "starts_at": "2026-11-22T08:00:00Z", "ends_at": 1},
            "ends_at",
        ),
        (
            {
                "kind": "fixed",
                "starts_at": "2026-11-22T08:00:00Z",
                "ends_at": "2026-11-22T08:00:00Z",
            },
            "ends_at",
        ),
        (
            {
                "kind": "fixed",
                "starts_at": "2026-11-22T08:00:00Z",
                "ends_at": "2026-11-22T09:00:00+02:00",
            },
            "ends_at",
        ),
    ],
)
def test_parse_validity_errors_name_the_field(obj: object, field: str) -> None:
    with pytest.raises(RuleError) as info:
        coupon_domain.parse_validity(obj)
    assert info.value.field == field


def test_timestamp_forms() -> None:
    parse = coupon_domain.parse_timestamp
    assert parse("2026-11-22t08:00:00z", "t") == T0
    assert parse("2026-11-22 08:00:00Z", "t") == T0
    assert parse("2026-11-22T08:00:00.123456789Z", "t") == T0.replace(microsecond=123456)
    assert coupon_domain.format_timestamp(T0.replace(microsecond=5)) == "2026-11-22T08:00:00.000005Z"


@given(
    st.datetimes(timezones=st.just(UTC)),
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=10_000)),
)
def test_validity_round_trip(start: datetime, length: timedelta) -> None:
    try:
        end = start + length
    except OverflowError:
        return
    validity = FixedValidity(start, end)
    assert coupon_domain.parse_validity(coupon_domain.validity_to_dict(validity)) == validity


def test_validity_window() -> None:
    received = datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    fixed = FixedValidity(T0, T0 + timedelta(days=9))
    assert coupon_domain.validity_window(fixed, received) == (
        T0,
        T0 + timedelta(days=9),
    )
    start, end = coupon_domain.validity_window(RelativeValidity(7), received)
    assert start == received and start.tzinfo is UTC
    assert end - start == timedelta(days=7)
    with pytest.raises(ValueError, match="aware"):
        coupon_domain.validity_window(fixed, datetime(2026, 1, 1))


# --------------------------------------------------------------------------- lifecycle

U, USED, E, F = (
    CouponStatus.UNUSED,
    CouponStatus.USED,
    CouponStatus.EXPIRED,
    CouponStatus.FROZEN,
)
ALLOWED = {(U, USED), (U, E), (U, F), (F, U), (USED, U)}
REFUSAL = {USED: "already_used", E: "expired", F: "frozen", U: "invalid_transition"}


@pytest.mark.parametrize("current", list(CouponStatus))
@pytest.mark.parametrize("target", list(CouponStatus))
def test_transition_table(current: CouponStatus, target: CouponStatus) -> None:
    allowed = (current, target) in ALLOWED
    assert coupon_domain.can_transition(current, target) is allowed
    if allowed:
        assert coupon_domain.transition(current, target) is target
    else:
        with pytest.raises(TransitionError) as info:
            coupon_domain.transition(current, target)
        assert info.value.code == REFUSAL[current]


def test_status_values_are_the_api_strings() -> None:
    assert [s.value for s in CouponStatus] == ["unused", "used", "expired", "frozen"]
    assert coupon_domain.transition("unused", "used") is USED  # type: ignore[arg-type]


def test_effective_status() -> None:
    valid_to = T0 + timedelta(days=1)
    assert coupon_domain.effective_status(U, valid_to, valid_to - timedelta(seconds=1)) is U
    assert coupon_domain.effective_status(U, valid_to, valid_to) is E
    for stored in (USED, E, F):
        assert coupon_domain.effective_status(stored, valid_to, valid_to + timedelta(days=1)) is stored


def test_ensure_redeemable() -> None:
    start, end = T0, T0 + timedelta(days=1)
    coupon_domain.ensure_redeemable(U, start, end, start)
    cases = [
        (U, start - timedelta(seconds=1), "not_yet_valid"),
        (U, end, "expired"),
        (USED, start, "already_used"),
        (F, start, "frozen"),
        (E, start, "expired"),
    ]
    for stored, now, code in cases:
        with pytest.raises(TransitionError) as info:
            coupon_domain.ensure_redeemable(stored, start, end, now)
        assert info.value.code == code


@dataclass(frozen=True)
class _Quote:
    name: str
    discount_cents: int
    valid_to: datetime


def test_best_first() -> None:
    a = _Quote("a", 500, T0 + timedelta(days=3))
    b = _Quote("b", 800, T0 + timedelta(days=9))
    c = _Quote("c", 500, T0 + timedelta(days=1))
    d = _Quote("d", 500, T0 + timedelta(days=1))
    assert [q.name for q in coupon_domain.best_first([a, b, c, d])] == [
        "b",
        "c",
        "d",
        "a",
    ]
    assert coupon_domain.best_first([]) == []
