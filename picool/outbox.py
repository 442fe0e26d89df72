"""The transactional outbox and idempotent consumption.

A service writes its state and the event announcing it in one transaction (:func:`add_event`);
:class:`OutboxRelay` publishes pending rows to Kafka and deletes them once the broker acknowledged.
Delivery is at-least-once, so consumers record what they handled in ``consumed_events`` in the same
transaction as their effect (:func:`first_deliveries`), which makes every event take effect once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from sqlalchemy import BigInteger, DateTime, Index, LargeBinary, String, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from picool.db import Base
from picool.events import encode_envelope
from picool.kafka import KafkaBus, Message
from picool.settings import Settings

log = logging.getLogger("picool.outbox")


class OutboxRow(Base):
    """An event waiting to be published."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsumedEvent(Base):
    """An event id a consumer has already applied."""

    __tablename__ = "consumed_events"
    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (Index("ix_consumed_events_consumed_at", "consumed_at"),)


def add_event(
    session: AsyncSession,
    settings: Settings,
    topic: str,
    event: msgspec.Struct,
    key: str,
    *,
    event_id: str | None = None,
) -> str:
    """Stage ``event`` for ``topic`` (logical name) in the caller's transaction; returns the event id."""
    eid = event_id or uuid.uuid4().hex
    payload = encode_envelope(eid, event, key, datetime.now(UTC))
    session.add(OutboxRow(topic=settings.topic(topic), key=key, payload=payload))
    return eid


async def first_deliveries(session: AsyncSession, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record ``event_ids`` as consumed by ``consumer``; return those seen for the first time.

    Call it in the same transaction as the effect: if the transaction rolls back, the record goes too.
    """
    if not event_ids:
        return set()
    rows = await session.execute(
        text(
            "INSERT INTO consumed_events (consumer, event_id) "
            "SELECT :c, unnest(CAST(:ids AS text[])) ON CONFLICT DO NOTHING RETURNING event_id"
        ),
        {"c": consumer, "ids": list(dict.fromkeys(event_ids))},
    )
    return {r[0] for r in rows}


async def fresh_messages(session: AsyncSession, consumer: str, messages: Sequence[Message]) -> list[Message]:
    """The messages of a batch that ``consumer`` has not applied before, each event id once.

    A batch can hold the same event twice (a relay re-sent it); this returns one copy. Call it in the
    same transaction as the effect.
    """
    unique: dict[str, Message] = {}
    for m in messages:
        unique.setdefault(m.envelope.id, m)
    fresh = await first_deliveries(session, consumer, list(unique))
    return [m for eid, m in unique.items() if eid in fresh]


class OutboxRelay:
    """Publishes outbox rows to Kafka in id order, in batches, from any number of processes.

    Rows are locked with ``FOR UPDATE SKIP LOCKED`` while they are sent and deleted only after the
    broker acknowledged them: a crash in between re-sends them (at-least-once).
    """

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], bus: KafkaBus) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.bus = bus
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """Publish soon instead of waiting for the next poll."""
        self._wake.set()

    async def publish_once(self, limit: int | None = None) -> int:
        """Publish one batch; returns how many rows were published."""
        batch = limit or self.settings.outbox_batch
        async with self.sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    select(OutboxRow.id, OutboxRow.topic, OutboxRow.key, OutboxRow.payload)
                    .order_by(OutboxRow.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            await self.bus.publish_many([(r.topic, r.key, r.payload) for r in rows])
            await session.execute(delete(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows])))
        self.published += len(rows)
        return len(rows)

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Publish until the outbox is empty (or ``timeout_s`` passed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await self.publish_once() == 0:
                return
        log.warning("outbox flush timed out with rows left")

    async def backlog(self) -> int:
        """Rows waiting to be published."""
        async with self.sessionmaker() as session:
            return int((await session.execute(select(func.count()).select_from(OutboxRow))).scalar_one())

    async def run(self) -> None:
        """Poll (or wake) and publish until :meth:`stop`."""
        poll = self.settings.outbox_poll_ms / 1000
        while not self._stopping.is_set():
            try:
                n = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox relay: publish failed; retrying", exc_info=True)
                n = 0
                await asyncio.sleep(1.0)
            if n == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=poll)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stopping.set()
        self._wake.set()
