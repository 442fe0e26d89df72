"""Event contracts between subsystems. Versioned: a breaking change is a new type (``...V2``).

Every event travels in an :class:`Envelope` (msgspec JSON) whose ``id`` makes consumers idempotent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

# Logical topic names; the Kafka topic is ``settings.topic(name)``.
TOPIC_RUN_COMPLETED = "run.completed"
TOPIC_COUPON_CLAIMS = "coupon.claims"
TOPIC_COUPON_EVENTS = "coupon.events"
TOPIC_KERNEL_TEST = "kernel.test"
ALL_TOPICS = (TOPIC_RUN_COMPLETED, TOPIC_COUPON_CLAIMS, TOPIC_COUPON_EVENTS, TOPIC_KERNEL_TEST)


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What goes over Kafka: a unique event id, the payload's type name and the payload itself."""

    id: str
    type: str
    occurred_at: datetime
    key: str
    payload: msgspec.Raw


class RunCompletedV1(msgspec.Struct, frozen=True, kw_only=True):
    """A run was verified as completed: the runner has earned one coupon of ``reward_template_id``."""

    run_id: str
    task_id: str
    runner_id: str
    merchant_id: str
    reward_template_id: str
    completed_at: datetime
    distance_m: float
    duration_s: float


class CouponClaimedV1(msgspec.Struct, frozen=True, kw_only=True):
    """Redis accepted a claim: persist this coupon (idempotent on ``coupon_id``)."""

    coupon_id: str
    code: str
    template_id: str
    user_id: str
    source_kind: str  # "claim" | "flash" | "task"
    source_ref: str
    claimed_at: datetime


class CouponClaimsV1(msgspec.Struct, frozen=True, kw_only=True):
    """Several accepted claims in one message: what one process accepted within a few milliseconds (one
    Kafka message per claim cost more of the app's CPU than the rest of the claim's Kafka path). Each is
    persisted exactly as a :class:`CouponClaimedV1` would be (idempotent on its ``coupon_id``)."""

    claims: list[CouponClaimedV1]


class CouponChangedV1(msgspec.Struct, frozen=True, kw_only=True):
    """A coupon changed status (redeemed, reversed, frozen, expired...)."""

    coupon_id: str
    user_id: str
    template_id: str
    from_status: str
    to_status: str
    at: datetime
    reason: str = ""


class KernelTestV1(msgspec.Struct, frozen=True, kw_only=True):
    """Used only by the kernel's own tests of the outbox and consumers."""

    n: int
    note: str = ""


EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "RunCompletedV1": RunCompletedV1,
    "CouponClaimedV1": CouponClaimedV1,
    "CouponClaimsV1": CouponClaimsV1,
    "CouponChangedV1": CouponChangedV1,
    "KernelTestV1": KernelTestV1,
}

_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(event_id: str, event: msgspec.Struct, key: str, occurred_at: datetime) -> bytes:
    """Serialise ``event`` in its envelope."""
    env = Envelope(
        id=event_id,
        type=type(event).__name__,
        occurred_at=occurred_at,
        key=key,
        payload=msgspec.Raw(_encoder.encode(event)),
    )
    return _encoder.encode(env)


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope (the payload stays raw until :func:`decode_payload`)."""
    return _envelope_decoder.decode(data)


def decode_payload(env: Envelope) -> Any:
    """The typed payload of an envelope; raises ``KeyError`` for an unknown type."""
    cls = EVENT_TYPES[env.type]
    return msgspec.json.decode(env.payload, type=cls)
