"""Rules, validities and timestamps to and from their API JSON shapes."""

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from coupon.domain._rules import (
    ALL,
    MAX_CENTS,
    MAX_VALIDITY_DAYS,
    SCOPE_KINDS,
    Direct,
    Discount,
    FixedValidity,
    FullReduction,
    RelativeValidity,
    Rule,
    RuleError,
    Scope,
    Validity,
    require_int,
)


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
    return None if value is None else require_int(value, name, low, MAX_CENTS)


def _parse_scope(obj: object) -> Scope:
    if obj is None:
        return ALL
    scope = _as_mapping(obj, "scope")
    _reject_unknown(scope, {"kind", "ids"}, "scope.")
    kind = scope.get("kind")
    if not isinstance(kind, str) or kind not in SCOPE_KINDS:
        raise RuleError("scope.kind", "must be one of all, category, product")
    ids = scope.get("ids")
    if ids is None:
        ids = []
    if not isinstance(ids, list | tuple):
        raise RuleError("scope.ids", "must be a list of strings")
    return Scope(SCOPE_KINDS[kind], tuple(ids))


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
            threshold_cents=require_int(rule.get("threshold_cents"), "threshold_cents", 2, MAX_CENTS),
            amount_cents=require_int(rule.get("amount_cents"), "amount_cents", 1, MAX_CENTS),
            scope=_parse_scope(rule.get("scope")),
        )
    if kind == "discount":
        return Discount(
            percent_off=require_int(rule.get("percent_off"), "percent_off", 1, 99),
            max_discount_cents=_optional_int(rule, "max_discount_cents", 1),
            threshold_cents=_optional_int(rule, "threshold_cents", 0),
            scope=_parse_scope(rule.get("scope")),
        )
    return Direct(
        amount_cents=require_int(rule.get("amount_cents"), "amount_cents", 1, MAX_CENTS),
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
        return RelativeValidity(days=require_int(validity.get("days"), "days", 1, MAX_VALIDITY_DAYS))
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
