"""Claiming a coupon (a ``claim`` template or a flash session) without touching PostgreSQL.

The request path: the deny list (this process's copy, no round trip) and the claim rate limits (one
pipelined Redis round trip), the template and session from the two-level caches, then
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
from picool.errors import Conflict, DomainError, ServiceUnavailable, TooManyRequests
from picool.events import encode_envelope
from picool.kernel import Kernel
from picool.ratelimit import Decision, Limit, RateLimiter
from picool.settings import Settings

log = logging.getLogger("coupon.claims")

GUARDS_SERVICE = "coupon.claim-guards"
PUBLISH_TIMEOUT_S = 2.0  # past this the claim stays pending in Redis and the reconciler sends it


class ClaimDenied(DomainError):
    """The account is on the claim deny list (403)."""

    status = 403
    code = "claim_denied"
    title = "Claiming is not allowed for this account"


@dataclass(frozen=True, slots=True)
class ClaimGuards:
    """The claim rate limits of this process (from the settings) and the limiter that checks them."""

    limiter: RateLimiter
    per_ip: Limit | None
    per_user: Limit | None
    trusted_proxies: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings, limiter: RateLimiter) -> ClaimGuards:
        """Parse ``claim_rate_ip`` / ``claim_rate_user`` (``"N/SECONDS"``, empty for none); ``ValueError``
        for a malformed one, so a bad configuration stops the app at start."""
        ip = settings.claim_rate_ip.strip()
        user = settings.claim_rate_user.strip()
        return cls(
            limiter,
            Limit.parse(ip) if ip else None,
            Limit.parse(user) if user else None,
            frozenset(settings.csv(settings.trusted_proxies)),
        )


def guards(kernel: Kernel) -> ClaimGuards:
    """The process's claim guards (made on first use)."""
    g = kernel.services.get(GUARDS_SERVICE)
    if not isinstance(g, ClaimGuards):
        g = ClaimGuards.from_settings(kernel.settings, RateLimiter(kernel.redis, prefix="coupon:rl:"))
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


def _refused(decision: Decision, kind: str, by: str) -> TooManyRequests:
    metrics.CLAIMS.labels(kind, "rate_limited").inc()
    metrics.RATE_LIMITED.labels("claims", by).inc()
    headers = decision.headers()
    return TooManyRequests(
        f"Too many claims from this {'address' if by == 'ip' else 'account'}; retry in {decision.retry_after_s}s.",
        retry_after_s=decision.retry_after_s,
        headers=headers,
    )


async def admit(kernel: Kernel, user_id: int, ip: str, kind: str) -> None:
    """Refuse a barred account (403 ``claim_denied``, from this process's copy of the deny list: no round
    trip) or a caller over a claim rate limit (429 ``rate_limited``). Both limits are checked in one
    Redis round trip, and every attempt that reaches them counts against both (abusers pay for their
    attempts; a runner behind a crowded address can use up its own allowance too)."""
    if await _denylist.is_denied(kernel, user_id):
        metrics.CLAIMS.labels(kind, "denied").inc()
        raise ClaimDenied("This account may not claim coupons.")
    g = guards(kernel)
    checks: list[tuple[str, str, Limit]] = []
    if g.per_ip is not None:
        checks.append(("ip", f"ip:{ip}", g.per_ip))
    if g.per_user is not None:
        checks.append(("user", f"user:{user_id}", g.per_user))
    if not checks:
        return
    decisions = await g.limiter.hit_many([(key, limit) for _by, key, limit in checks])
    for (by, _key, _limit), decision in zip(checks, decisions, strict=True):
        if not decision.allowed:
            raise _refused(decision, kind, by)


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
    metrics.CLAIMS.labels(kind, outcome.value).inc()
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
    kernel: Kernel, actor: Actor, template_id: int, *, ip: str, idempotency_key: str | None, now: datetime
) -> CouponRecord:
    """Claim one coupon of a ``claim`` template for a runner (404 unknown, 409 ``not_claimable``,
    ``sold_out``, ``limit_reached``; 403 ``claim_denied``; 429 ``rate_limited``)."""
    await admit(kernel, actor.user_id, ip, "claim")
    template = await require_template(kernel, template_id)
    if not _pools.is_claimable(template):
        metrics.CLAIMS.labels("claim", "not_claimable").inc()
        raise _not_claimable(template)
    return await _take(kernel, template, None, actor.user_id, idempotency_key=idempotency_key, now=now)


async def claim_flash(
    kernel: Kernel, actor: Actor, session_id: int, *, ip: str, idempotency_key: str | None, now: datetime
) -> CouponRecord:
    """Claim one coupon of a flash session for a runner (404 unknown, 409 ``not_open``, ``sold_out``,
    ``limit_reached``; 403 ``claim_denied``; 429 ``rate_limited``)."""
    await admit(kernel, actor.user_id, ip, "flash")
    session = await _flash.require_session(kernel, session_id)
    template = await require_template(kernel, session.template_id)
    if not _pools.is_claimable(template):
        metrics.CLAIMS.labels("flash", "not_claimable").inc()
        raise _not_claimable(template)
    return await _take(kernel, template, session.id, actor.user_id, idempotency_key=idempotency_key, now=now)
