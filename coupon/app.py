"""The coupon subsystem as the gateway mounts it: the HTTP API, the task-reward and claim consumers, the
expiry sweep and the claim reconciler."""

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
RECONCILE_INTERVAL_S = 2.0
CLAIM_BATCH = 500


def create(kernel: Kernel) -> Subsystem:
    """Build the coupon subsystem for kernel's process.

    Raises ``ValueError`` when a claim rate limit in the settings is malformed (the app must not start).
    """
    guards = coupon_service.claim_guards(kernel)  # parses the claim rate limits now, not on the first claim
    coupon_service.claim_store(kernel)  # registers the Lua scripts

    async def on_run_completed(messages: list[Message]) -> None:
        await coupon_events.handle_run_completed(kernel, messages)

    async def on_claims(messages: list[Message]) -> None:
        await coupon_service.handle_claims(kernel, messages)

    async def expire() -> None:
        await coupon_service.expire_due(kernel, datetime.now(UTC))

    async def reconcile() -> None:
        await coupon_service.reconcile(kernel)

    async def startup(k: Kernel) -> None:
        await coupon_service.sync_denylist(k)

    async def shutdown(k: Kernel) -> None:
        await coupon_service.claim_sender(k).close()  # claims still buffered go to Kafka before it stops

    return Subsystem(
        name="coupon",
        route_handlers=[controllers.CouponController, controllers.ClaimController],
        consumers=[
            ConsumerWorker(kernel.settings, coupon_events.CONSUMER, [events.TOPIC_RUN_COMPLETED], on_run_completed),
            ConsumerWorker(
                kernel.settings,
                coupon_service.CLAIMS_CONSUMER,
                [events.TOPIC_COUPON_CLAIMS],
                on_claims,
                batch=CLAIM_BATCH,
            ),
        ],
        periodics=[
            Periodic("coupon.expire", EXPIRY_INTERVAL_S, expire, redis=kernel.redis),
            Periodic("coupon.claims-reconcile", RECONCILE_INTERVAL_S, reconcile, redis=kernel.redis),
        ],
        on_startup=[startup],
        on_shutdown=[shutdown],
        route_limits=guards.route_limits(),
        fast_routes=list(controllers.FAST_ROUTES),
    )
