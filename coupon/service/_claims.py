"""Claiming a coupon (a ``claim`` template or a flash session) without touching PostgreSQL.

The request path: the claim rate limits (checked by the edge in its one Redis round trip, see
:meth:`ClaimGuards.route_limits`), the deny list (this process's copy, no round trip), the template and
session from the two-level caches, then
``coupon/lua/claim.lua`` decides and records the
claim in Redis with the id and code made here, then the claim is handed to the process's
:class:`~coupon.service._sender.ClaimSender` (which sends a few milliseconds' worth of claims to Kafka as
one message) and the runner gets the coupon. The claim consumer writes it to PostgreSQL within moments.

Once the script accepted, the answer is 201 whatever Kafka does, and it does not wait for the broker's
acknowledgement: the claim record in Redis (pending until PostgreSQL has the coupon) is the durable
ledger, and the reconciler re-sends what Kafka never got. So a claim answered 201 is never lost, and a
refused one takes no stock.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from coupon import domain as coupon_domain
from coupon import store as coupon_store
from coupon.service import _denylist, _flash, _pools
from coupon.service._issue import new_identifiers
from coupon.service._pools import ms_to_datetime
from coupon.service._records import Actor, CouponRecord, TemplateRecord
from coupon.service._sender import claim_sender, claimed_event
from coupon.service._templates import require_template
from picool import events, metrics
from picool.errors import Conflict, DomainError, ServiceUnavailable
from picool.events import encode_envelope
from picool.kernel import Kernel
from picool.ratelimit import Limit, RouteLimits
from picool.settings import Settings

log = logging.getLogger("coupon.claims")

GUARDS_SERVICE = "coupon.claim-guards"
PUBLISH_TIMEOUT_S = 2.0  # past this the claim stays pending in Redis and the reconciler sends it


class ClaimDenied(DomainError):
    """The account is on the claim deny list (403)."""

    status = 403
    code = "claim_denied"
    title = "Claiming is not allowed for this account"


# Both claim endpoints: POST /api/v1/coupon/templates/{id}/claims and .../flash-sessions/{id}/claims.
CLAIM_PATHS = re.compile(r"/api/v1/coupon/(templates|flash-sessions)/[^/]+/claims")


@dataclass(frozen=True, slots=True)
class ClaimGuards:
    """The claim rate limits of this process (from the settings). The edge checks them (see
    :meth:`route_limits`), in the same Redis round trip as the route group's own limits."""

    per_ip: Limit | None
    per_user: Limit | None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaimGuards:
        """Parse ``claim_rate_ip`` / ``claim_rate_user`` (``"N/SECONDS"``, empty for none); ``ValueError``
        for a malformed one, so a bad configuration stops the app at start."""
        ip = settings.claim_rate_ip.strip()
        user = settings.claim_rate_user.strip()
        return cls(Limit.parse(ip) if ip else None, Limit.parse(user) if user else None)

    def route_limits(self) -> list[RouteLimits]:
        """The limits as the edge applies them to the two claim endpoints. Every claim that reaches the
        edge counts against both (abusers pay for their attempts; a runner behind a crowded address can
        use up its own allowance too)."""
        if self.per_ip is None and self.per_user is None:
            return []
        return [RouteLimits("claims", "POST", CLAIM_PATHS, self.per_ip, self.per_user, "claims", _count_refusal)]


def _count_refusal(path: str, by: str) -> None:
    metrics.CLAIMS.labels("flash" if "/flash-sessions/" in path else "claim", "rate_limited").inc()


def guards(kernel: Kernel) -> ClaimGuards:
    """The process's claim guards (made on first use)."""
    g = kernel.services.get(GUARDS_SERVICE)
    if not isinstance(g, ClaimGuards):
        g = ClaimGuards.from_settings(kernel.settings)
        kernel.services[GUARDS_SERVICE] = g
    return g


def claimed_coupon(template: TemplateRecord, record: coupon_store.ClaimRecord) -> CouponRecord:
    """The coupon a claim makes, as it will be stored: received at the claim, valid per the template."""
    at = ms_to_datetime(record.claimed_ms)
    valid_from, valid_to = coupon_domain.validity_window(template.parsed_validity(), at)
    return CouponRecord(
        id=record.coupon_id,
        user_id=record.user_id,
        code=record.code,
        template_id=template.id,
        merchant_id=template.merchant_id,
        status=coupon_domain.CouponStatus.UNUSED.value,
        source_kind=record.source_kind,
        source_ref=record.source_ref,
        received_at=at,
        valid_from=valid_from,
        valid_to=valid_to,
        used_at=None,
    )


def claim_event(template_id: int, record: coupon_store.ClaimRecord) -> tuple[str, bytes]:
    """The Kafka key and message of one accepted claim on its own (the event id is derived from the coupon
    id); the request path sends claims in batches instead (:mod:`coupon.service._sender`)."""
    event = claimed_event(template_id, record)
    key = str(record.user_id)
    return key, encode_envelope(f"claim-{record.coupon_id}", event, key, event.claimed_at)


async def publish_claim(kernel: Kernel, template_id: int, record: coupon_store.ClaimRecord) -> bool:
    """Send an accepted claim to the claims topic (keyed by user) and wait for the broker; False when it
    did not take it in time (the reconciler sends it later). Used where waiting costs nothing."""
    key, value = claim_event(template_id, record)
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            await kernel.bus.publish(kernel.settings.topic(events.TOPIC_COUPON_CLAIMS), key, value)
    except Exception:
        log.warning("claim %s accepted but not sent to Kafka; the reconciler will send it", record.coupon_id)
        return False
    return True


async def admit(kernel: Kernel, user_id: int, kind: str) -> None:
    """Refuse a barred account (403 ``claim_denied``), from this process's copy of the deny list: no round
    trip. (The claim rate limits were checked at the edge, before the handler.)"""
    if await _denylist.is_denied(kernel, user_id):
        metrics.CLAIMS.labels(kind, "denied").inc()
        raise ClaimDenied("This account may not claim coupons.")


async def _take(
    kernel: Kernel,
    template: TemplateRecord,
    session_id: int | None,
    user_id: int,
    *,
    idempotency_key: str | None,
    now: datetime,
) -> CouponRecord:
    kind = "claim" if session_id is None else "flash"
    ref = str(template.id if session_id is None else session_id)
    coupon_id, code = new_identifiers(kernel.ids, user_id)
    record = coupon_store.ClaimRecord(coupon_id, user_id, code, _pools.ms(now), kind, ref)
    store = _pools.claim_store(kernel)
    result = await store.claim(template.id, session_id, record, idempotency_key)
    if result.outcome is coupon_store.ClaimOutcome.NO_POOL:
        await _pools.ensure_pool(kernel, template)
        result = await store.claim(template.id, session_id, record, idempotency_key)
    outcome = result.outcome
    metrics.child(metrics.CLAIMS, kind, outcome.value).inc()
    if outcome is coupon_store.ClaimOutcome.OK:
        claim_sender(kernel).add(template.id, record)
        return claimed_coupon(template, record)
    if outcome is coupon_store.ClaimOutcome.REPLAY:
        if result.record is None:
            raise Conflict("This Idempotency-Key was used for a claim that is gone.", code="idempotency_conflict")
        return claimed_coupon(template, result.record)
    if outcome is coupon_store.ClaimOutcome.SOLD_OUT:
        raise Conflict("No coupons are left.", code="sold_out")
    if outcome is coupon_store.ClaimOutcome.LIMIT_REACHED:
        raise Conflict(f"You already hold {template.per_user_limit} of these coupons.", code="limit_reached")
    if outcome is coupon_store.ClaimOutcome.NOT_OPEN:
        if session_id is None:
            raise Conflict("This coupon's validity has ended; it can no longer be claimed.", code="not_claimable")
        raise Conflict("This flash session is not open.", code="not_open")
    raise ServiceUnavailable("The coupon pool is not available; try again in a moment.")


def _not_claimable(template: TemplateRecord) -> Conflict:
    if template.distribution != "claim":
        return Conflict("This coupon is only earned by runs, not claimed.", code="not_claimable")
    return Conflict("This coupon template is not active.", code="not_claimable")


async def claim_template(
    kernel: Kernel, actor: Actor, template_id: int, *, idempotency_key: str | None, now: datetime
) -> CouponRecord:
    """Claim one coupon of a ``claim`` template for a runner (404 unknown, 409 ``not_claimable``,
    ``sold_out``, ``limit_reached``; 403 ``claim_denied``)."""
    await admit(kernel, actor.user_id, "claim")
    template = await require_template(kernel, template_id)
    if not _pools.is_claimable(template):
        metrics.CLAIMS.labels("claim", "not_claimable").inc()
        raise _not_claimable(template)
    return await _take(kernel, template, None, actor.user_id, idempotency_key=idempotency_key, now=now)


async def claim_flash(
    kernel: Kernel, actor: Actor, session_id: int, *, idempotency_key: str | None, now: datetime
) -> CouponRecord:
    """Claim one coupon of a flash session for a runner (404 unknown, 409 ``not_open``, ``sold_out``,
    ``limit_reached``; 403 ``claim_denied``)."""
    await admit(kernel, actor.user_id, "flash")
    session = await _flash.require_session(kernel, session_id)
    template = await require_template(kernel, session.template_id)
    if not _pools.is_claimable(template):
        metrics.CLAIMS.labels("flash", "not_claimable").inc()
        raise _not_claimable(template)
    return await _take(kernel, template, session.id, actor.user_id, idempotency_key=idempotency_key, now=now)
