"""The pub/sub subscriber: messages reach the handler; a killed connection is reported, recovered and reloaded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from picool.redis import create_redis
from picool.settings import Settings
from picool.subscriber import Subscriber
from picool.testing import wait_for


class Recorder:
    """A subscriber's callbacks, recording what happened in order (with ``listening`` at that moment)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.sub: Subscriber | None = None
        self.during_subscribe: list[str] = []  # messages to publish (from outside) while on_subscribed runs
        self.publisher: Redis | None = None

    async def on_message(self, text: str) -> None:
        assert self.sub is not None
        if text == "boom":
            raise RuntimeError("a handler that fails")
        self.events.append((text, self.sub.listening))

    def on_lost(self) -> None:
        assert self.sub is not None
        self.events.append(("lost", self.sub.listening))

    async def on_subscribed(self) -> None:
        assert self.sub is not None
        self.events.append("subscribed")
        for text in self.during_subscribe:
            assert self.publisher is not None
            await self.publisher.publish(self.sub.channel, text)
        self.during_subscribe = []

    def messages(self) -> list[str]:
        return [e[0] for e in self.events if isinstance(e, tuple) and e[0] != "lost"]


@pytest.fixture
async def publisher(stack_settings: Settings) -> AsyncIterator[Redis]:
    redis = create_redis(stack_settings)
    try:
        yield redis
    finally:
        await redis.aclose()


async def _kill_pubsub(redis: Redis, client_name: str) -> int:
    """Kill the pub/sub connections of clients named ``client_name`` (only ours, not the session app's)."""
    listing = await redis.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    ids = [
        dict(part.split(b"=", 1) for part in line.split() if b"=" in part)[b"id"]
        for line in listing.splitlines()
        if f" name={client_name} ".encode() in line
    ]
    for cid in ids:
        await redis.execute_command("CLIENT", "KILL", "ID", cid)
    return len(ids)


async def _started(stack_settings: Settings, publisher: Redis, **redis_kw: Any) -> tuple[Subscriber, Recorder, str]:
    name = f"sub-{uuid.uuid4().hex[:8]}"
    rec = Recorder()
    rec.publisher = publisher
    sub = Subscriber(
        create_redis(stack_settings, client_name=name, **redis_kw),
        f"test:channel:{name}",
        rec.on_message,
        on_lost=rec.on_lost,
        on_subscribed=rec.on_subscribed,
        name=name,
        backoff_s=0.05,
    )
    rec.sub = sub
    await sub.start()
    return sub, rec, name


async def _stop(sub: Subscriber) -> None:
    await sub.stop()
    await sub.redis.aclose()


async def test_messages_reach_the_handler_in_order(stack_settings: Settings, publisher: Redis) -> None:
    sub, rec, _ = await _started(stack_settings, publisher)
    try:
        assert sub.listening and rec.events == ["subscribed"]
        for text in ("a", "boom", "b", "c"):  # a handler that raises does not stop the subscription
            await publisher.publish(sub.channel, text)
        await wait_for(lambda: _async(rec.messages() == ["a", "b", "c"]), timeout_s=5)
        assert all(listening for _, listening in rec.events[1:])
    finally:
        await _stop(sub)
    assert not sub.listening


async def test_messages_sent_while_subscribing_come_after_on_subscribed(
    stack_settings: Settings, publisher: Redis
) -> None:
    # What an owner loads in on_subscribed is a snapshot; what changed meanwhile must be applied over it,
    # before the subscriber says it is live.
    name = f"sub-{uuid.uuid4().hex[:8]}"
    rec = Recorder()
    rec.publisher = publisher
    rec.during_subscribe = ["x", "y"]
    channel = f"test:channel:{name}"
    sub = Subscriber(create_redis(stack_settings), channel, rec.on_message, on_subscribed=rec.on_subscribed)
    rec.sub = sub
    await sub.start()
    try:
        assert rec.events == ["subscribed", ("x", False), ("y", False)]  # delivered, then listening
        assert sub.listening
    finally:
        await _stop(sub)


@pytest.mark.parametrize("retries", ["redis-py reconnects", "no retries"])
async def test_a_killed_connection_is_reported_and_messages_flow_again(
    stack_settings: Settings, publisher: Redis, retries: str
) -> None:
    # redis-py either reconnects and subscribes again by itself (only a fresh confirmation tells), or,
    # without retries, get_message raises: both must be seen as a loss.
    kw: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)} if retries == "no retries" else {}
    sub, rec, name = await _started(stack_settings, publisher, **kw)
    try:
        await publisher.publish(sub.channel, "before")
        await wait_for(lambda: _async(rec.messages() == ["before"]), timeout_s=5)
        assert await _kill_pubsub(publisher, name) == 1
        await wait_for(lambda: _async(sub.losses == 1 and sub.listening), timeout_s=5)
        assert rec.events[2:] == [("lost", False), "subscribed"]  # reported not listening, then reloaded
        await publisher.publish(sub.channel, "after")
        await wait_for(lambda: _async(rec.messages() == ["before", "after"]), timeout_s=5)
    finally:
        await _stop(sub)


async def test_start_fails_when_redis_is_unreachable(stack_settings: Settings) -> None:
    from picool.stack import free_port

    nowhere = stack_settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    redis = create_redis(nowhere, retry=Retry(NoBackoff(), 0))

    async def ignore(_: str) -> None:
        return None

    sub = Subscriber(redis, "test:channel:nowhere", ignore)
    try:
        with pytest.raises(RedisConnectionError):
            await sub.start()
        assert not sub.listening
    finally:
        await _stop(sub)


async def _async(value: bool) -> bool:
    await asyncio.sleep(0)
    return value
