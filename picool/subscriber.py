"""One Redis pub/sub channel listened to for as long as the process runs, through Redis losses.

Pub/sub delivers a message only to the subscribers connected when it is published, so a subscriber
that lost its connection cannot know what it missed. :class:`Subscriber` says so: whenever the
subscription may have missed messages it reports not-listening and calls ``on_lost``; once subscribed
again it calls ``on_subscribed`` (where an owner reloads whatever the messages keep up to date), then
delivers what arrived meanwhile, then reports listening again.

redis-py reconnects a pub/sub connection by itself and subscribes again, silently but for a fresh
``subscribe`` confirmation in the message stream: that confirmation is taken as a loss too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger("picool.subscriber")

MessageHandler = Callable[[str], Awaitable[None]]
DRAIN_MARK = "picool-subscriber-drain"  # the PING that marks the end of what arrived during on_subscribed


class Subscriber:
    """Delivers every message published on ``channel`` to ``on_message`` (decoded as UTF-8), in order.

    ``listening`` is True only while the subscription is live and every message published since the
    last ``on_subscribed`` has been delivered or is on its way. A handler that raises is logged and
    skipped; it does not stop the subscription.
    """

    def __init__(
        self,
        redis: Redis,
        channel: str,
        on_message: MessageHandler,
        *,
        on_lost: Callable[[], None] | None = None,
        on_subscribed: Callable[[], Awaitable[None]] | None = None,
        name: str = "subscriber",
        poll_s: float = 1.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.on_message = on_message
        self.on_lost = on_lost
        self.on_subscribed = on_subscribed
        self.name = name
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.listening = False
        self.losses = 0  # how many times the subscription was lost (for logs and tests)
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe; returns once the subscription is live (raises if Redis cannot be reached)."""
        if self._task is not None:
            return
        try:
            await self._subscribe()
        except BaseException:
            self.listening = False
            await self._close()
            raise
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Unsubscribe and stop delivering."""
        self.listening = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close()

    async def _subscribe(self) -> None:
        """A fresh connection, subscribed and confirmed, then ``on_subscribed`` and what arrived meanwhile."""
        await self._close()
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.channel)
        # Wait for the confirmation: only then does Redis deliver to us whatever is published, so
        # whatever ``on_subscribed`` reads afterwards cannot miss a change that we would not hear of.
        while True:
            msg = await self._pubsub.get_message(timeout=self.poll_s)
            if msg is None:
                raise TimeoutError(f"no subscription confirmation on {self.channel}")
            if msg.get("type") == "subscribe":
                break
        await self._resubscribed()

    async def _resubscribed(self) -> None:
        if self.on_subscribed is not None:
            await self.on_subscribed()
        # Deliver what was published while on_subscribed ran before saying we are live again. Redis queued
        # those messages on this connection when they were published, so the answer to a PING sent now
        # comes after every one of them: read up to it. (Reading only what had already arrived could miss
        # a message still on its way through the socket.)
        await self._pubsub.ping(DRAIN_MARK)
        while True:
            msg = await self._pubsub.get_message(timeout=self.poll_s)
            if msg is None:
                raise TimeoutError(f"no answer to the drain PING on {self.channel}")
            if msg.get("type") == "pong" and msg.get("data") in (DRAIN_MARK, DRAIN_MARK.encode()):
                break
            await self._deliver(msg)
        self.listening = True

    def _lost(self) -> None:
        self.listening = False
        self.losses += 1
        if self.on_lost is not None:
            try:
                self.on_lost()
            except Exception:
                log.exception("%s: on_lost failed", self.name)

    async def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _deliver(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "subscribe":
            # redis-py reconnected and subscribed again by itself: anything published in between is lost.
            log.warning("%s: subscription to %s was lost and restored", self.name, self.channel)
            self._lost()
            await self._resubscribed()
            return
        if msg.get("type") != "message":
            return
        data = msg["data"]
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        try:
            await self.on_message(text)
        except Exception:
            log.exception("%s: handler failed for %r", self.name, text)

    async def _run(self) -> None:
        backoff = self.backoff_s
        try:
            while True:
                try:
                    if self._pubsub is None:
                        await self._subscribe()
                        backoff = self.backoff_s
                    msg = await self._pubsub.get_message(timeout=self.poll_s)
                    if msg is not None:
                        await self._deliver(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if self.listening:
                        log.warning("%s: lost Redis; subscribing again", self.name, exc_info=True)
                        self._lost()
                    else:
                        log.debug("%s: still no subscription", self.name, exc_info=True)
                    self.listening = False
                    await self._close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
        finally:
            self.listening = False
            await self._close()
