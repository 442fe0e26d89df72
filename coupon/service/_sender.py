"""Handing accepted claims to Kafka a few milliseconds' worth at a time.

aiokafka spends about a tenth of a millisecond of Python per message it is given (the partitioner, the
accumulator, a future), more than the rest of a claim's trip through Kafka, and at flash-sale rates
that is a noticeable part of the app's CPU. So a process gathers the claims it accepts for
``LINGER_S`` (or until ``MAX_CLAIMS``) and sends them as one :class:`picool.events.CouponClaimsV1`
message; the consumer writes each claim exactly as it writes a single ``CouponClaimedV1``.

Nothing about durability changes: a claim is in its pool's pending ledger in Redis before it is
buffered here, so a process that dies with claims still buffered (or a broker that refuses the
message) only delays them until the reconciler re-sends them. A clean stop sends what is buffered
(:meth:`ClaimSender.close`, a shutdown hook of the coupon subsystem).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from coupon import store as coupon_store
from coupon.service._pools import ms_to_datetime
from picool import events, metrics
from picool.events import encode_envelope
from picool.kernel import Kernel

log = logging.getLogger("coupon.claims")

SENDER_SERVICE = "coupon.claim-sender"
LINGER_S = 0.05  # a claim waits at most this long for company before it is sent
MAX_CLAIMS = 250  # a message never carries more (about 60 KB)
SEND_TIMEOUT_S = 2.0  # only a full producer buffer can make handing over a message wait


def claimed_event(template_id: int, record: coupon_store.ClaimRecord) -> events.CouponClaimedV1:
    """The event an accepted claim makes."""
    return events.CouponClaimedV1(
        coupon_id=str(record.coupon_id),
        code=record.code,
        template_id=str(template_id),
        user_id=str(record.user_id),
        source_kind=record.source_kind,
        source_ref=record.source_ref,
        claimed_at=ms_to_datetime(record.claimed_ms),
    )


def batch_message(claims: Sequence[events.CouponClaimedV1]) -> tuple[str, bytes]:
    """The Kafka key and message of several claims (keyed by the first coupon id, so messages spread over
    the partitions; the event id is derived from the coupon ids it carries)."""
    first = claims[0]
    event = events.CouponClaimsV1(claims=list(claims))
    key = first.coupon_id
    return key, encode_envelope(f"claims-{first.coupon_id}-{len(claims)}", event, key, first.claimed_at)


class ClaimSender:
    """This process's buffer of accepted claims on their way to Kafka (see the module docstring)."""

    def __init__(self, kernel: Kernel, *, linger_s: float = LINGER_S, max_claims: int = MAX_CLAIMS) -> None:
        self.kernel = kernel
        self.linger_s = linger_s
        self.max_claims = max_claims
        self._buffer: list[events.CouponClaimedV1] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        self.messages = 0  # messages handed to Kafka so far

    def add(self, template_id: int, record: coupon_store.ClaimRecord) -> None:
        """Buffer one accepted claim; it is sent within ``linger_s`` (at once when the buffer is full)."""
        self._buffer.append(claimed_event(template_id, record))
        if len(self._buffer) >= self.max_claims:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._flush)

    @property
    def buffered(self) -> int:
        """Claims waiting to be sent."""
        return len(self._buffer)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        claims, self._buffer = self._buffer, []
        self.messages += 1
        task = asyncio.get_running_loop().create_task(self._send(claims), name="coupon-claims-send")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, claims: list[events.CouponClaimedV1]) -> None:
        key, value = batch_message(claims)
        topic = self.kernel.settings.topic(events.TOPIC_COUPON_CLAIMS)
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                delivered = await self.kernel.bus.send(topic, key, value)
            await delivered
        except Exception as exc:
            metrics.CLAIMS.labels("kafka", "send_failed").inc(len(claims))
            log.warning(
                "%d accepted claims not sent to Kafka (%s); the reconciler will send them",
                len(claims),
                type(exc).__name__,
            )

    async def close(self) -> None:
        """Send what is buffered and wait for every send under way (at a clean stop)."""
        self._flush()
        if self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)


def claim_sender(kernel: Kernel) -> ClaimSender:
    """The process's claim sender (made on first use)."""
    sender = kernel.services.get(SENDER_SERVICE)
    if not isinstance(sender, ClaimSender):
        sender = ClaimSender(kernel)
        kernel.services[SENDER_SERVICE] = sender
    return sender
