"""Background jobs that run inside the app process: periodic schedulers guarded by a Redis lease."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger("picool.workers")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Periodic:
    """Runs ``fn`` every ``interval_s`` seconds (jittered) until stopped.

    With ``exclusive`` only one process in the deployment runs it at a time (a Redis lease), for jobs
    whose parallel runs would only waste work; every job must still be safe to run twice.
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        fn: Callable[[], Awaitable[Any]],
        *,
        exclusive: bool = True,
        redis: Redis | None = None,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.fn = fn
        self.exclusive = exclusive
        self.redis = redis
        self._stopping = asyncio.Event()
        self.runs = 0
        self._owner = f"{os.getpid()}:{id(self)}"

    async def run_once(self) -> None:
        """Run the job now (taking the lease if exclusive)."""
        lease_key = f"picool:lease:{self.name}"
        if self.exclusive and self.redis is not None:
            ttl_ms = int(max(self.interval_s * 4, 10) * 1000)
            if not await self.redis.set(lease_key, self._owner, nx=True, px=ttl_ms):
                return
        try:
            await self.fn()
            self.runs += 1
        finally:
            if self.exclusive and self.redis is not None:
                await self.redis.eval(_RELEASE, 1, lease_key, self._owner)

    async def run(self) -> None:
        """Loop until :meth:`stop`."""
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("periodic job %s failed", self.name, exc_info=True)
            delay = self.interval_s * random.uniform(0.9, 1.1)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            except TimeoutError:
                pass

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stopping.set()
