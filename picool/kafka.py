"""Kafka: one producer per process, consumer groups with manual commits, topic creation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from picool.events import Envelope, decode_envelope, decode_payload
from picool.settings import Settings

log = logging.getLogger("picool.kafka")


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed event with where it came from."""

    topic: str
    partition: int
    offset: int
    envelope: Envelope


def payloads(
    messages: Iterable[Message], type_names: str | tuple[str, ...], logger: logging.Logger
) -> Iterator[tuple[Envelope, Any]]:
    """The envelopes of ``type_names`` (one name or several) among ``messages`` with their typed payloads. One
    that cannot be decoded is logged on ``logger`` and skipped: a poison message must not stop its group."""
    wanted = (type_names,) if isinstance(type_names, str) else type_names
    for m in messages:
        env = m.envelope
        if env.type not in wanted:
            continue
        try:
            payload = decode_payload(env)
        except Exception:
            logger.error("undecodable %s %s at %s:%s@%s; skipped", env.type, env.id, m.topic, m.partition, m.offset)
            continue
        yield env, payload


class KafkaBus:
    """The process's producer. ``acks=all``; the idempotent producer stays off (the dev broker lacks it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        return self._producer

    async def start(self) -> None:
        """Connect the producer."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=15000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            try:
                await self._producer.flush()
            finally:
                await self._producer.stop()
                self._producer = None

    async def ensure_topics(self, names: Sequence[str]) -> None:
        """Create the (prefixed) topics that do not exist yet."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [self.settings.topic(n) for n in names if self.settings.topic(n) not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(t, num_partitions=self.settings.kafka_partitions, replication_factor=1)
                            for t in missing
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Send one message and wait until the broker acknowledged it."""
        await self.producer.send_and_wait(topic, value=value, key=key.encode())

    async def send(self, topic: str, key: str, value: bytes) -> asyncio.Future[object]:
        """Hand one message to the producer and return its delivery future without waiting for the broker
        (for callers whose message is recorded durably elsewhere and re-sent if it never arrives)."""
        future: asyncio.Future[object] = await self.producer.send(topic, value=value, key=key.encode())
        return future

    async def publish_many(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Send many messages (topic, key, value) and wait until every one is acknowledged."""
        futures = [await self.producer.send(t, value=v, key=k.encode()) for t, k, v in items]
        await asyncio.gather(*futures)

    async def ping(self) -> None:
        """Raise unless the broker answers a metadata request."""
        client = self.producer.client
        ok = await client.fetch_all_metadata()
        if ok is None or not ok.brokers():
            raise KafkaError("no broker in metadata")


Handler = Callable[[list[Message]], Awaitable[None]]


class ConsumerWorker:
    """A consumer-group member that hands batches to ``handler`` and commits only after it succeeded.

    Delivery is at-least-once: a batch whose handler failed is retried from its first offset (with
    backoff); after ``max_attempts`` it is logged and skipped, so one poison batch cannot stop a group.
    Handlers must be idempotent (see :func:`picool.outbox.fresh_messages`).
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        topics: Sequence[str],
        handler: Handler,
        *,
        group: str | None = None,
        batch: int = 500,
        max_attempts: int = 8,
    ) -> None:
        self.settings = settings
        self.name = name
        self.topics = [settings.topic(t) for t in topics]
        self.group = group or f"{settings.kafka_topic_prefix}{name}"
        self.handler = handler
        self.batch = batch
        self.max_attempts = max_attempts
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._drain = False
        self.ready = asyncio.Event()
        self.handled = 0

    async def _start_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        return consumer

    async def run(self) -> None:
        """Consume until :meth:`stop`; with ``drain`` it first empties what the broker holds."""
        consumer = await self._start_consumer()
        self._consumer = consumer
        try:
            while True:
                if self._stopping.is_set() and not self._drain:
                    break
                batch = await consumer.getmany(timeout_ms=200, max_records=self.batch)
                if not batch:
                    if consumer.assignment():
                        self.ready.set()
                    if self._stopping.is_set() and await self._caught_up(consumer):
                        break
                    continue
                self.ready.set()
                await self._handle(consumer, batch)
        finally:
            self._consumer = None
            try:
                await consumer.stop()
            except Exception:
                log.warning("consumer %s did not stop cleanly", self.name, exc_info=True)

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        lag = await self.lag()
        return lag == 0

    async def _handle(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        messages: list[Message] = []
        for tp, records in batch.items():
            for rec in records:
                try:
                    env = decode_envelope(rec.value or b"")
                except Exception:
                    log.error(
                        "consumer %s: undecodable message at %s:%s@%s", self.name, tp.topic, tp.partition, rec.offset
                    )
                    continue
                messages.append(Message(tp.topic, tp.partition, rec.offset, env))
        attempt = 0
        while True:
            attempt += 1
            try:
                if messages:
                    await self.handler(messages)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                if attempt >= self.max_attempts:
                    log.error(
                        "consumer %s: giving up on a batch of %d after %d attempts",
                        self.name,
                        len(messages),
                        attempt,
                        exc_info=True,
                    )
                    break
                log.warning("consumer %s: batch failed (attempt %d), retrying", self.name, attempt, exc_info=True)
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        await consumer.commit(offsets)
        self.handled += len(messages)

    async def lag(self) -> int:
        """Messages the broker holds for this group that it has not handled yet."""
        consumer = self._consumer
        if consumer is None:
            return 0
        total = 0
        assignment = consumer.assignment()
        if not assignment:
            return 0
        ends = await consumer.end_offsets(list(assignment))
        for tp in assignment:
            try:
                pos = await consumer.position(tp)
            except Exception:
                continue
            total += max(0, ends.get(tp, 0) - pos)
        return total

    def stop(self, *, drain: bool = False) -> None:
        """Ask :meth:`run` to return; with ``drain`` it first handles everything already in the broker."""
        self._drain = drain
        self._stopping.set()
