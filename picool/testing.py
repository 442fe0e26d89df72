"""Helpers for tests that run against the real servers (used by tests/ and bench/)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from picool.kernel import Kernel

# Tables that subsystems seed at start-up and that survive a reset.
KEEP_TABLES = {"alembic_version", "signing_keys", "oauth_clients"}


async def reset_state(kernel: Kernel) -> None:
    """Let in-flight events land, then empty every data table and Redis, and drop local caches.

    Destroys data: only for test and benchmark databases.
    """
    if not kernel.settings.is_dev:
        raise RuntimeError("reset_state refuses to run outside dev/test")
    try:
        await kernel.quiesce(timeout_s=15)
    except TimeoutError:
        pass
    keep = set(KEEP_TABLES)
    for sub in kernel.subsystems:
        keep |= set(sub.state.get("keep_tables", ()))
    for attempt in range(5):
        try:
            async with kernel.engine.begin() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
                    )
                )
                names = sorted({r[0] for r in rows} - keep)
                if names:
                    await conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
            break
        except DBAPIError as exc:
            # A consumer still writing (locks taken in another order than TRUNCATE's) can deadlock
            # with it; PostgreSQL aborts one side, and trying again after it finished is enough.
            if "deadlock" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.2)
    await kernel.redis.flushdb()
    for cache in kernel.caches.values():
        cache.clear_local()
    for sub in kernel.subsystems:
        reset = sub.state.get("reset")
        if reset is not None:
            await reset(kernel)


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy; AssertionError after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last value {value!r})")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def running(app: Litestar, *, wait_consumers: bool = True) -> AsyncIterator[Kernel]:
    """Run ``app``'s lifespan in a task of its own (its task group must enter and exit in one task)."""
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def host() -> None:
        try:
            async with app.lifespan():
                started.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    task = asyncio.create_task(host(), name="app-lifespan")
    await started
    kernel: Kernel = app.state.kernel
    try:
        if wait_consumers:
            await kernel.wait_consumers_ready(timeout_s=60)
        yield kernel
    finally:
        stop.set()
        await task
