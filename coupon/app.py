"""The coupon subsystem as the gateway mounts it: the HTTP API, the task-reward consumer, the expiry sweep."""

from __future__ import annotations

from datetime import UTC, datetime

from coupon import controllers
from coupon import events as coupon_events
from coupon import service as coupon_service
from picool import events
from picool.kafka import ConsumerWorker, Message
from picool.kernel import Kernel
from picool.subsystem import Subsystem
from picool.workers import Periodic

EXPIRY_INTERVAL_S = 60.0


def create(kernel: Kernel) -> Subsystem:
    """Build the coupon subsystem for kernel's process."""

    async def on_run_completed(messages: list[Message]) -> None:
        await coupon_events.handle_run_completed(kernel, messages)

    async def expire() -> None:
        await coupon_service.expire_due(kernel, datetime.now(UTC))

    return Subsystem(
        name="coupon",
        route_handlers=[controllers.CouponController],
        consumers=[
            ConsumerWorker(kernel.settings, coupon_events.CONSUMER, [events.TOPIC_RUN_COMPLETED], on_run_completed)
        ],
        periodics=[Periodic("coupon.expire", EXPIRY_INTERVAL_S, expire, redis=kernel.redis)],
    )
