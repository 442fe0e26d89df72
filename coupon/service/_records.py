"""What the coupon services hand around and cache: plain records with int ids and aware UTC times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from coupon import domain as coupon_domain

# template id -> (the validity as stored, parsed): the parse was a fifth of making a claim's coupon.
_PARSED_VALIDITY: dict[int, tuple[dict[str, Any], coupon_domain.Validity]] = {}
_PARSED_VALIDITY_MAX = 4096


# Its fields mirror schemas.Template on purpose: this is the cached form (int ids) and that the public
# API's (string ids); a shared base would tie the cache format to the API and reorder the JSON keys.
class TemplateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A coupon template as stored, without its counters (those change often and are read exactly)."""

    id: int
    merchant_id: int | None
    name: str
    description: str
    rule: dict[str, Any]
    validity: dict[str, Any]
    total_count: int
    per_user_limit: int
    distribution: str
    status: str
    created_at: datetime

    def parsed_rule(self) -> coupon_domain.Rule:
        """The rule as a domain value (stored rules were validated when the template was made)."""
        return coupon_domain.parse_rule(self.rule)

    def parsed_validity(self) -> coupon_domain.Validity:
        """The validity as a domain value (parsed once per template and validity: every claim asks)."""
        hit = _PARSED_VALIDITY.get(self.id)
        if hit is not None and hit[0] == self.validity:
            return hit[1]
        parsed = coupon_domain.parse_validity(self.validity)
        if len(_PARSED_VALIDITY) >= _PARSED_VALIDITY_MAX:
            _PARSED_VALIDITY.clear()
        _PARSED_VALIDITY[self.id] = (self.validity, parsed)
        return parsed

    def accepted_by(self, merchant_id: int) -> bool:
        """Whether ``merchant_id`` may redeem coupons of this template (its own, or a platform one)."""
        return self.merchant_id is None or self.merchant_id == merchant_id


class CouponRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A user coupon as stored (``status`` is the stored one; see :meth:`effective_status`)."""

    id: int
    user_id: int
    code: str
    template_id: int
    merchant_id: int | None
    status: str
    source_kind: str
    source_ref: str
    received_at: datetime
    valid_from: datetime
    valid_to: datetime
    used_at: datetime | None

    def effective_status(self, now: datetime) -> str:
        """The status to show at ``now``: an unused coupon past its window reads as expired."""
        stored = coupon_domain.CouponStatus(self.status)
        return str(coupon_domain.effective_status(stored, self.valid_to, now))


class WalletPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a runner's coupons as loaded (stored statuses), newest first.

    ``next_cursor`` is the id of the last *loaded* coupon when more rows follow it.
    """

    items: list[CouponRecord]
    next_cursor: int | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a user with a role (``merchant_id`` for merchant staff), or a named system job."""

    user_id: int
    role: str
    merchant_id: int | None = None
    job: str = ""

    @property
    def label(self) -> str:
        """How the audit trail names this actor: ``merchant:42/user:7``, ``operator:9``, ``system:expiry``."""
        if self.role == "system":
            return f"system:{self.job}"
        if self.merchant_id is not None:
            return f"merchant:{self.merchant_id}/user:{self.user_id}"
        return f"{self.role}:{self.user_id}"


def system_actor(job: str) -> Actor:
    """The actor of a scheduled or event-driven change (``expiry``, ``task-reward``...)."""
    return Actor(user_id=0, role="system", job=job)
