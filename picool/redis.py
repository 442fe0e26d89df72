"""The Redis client and a registry of Lua scripts (loaded once, run by EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from picool.settings import Settings


def create_redis(settings: Settings, **kw: Any) -> Redis:
    """The process's Redis client (a connection pool; responses as bytes).

    The pool *blocks*: a burst beyond ``max_connections`` waits up to ``pool_timeout`` seconds for a
    free connection instead of failing. A flash sale opens with every runner tapping in the same
    second; with redis-py's default pool the 201st concurrent claim raised ``Too many connections``
    (a 500), as ``picool simulate`` showed.
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=kw.pop("max_connections", 200),
        timeout=kw.pop("pool_timeout", 10),
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=kw.pop("socket_timeout", 10),
        retry_on_timeout=True,
        **kw,
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


class DirectRedis:
    """The few commands every request sends (rate limits, the claim script, nearby search), with less client
    overhead than redis-py's command layer.

    Through redis-py's client a command pays its pool (a lock, a timeout, observability hooks), its retry
    and argument layers, a task per write (``wait_for``) and a timeout context per read; measured here,
    one EVALSHA costs 107-179 us of CPU that way and 44-58 us this way, two in a pipeline 156-262 us and
    48-57 us (``uv run python bench/redis_client.py``, several runs).
    This keeps its own small set of connections, made with the client pool's settings (address, health
    checks) but one deadline per exchange instead of per-socket-operation timeouts, packs commands itself
    (:func:`pack`) and reads the replies with redis-py's parser. A connection that fails, times out or is
    cancelled mid-exchange is dropped, never reused; the exchange is tried again on a fresh connection
    up to ``RETRIES`` times, as the client's own retry policy (``retry_on_timeout``) would.
    """

    RETRIES = 2

    def __init__(self, redis: Redis, max_connections: int = 64) -> None:
        self._pool = redis.connection_pool
        timeout = self._pool.connection_kwargs.get("socket_timeout")
        self._timeout_s: float = float(timeout) if timeout else 10.0
        self._idle: list[AbstractConnection] = []
        self._max = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def _acquire(self) -> AbstractConnection:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            # Same settings as the pool's, but no per-read/per-write socket timeout: redis-py wraps every write
            # in wait_for (a task) and every read in a timeout context when one is set; one deadline covers
            # the whole exchange instead (see execute_many).
            kwargs = {**self._pool.connection_kwargs, "socket_timeout": None}
            conn: AbstractConnection = self._pool.connection_class(**kwargs)
            return conn  # it connects on its first send
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: AbstractConnection, healthy: bool) -> None:
        if healthy:
            self._idle.append(conn)
        else:  # an error or a cancellation mid-command: its state is unknown, so it goes
            task = asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        assert self._slots is not None
        self._slots.release()

    async def execute(self, *args: Any) -> Any:
        """One command; its reply as redis-py parses it (bytes, ints, lists), errors raised."""
        return (await self.execute_many([args]))[0]

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands in one round trip (a pipeline without MULTI); the replies in order. An error
        reply is raised after every reply has been read (the first one), so the connection stays usable."""
        for attempt in range(self.RETRIES + 1):
            conn = await self._acquire()
            healthy = False
            try:
                async with asyncio.timeout(self._timeout_s):
                    await conn.send_packed_command(pack(commands))
                    replies: list[Any] = []
                    error: ResponseError | None = None
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as exc:
                            error = error or exc
                            replies.append(exc)
                healthy = True
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError):
                if attempt == self.RETRIES:
                    raise
                continue
            finally:
                self._release(conn, healthy)
            if error is not None:
                raise error
            return replies
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the idle connections (those in use close when they come back unhealthy or at exit)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot send {type(value).__name__} to Redis")  # as redis-py refuses them
    return (repr(value) if isinstance(value, float) else str(value)).encode()


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """The RESP request for ``commands`` (bytes, str as UTF-8, int, float), what redis-py's packer makes
    at a fraction of its cost."""
    out: list[bytes] = []
    add = out.append
    for command in commands:
        add(b"*%d\r\n" % len(command))
        for value in command:
            kind = type(value)  # exact types first: the hot path of every command (bool is no int here)
            if kind is str:
                data = value.encode()
            elif kind is int:
                data = b"%d" % value
            elif kind is bytes:
                data = value
            else:
                data = _arg(value)
            add(b"$%d\r\n" % len(data))
            add(data)
            add(b"\r\n")
    return b"".join(out)


class DirectScript:
    """A Lua script run by EVALSHA through :class:`DirectRedis`, loaded again when Redis lost it."""

    def __init__(self, direct: DirectRedis, source: str) -> None:
        self.direct = direct
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()  # Redis names scripts by SHA-1

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        """The EVALSHA command for :meth:`DirectRedis.execute_many`."""
        return ["EVALSHA", self.sha, len(keys), *keys, *args]

    async def load(self) -> None:
        """Load the script into Redis (after a NOSCRIPT)."""
        await self.direct.execute("SCRIPT", "LOAD", self.source)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self.direct.execute(*self.command(keys, args))
        except NoScriptError:  # Redis restarted or was flushed: nothing ran
            await self.load()
            return await self.direct.execute(*self.command(keys, args))


def direct(redis: Redis) -> DirectRedis:
    """The :class:`DirectRedis` of ``redis``'s pool (one per client, made on first use)."""
    d = getattr(redis, "_picool_direct", None)
    if d is None:
        d = DirectRedis(redis)
        redis._picool_direct = d  # type: ignore[attr-defined]
    return d


class ScriptRegistry:
    """Named Lua scripts for one client.

    redis-py's ``Script`` does the EVALSHA-then-load-on-NOSCRIPT dance; this keeps one per name
    so every script is hashed once per process and loaded into Redis at most once per restart of Redis.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {}
        self._direct: dict[str, DirectScript] = {}

    def register(self, name: str, source: str) -> AsyncScript:
        """Register ``source`` under ``name`` (idempotent for the same source)."""
        existing = self._scripts.get(name)
        if existing is not None and existing.script == source:
            return existing
        script = self._redis.register_script(source)
        self._scripts[name] = script
        self._direct[name] = DirectScript(direct(self._redis), source)
        return script

    def register_package(self, package: str, subdir: str = "lua") -> None:
        """Register every ``*.lua`` file in ``package/subdir`` under ``package.stem`` names."""
        root = resources.files(package).joinpath(subdir)
        for entry in root.iterdir():
            if entry.name.endswith(".lua"):
                self.register(f"{package}.{entry.name[:-4]}", entry.read_text("utf-8"))

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script by EVALSHA (reloading it if Redis lost it)."""
        return await self._direct[name](keys, args)

    def __contains__(self, name: str) -> bool:
        return name in self._scripts
