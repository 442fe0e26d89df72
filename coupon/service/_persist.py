"""Writing accepted claims to PostgreSQL: the claim consumer's batches and the reconciler.

A batch is one transaction (:func:`coupon.service._premade.issue_premade`): coupons inserted
``ON CONFLICT DO NOTHING`` (idempotent on the coupon id, so a redelivered or re-sent claim is written
once), ``assigned`` bumped once per template, audit rows. Only after the commit are the coupon ids
dropped from their pool's pending set and the wallets invalidated; a process killed in between
leaves them pending, and the reconciler finds them in PostgreSQL and drops them then.

The reconciler (every couple of seconds, one process at a time) re-sends pending claims older than
a grace period: the process that accepted them may have died before its Kafka send, or Kafka may
have refused it. If Kafka is unreachable it writes them itself, through the same idempotent path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from coupon import store as coupon_store
from coupon.service import _coupons, _pools
from coupon.service._pools import ms_to_datetime
from coupon.service._premade import PremadeCoupon, check_premade, issue_premade
from coupon.service._records import TemplateRecord, system_actor
from coupon.service._sender import MAX_CLAIMS, batch_message, claimed_event
from coupon.service._templates import get_template
from coupon.service._wallet import invalidate_new_coupons
from picool import events
from picool.ids import parse_id_str
from picool.kafka import Message, payloads
from picool.kernel import Kernel

log = logging.getLogger("coupon.claims")

CONSUMER = "coupon.claims"
GRACE_MS = 5000  # a claim younger than this is still on its way through Kafka
RESEND_BATCH = 500
PERSIST_CHUNK = 2000  # claims per INSERT: a consumer batch of full messages holds far more


def from_event(ev: events.CouponClaimedV1) -> PremadeCoupon | None:
    """The coupon a ``CouponClaimedV1`` asks for; None when the event is malformed."""
    coupon_id, user_id, template_id = parse_id_str(ev.coupon_id), parse_id_str(ev.user_id), parse_id_str(ev.template_id)
    if coupon_id is None or user_id is None or template_id is None or ev.claimed_at.tzinfo is None:
        return None
    if ev.source_kind not in ("claim", "flash") or not 0 < len(ev.source_ref) <= 64:
        return None
    return PremadeCoupon(
        coupon_id=coupon_id,
        user_id=user_id,
        code=ev.code,
        template_id=template_id,
        source_kind=ev.source_kind,
        source_ref=ev.source_ref,
        received_at=ev.claimed_at.astimezone(UTC),
    )


def from_record(template_id: int, record: coupon_store.ClaimRecord) -> PremadeCoupon:
    """The coupon a Redis claim record stands for."""
    return PremadeCoupon(
        coupon_id=record.coupon_id,
        user_id=record.user_id,
        code=record.code,
        template_id=template_id,
        source_kind=record.source_kind,
        source_ref=record.source_ref,
        received_at=ms_to_datetime(record.claimed_ms),
    )


async def persist_claims(kernel: Kernel, claims: Sequence[PremadeCoupon], *, tidy_later: bool = False) -> int:
    """Write accepted claims in one statement, then clear them from the pending sets and invalidate the
    wallets; returns how many coupons were new. Claims that can never be written (unknown template,
    wrong shard) are logged and left pending, where they stay visible.

    With ``tidy_later`` the clearing and invalidating run in the background: the claim consumer takes
    its next batch without waiting for them (a process that dies first leaves them pending, and the
    reconciler clears them once it sees the rows)."""
    templates: dict[int, TemplateRecord] = {}
    for template_id in {c.template_id for c in claims}:
        template = await get_template(kernel, template_id)
        if template is None:
            log.error("claims of unknown template %s cannot be stored", template_id)
        else:
            templates[template_id] = template
    good: list[PremadeCoupon] = []
    for c in claims:
        if c.template_id not in templates:
            continue
        try:
            check_premade(c)
        except ValueError as exc:
            log.error("claim %s cannot be stored: %s", c.coupon_id, exc)
            continue
        good.append(c)
    if not good:
        return 0
    now = datetime.now(UTC)
    # Autocommit: the batch is one statement, atomic by itself (see issue_premade); no BEGIN/COMMIT.
    async with kernel.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        inserted = await issue_premade(auto, templates, good, actor=system_actor("claims"), now=now, checked=True)
    done: dict[int, list[int]] = {}
    for c in good:
        done.setdefault(c.template_id, []).append(c.coupon_id)
    users = [r.user_id for r in inserted]
    if tidy_later:
        task = asyncio.create_task(_tidy_quietly(kernel, done, users), name="coupon-claims-tidy")
        _TIDYING.add(task)
        task.add_done_callback(_TIDYING.discard)
    else:
        await _tidy(kernel, done, users)
    return len(inserted)


_TIDYING: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones


async def _tidy(kernel: Kernel, done: dict[int, list[int]], users: list[int]) -> None:
    await _pools.claim_store(kernel).ack(done)
    if users:
        await invalidate_new_coupons(kernel, users)


async def _tidy_quietly(kernel: Kernel, done: dict[int, list[int]], users: list[int]) -> None:
    try:
        await _tidy(kernel, done, users)
    except Exception:
        log.warning("could not clear %d persisted claims from pending; the reconciler will", len(users), exc_info=True)


async def handle_claims(kernel: Kernel, messages: Sequence[Message]) -> int:
    """The claim consumer's batch handler: the claims of every ``CouponClaimsV1`` (and single
    ``CouponClaimedV1``) of the batch, written ``PERSIST_CHUNK`` to a statement."""
    claims: list[PremadeCoupon] = []
    for env, ev in payloads(messages, ("CouponClaimsV1", "CouponClaimedV1"), log):
        for one in ev.claims if isinstance(ev, events.CouponClaimsV1) else (ev,):
            claim = from_event(one)
            if claim is None:
                log.error("malformed claim %s in %s %s; skipped", one.coupon_id[:32], env.type, env.id)
                continue
            claims.append(claim)
    written = 0
    for i in range(0, len(claims), PERSIST_CHUNK):
        written += await persist_claims(kernel, claims[i : i + PERSIST_CHUNK], tidy_later=True)
    return written


async def stored_ids(kernel: Kernel, pairs: Sequence[tuple[int, int]]) -> set[int]:
    """Which of ``(user_id, coupon_id)`` PostgreSQL has (:func:`coupon.service._coupons.stored_of`: each id
    probed in the partition its shard names)."""
    if not pairs:
        return set()
    async with kernel.sessionmaker() as session:
        return await _coupons.stored_of(session, pairs)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one reconciler pass did."""

    resent: int = 0
    already_stored: int = 0
    written: int = 0  # written directly because Kafka would not take them
    dropped: int = 0  # pending ids without a ledger entry (should never happen)


async def reconcile(kernel: Kernel, *, now_ms: int | None = None, grace_ms: int = GRACE_MS) -> ReconcileReport:
    """Re-send (or write) every claim pending longer than ``grace_ms``; clear those PostgreSQL has."""
    store = _pools.claim_store(kernel)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    resent = stored = written = dropped = 0
    for template_id in await store.pools():
        due = await store.due(template_id, now_ms - grace_ms, RESEND_BATCH)
        if not due:
            continue
        records = await store.records(template_id, due)
        orphans = [cid for cid, r in records.items() if r is None]
        if orphans:
            log.error("pending claims without a ledger entry in pool %s: %s", template_id, orphans[:10])
            await store.ack({template_id: orphans})
            dropped += len(orphans)
        live = [r for r in records.values() if r is not None]
        present = await stored_ids(kernel, [(r.user_id, r.coupon_id) for r in live])
        if present:
            await store.ack({template_id: present})
            stored += len(present)
        todo = [r for r in live if r.coupon_id not in present]
        if not todo:
            continue
        topic = kernel.settings.topic(events.TOPIC_COUPON_CLAIMS)
        try:
            claims = [claimed_event(template_id, r) for r in todo]
            chunks = [claims[i : i + MAX_CLAIMS] for i in range(0, len(claims), MAX_CLAIMS)]
            await kernel.bus.publish_many([(topic, *batch_message(chunk)) for chunk in chunks])
        except Exception:
            log.warning("reconciler: Kafka refused %d claims of pool %s; writing them directly", len(todo), template_id)
            written += await persist_claims(kernel, [from_record(template_id, r) for r in todo])
            continue
        # Re-sent: give them a fresh grace period so a slow consumer is not flooded with copies.
        await store.postpone(template_id, [r.coupon_id for r in todo], now_ms)
        resent += len(todo)
    if resent or written or dropped:
        log.info("reconciler: resent %d, written %d, already stored %d, dropped %d", resent, written, stored, dropped)
    return ReconcileReport(resent=resent, already_stored=stored, written=written, dropped=dropped)
