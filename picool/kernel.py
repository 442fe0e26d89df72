"""The kernel: the connections and background machinery one process shares across its subsystems."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import httpx
from litestar.types import ASGIApp
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from picool import db, events
from picool.cache import CacheBus, TwoLevelCache
from picool.ids import IdGenerator, lease_node_id
from picool.kafka import ConsumerWorker, KafkaBus
from picool.outbox import OutboxRelay
from picool.redis import ScriptRegistry, create_redis, direct
from picool.settings import Settings
from picool.subsystem import Subsystem
from picool.tokens import ALL_AUDIENCES, Denylist, JwksSource, TokenVerifier, http_jwks_source
from picool.workers import Periodic

log = logging.getLogger("picool.kernel")

SERVICE_CLIENT_ID = "picool-service"


class Kernel:
    """Owns the engine, Redis, Kafka, the outbox relay, caches, the token verifier and the workers.

    Start order: Redis, PostgreSQL, Kafka, cache bus and denylist notices, subsystem hooks, then background
    workers.
    Stop order (after the server stopped taking requests): stop schedulers, flush the outbox relay,
    let consumers drain what the broker holds, then close Kafka, the cache bus, Redis and the engine.
    """

    def __init__(self, settings: Settings, subsystems: list[Subsystem] | None = None) -> None:
        self.settings = settings
        self.subsystems: list[Subsystem] = list(subsystems or [])
        self.engine: AsyncEngine = db.create_engine(settings)
        self.sessionmaker: async_sessionmaker[AsyncSession] = db.create_sessionmaker(self.engine)
        self.redis: Redis = create_redis(settings)
        self.scripts = ScriptRegistry(self.redis)
        self.bus = KafkaBus(settings)
        self.relay = OutboxRelay(settings, self.sessionmaker, self.bus)
        self.cache_bus = CacheBus(self.redis)
        self.denylist = Denylist(self.redis)
        self.ids = IdGenerator(0)
        self.jwks_provider: JwksSource | None = None
        self.verifier = TokenVerifier(settings.token_issuer, ALL_AUDIENCES, self._jwks, self.denylist)
        self.app: ASGIApp | None = None
        self.caches: dict[str, TwoLevelCache[Any]] = {}
        self.services: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[ConsumerWorker] = []
        self._periodics: list[Periodic] = []
        self._http: dict[str, httpx.AsyncClient] = {}
        self._service_token: tuple[str, float] | None = None
        self.started = False

    async def _jwks(self) -> Mapping[str, Any]:
        if self.jwks_provider is not None:
            return await self.jwks_provider()
        auth_url = self.settings.extra.get("upstream_auth") or self.settings.base_url
        return await http_jwks_source(auth_url.rstrip("/") + "/.well-known/jwks.json")()

    def cache(self, name: str, type_: Any, **kw: Any) -> TwoLevelCache[Any]:
        """The named two-level cache (created on first use)."""
        c = self.caches.get(name)
        if c is None:
            c = TwoLevelCache(name, self.cache_bus, type_, **kw)
            self.caches[name] = c
        return c

    def service_secret(self) -> str:
        """The internal service client's secret, derived from the settings' secret key."""
        return hmac.new(self.settings.secret_key.encode(), b"picool-service-client", hashlib.sha256).hexdigest()

    def http_client(self, target: str) -> httpx.AsyncClient:
        """An HTTP client for subsystem ``target``: over the network when ``PICOOL_UPSTREAM_<TARGET>`` is
        set, else through an in-process transport into this very app (no socket, no second process)."""
        client = self._http.get(target)
        if client is None:
            url = self.settings.extra.get(f"upstream_{target}")
            if url:
                client = httpx.AsyncClient(base_url=url, timeout=10.0)
            else:
                if self.app is None:
                    raise RuntimeError("no app to call in-process")
                transport = httpx.ASGITransport(app=cast(Any, self.app))
                client = httpx.AsyncClient(transport=transport, base_url=self.settings.base_url, timeout=10.0)
            self._http[target] = client
        return client

    async def service_token(self) -> str:
        """An access token for service-to-service calls (client_credentials), cached until near expiry."""
        cached = self._service_token
        if cached is not None and cached[1] - time.time() > 60:
            return cached[0]
        client = self.http_client("auth")
        resp = await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "scope": "coupon:templates:read"},
            auth=(SERVICE_CLIENT_ID, self.service_secret()),
        )
        resp.raise_for_status()
        body = resp.json()
        token = str(body["access_token"])
        self._service_token = (token, time.time() + float(body.get("expires_in", 300)))
        return token

    async def start(self, *, workers: bool | None = None) -> None:
        """Connect everything, run the subsystems' startup hooks, then start background workers."""
        s = self.settings
        await self.redis.ping()
        node = await lease_node_id(self.redis, s.node_id)
        self.ids = IdGenerator(node)
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await self.bus.start()
        topics = list(events.ALL_TOPICS)
        for sub in self.subsystems:
            topics += [t for t in sub.topics if t not in topics]
        await self.bus.ensure_topics(topics)
        await self.cache_bus.start()
        await self.denylist.start()
        for sub in self.subsystems:
            for hook in sub.on_startup:
                await hook(self)
        run_workers = s.workers_enabled if workers is None else workers
        run_consumers = run_workers and s.consumers_enabled
        if run_workers:
            self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        if run_consumers:
            for sub in self.subsystems:
                for consumer in sub.consumers:
                    self._consumers.append(consumer)
                    self._tasks.append(asyncio.create_task(consumer.run(), name=f"consumer-{consumer.name}"))
                for job in sub.periodics:
                    self._periodics.append(job)
                    self._tasks.append(asyncio.create_task(job.run(), name=f"periodic-{job.name}"))
        self.started = True
        log.info("kernel started", extra={"node": node, "workers": run_workers, "consumers": run_consumers})

    @property
    def consumers(self) -> list[ConsumerWorker]:
        """The Kafka consumers running in this process."""
        return list(self._consumers)

    async def start_minimal(self) -> None:
        """Connect only PostgreSQL and Redis (for admin commands: no Kafka, no workers)."""
        await self.redis.ping()
        self.ids = IdGenerator(await lease_node_id(self.redis, self.settings.node_id))
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close_minimal(self) -> None:
        """Undo :meth:`start_minimal`."""
        with contextlib.suppress(Exception):
            await direct(self.redis).aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        await self.engine.dispose()

    async def wait_consumers_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until every consumer has joined its group and been assigned partitions."""
        if self._consumers:
            await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in self._consumers)), timeout_s)

    async def quiesce(self, timeout_s: float = 30.0) -> None:
        """Wait until the outbox is empty and every consumer has caught up (used by tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            backlog = await self.relay.backlog()
            lags = [await c.lag() for c in self._consumers]
            if backlog == 0 and not any(lags):
                return
            self.relay.wake()
            await asyncio.sleep(0.05)
        raise TimeoutError("kernel did not quiesce")

    async def stop(self) -> None:
        """Stop in order so that a clean stop loses nothing (see the class docstring)."""
        for job in self._periodics:
            job.stop()
        self.relay.stop()
        for sub in self.subsystems:
            for hook in sub.on_shutdown:
                with contextlib.suppress(Exception):
                    await hook(self)
        relay_tasks = [t for t in self._tasks if t.get_name() == "outbox-relay"]
        other = [t for t in self._tasks if t.get_name().startswith("periodic-")]
        await asyncio.gather(*relay_tasks, *other, return_exceptions=True)
        if self.started:
            try:
                await self.relay.flush(timeout_s=20)
            except Exception:
                log.warning("outbox flush at shutdown failed; rows stay in PostgreSQL", exc_info=True)
        for consumer in self._consumers:
            consumer.stop(drain=True)
        consumer_tasks = [t for t in self._tasks if t.get_name().startswith("consumer-")]
        if consumer_tasks:
            _done, pending = await asyncio.wait(consumer_tasks, timeout=20)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        for client in self._http.values():
            await client.aclose()
        self._http.clear()
        with contextlib.suppress(Exception):
            await self.bus.stop()
        await self.cache_bus.stop()
        await self.denylist.stop()
        with contextlib.suppress(Exception):
            await direct(self.redis).aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        await self.engine.dispose()
        self.started = False
        log.info("kernel stopped")

    async def check(self) -> dict[str, str]:
        """Readiness of each server: ``ok`` or the error (each bounded by a short timeout)."""
        out: dict[str, str] = {}

        async def probe(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
            try:
                await asyncio.wait_for(fn(), timeout=2.0)
                out[name] = "ok"
            except Exception as exc:
                out[name] = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__

        async def pg() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        await asyncio.gather(
            probe("postgres", pg),
            probe("redis", self.redis.ping),
            probe("kafka", self.bus.ping),
        )
        return out
