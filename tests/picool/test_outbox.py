"""The outbox: every event reaches a consumer exactly once in effect, even across a relay crash mid-batch."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from picool import events
from picool.kafka import ConsumerWorker, Message
from picool.kernel import Kernel
from picool.outbox import OutboxRelay, add_event, first_deliveries, fresh_messages
from picool.settings import Settings
from picool.testing import wait_for


class CrashingRelay(OutboxRelay):
    """A relay that dies after the broker acknowledged a batch but before it deleted the rows."""

    def __init__(self, *args: object, crash_after: int) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.crash_after = crash_after
        self.sent = 0

    async def publish_once(self, limit: int | None = None) -> int:
        bus_publish = self.bus.publish_many

        async def publish_then_crash(items: list[tuple[str, str, bytes]]) -> None:
            await bus_publish(items)
            self.sent += len(items)
            if self.sent >= self.crash_after:
                raise ConnectionError("relay process died")

        self.bus.publish_many = publish_then_crash  # type: ignore[method-assign]
        try:
            return await super().publish_once(limit)
        finally:
            self.bus.publish_many = bus_publish  # type: ignore[method-assign]


async def test_exactly_once_in_effect_across_relay_crash(client: object, kernel: Kernel) -> None:
    settings: Settings = kernel.settings
    async with kernel.engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS kernel_test_effects (n int PRIMARY KEY, hits int NOT NULL)")
        )
        await conn.execute(text("TRUNCATE kernel_test_effects"))
    tag = uuid.uuid4().hex
    n_events = 120
    async with kernel.sessionmaker() as session, session.begin():
        for i in range(n_events):
            add_event(session, settings, events.TOPIC_KERNEL_TEST, events.KernelTestV1(n=i, note=tag), key=str(i % 7))

    deliveries = 0

    async def handler(batch: list[Message]) -> None:
        nonlocal deliveries
        mine = [m for m in batch if events.decode_payload(m.envelope).note == tag]
        deliveries += len(mine)
        async with kernel.sessionmaker() as session, session.begin():
            for m in await fresh_messages(session, "kernel-test", mine):
                payload = events.decode_payload(m.envelope)
                await session.execute(
                    text(
                        "INSERT INTO kernel_test_effects (n, hits) VALUES (:n, 1) "
                        "ON CONFLICT (n) DO UPDATE SET hits = kernel_test_effects.hits + 1"
                    ),
                    {"n": payload.n},
                )

    consumer = ConsumerWorker(settings, f"kernel-test-{tag[:6]}", [events.TOPIC_KERNEL_TEST], handler, batch=50)
    task = asyncio.create_task(consumer.run())
    try:
        # The first relay crashes after the broker took 50 events: they stay in the outbox and go out again.
        crashing = CrashingRelay(settings, kernel.sessionmaker, kernel.bus, crash_after=50)
        try:
            await crashing.publish_once(limit=50)
        except ConnectionError:
            pass
        assert await crashing.backlog() >= n_events  # nothing was deleted: the crash rolled the batch back
        # The session app's own relay (a "restarted" one) publishes everything, the 50 again included.
        kernel.relay.wake()

        async def all_applied() -> bool:
            async with kernel.engine.connect() as conn:
                count = (await conn.execute(text("SELECT count(*) FROM kernel_test_effects"))).scalar_one()
            return int(count) == n_events

        await wait_for(all_applied, timeout_s=30)
        await wait_for(lambda: _true_when(deliveries >= n_events + 50), timeout_s=15)
        async with kernel.engine.connect() as conn:
            hits = (await conn.execute(text("SELECT max(hits), min(hits) FROM kernel_test_effects"))).one()
        assert tuple(hits) == (1, 1)  # delivered twice, applied once
        assert deliveries >= n_events + 50
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 20)
        async with kernel.engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS kernel_test_effects"))


async def _true_when(value: bool) -> bool:
    return value


async def test_first_deliveries_is_idempotent(client: object, kernel: Kernel) -> None:
    async with kernel.sessionmaker() as session, session.begin():
        first = await first_deliveries(session, "c1", ["a", "b", "a"])
        again = await first_deliveries(session, "c1", ["a", "b", "c"])
        other = await first_deliveries(session, "c2", ["a"])
    assert first == {"a", "b"}
    assert again == {"c"}
    assert other == {"a"}


async def test_rolled_back_transaction_publishes_nothing(client: object, kernel: Kernel) -> None:
    try:
        async with kernel.sessionmaker() as session, session.begin():
            add_event(session, kernel.settings, events.TOPIC_KERNEL_TEST, events.KernelTestV1(n=1), key="k")
            raise RuntimeError("the use case failed")
    except RuntimeError:
        pass
    assert await kernel.relay.backlog() == 0
