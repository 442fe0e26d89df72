"""The Redis client and a registry of Lua scripts (loaded once, run by EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, RedisError
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
    """The few commands every request sends (rate limits, the claim script, nearby search, cache reads), with
    less client overhead than redis-py's command layer, and the commands of one event-loop turn sent together.

    Through redis-py's client a command pays its pool (a lock, a timeout, observability hooks), its retry
    and argument layers, a task per write (``wait_for``) and a timeout context per read. This keeps one
    connection (made by redis-py with the pool's settings: address, TLS, credentials, database) and then
    speaks to it itself: it packs commands (:func:`pack`), queues what the callers of one loop turn ask and
    writes it as one buffer at the end of the turn, and reads the replies with hiredis as they come, in
    order. Redis runs one client's commands in the order they arrive, so a caller's commands still run
    together and in order; under load many callers share one write, one read and one reply write in Redis.

    - **Deadline.** A caller whose replies have not all arrived ``socket_timeout`` seconds after its commands
      were queued fails the connection (its state is unknown): every caller waiting on it gets an error.
    - **Retries.** A caller whose connection failed (dropped, refused, timed out) is tried again on a fresh
      connection up to ``RETRIES`` times, as the client's own retry policy (``retry_on_timeout``) would.
    - **Cancellation.** A cancelled caller's commands are still sent and run (as a command already on the
      wire would be); its replies are read and dropped, so the connection stays in step.
    - **No blocking commands** (BLPOP and the like): they would hold up every caller behind them.
    """

    RETRIES = 2

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        timeout = self._pool.connection_kwargs.get("socket_timeout")
        self._timeout_s: float = float(timeout) if timeout else 10.0
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None

    async def _current(self) -> _Link:
        link = self._link
        if link is not None and link.usable:
            return link
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect(), name="direct-redis-connect")
            # Its callers may all have been cancelled meanwhile: a failure is then nobody's to read.
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        task = self._connecting
        try:
            # Shared by every caller that needs the connection meanwhile; one caller's cancellation must not
            # cancel the others' connect.
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> _Link:
        # redis-py makes the connection and its handshake (TLS, AUTH, SELECT, client name) from the pool's
        # settings; then this takes the socket over. No per-operation socket timeout: the link's deadline
        # covers every exchange instead.
        kwargs = {**self._pool.connection_kwargs, "socket_timeout": None}
        conn: AbstractConnection = self._pool.connection_class(**kwargs)
        await conn.connect()  # type: ignore[no-untyped-call]
        writer = conn._writer
        if writer is None:  # pragma: no cover - connect() either sets it or raises
            raise RedisConnectionError("Redis connection has no transport after connecting")
        conn._writer = conn._reader = None  # the connection object must not close the socket it no longer owns
        link = _Link(writer, self._timeout_s)
        writer.transport.set_protocol(link)
        self._link = link
        return link

    async def execute(self, *args: Any) -> Any:
        """One command; its reply as redis-py parses it (bytes, ints, lists), errors raised."""
        return (await self.execute_many([args]))[0]

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands in one round trip (a pipeline without MULTI); the replies in order. An error
        reply is raised after every reply has been read (the first one), so the connection stays usable."""
        if not commands:
            return []
        packed = pack(commands)
        for attempt in range(self.RETRIES + 1):
            try:
                link = await self._current()
                replies = await link.exchange(packed, len(commands))
                error = next((r for r in replies if isinstance(r, RedisError)), None)
                if isinstance(error, RedisConnectionError):  # e.g. LOADING or max clients: as a failed connection
                    raise error
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError):
                if attempt == self.RETRIES:
                    raise
                continue
            if error is not None:
                raise error
            return replies
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the connection; callers still waiting on it get a connection error (a later call connects
        again)."""
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.wait([self._connecting])  # gone, whatever it ended with
            self._connecting = None
        link, self._link = self._link, None
        if link is not None:
            await link.close()


class _Exchange:
    """One caller's commands on a link: how many replies it waits for, and those read so far."""

    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, deadline: float) -> None:
        self.future = future
        self.expected = expected
        self.deadline = deadline
        self.replies: list[Any] = []


class _Link(asyncio.Protocol):
    """One Redis connection shared by every caller: writes gathered per loop turn, replies matched in order."""

    def __init__(self, writer: asyncio.StreamWriter, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer = writer  # held: a StreamWriter closes its socket when it is collected
        self._transport = writer.transport
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self._waiting: collections.deque[_Exchange] = collections.deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._failure: BaseException | None = None
        self._lost = self._loop.create_future()

    @property
    def usable(self) -> bool:
        """Whether new commands may still go out on this link."""
        return self._failure is None

    def exchange(self, packed: bytes, expected: int) -> asyncio.Future[list[Any]]:
        """Queue ``packed`` (``expected`` commands) for this turn's write; the future gets their replies."""
        if self._failure is not None:
            raise RedisConnectionError("Redis connection lost") from self._failure
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        entry = _Exchange(future, expected, self._loop.time() + self._timeout_s)
        self._waiting.append(entry)
        self._out.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(entry.deadline, self._check_deadline)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._failure is not None or not self._out:
            return
        out, self._out = self._out, []
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        """Hand each complete reply to the oldest caller still waiting for one."""
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := reader.gets()) is not False:
                if not waiting:
                    raise InvalidResponse("Redis sent a reply nobody asked for")
                entry = waiting[0]
                entry.replies.append(reply)
                if len(entry.replies) == entry.expected:
                    waiting.popleft()
                    if not entry.future.done():  # a cancelled caller's replies are dropped
                        entry.future.set_result(entry.replies)
        except InvalidResponse as exc:
            self._fail(exc)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        oldest = self._waiting[0]
        if oldest.deadline <= self._loop.time():
            self._fail(TimeoutError(f"no reply from Redis within {self._timeout_s}s"))
        else:
            self._watchdog = self._loop.call_at(oldest.deadline, self._check_deadline)

    def _fail(self, exc: BaseException) -> None:
        """Give up on the connection: every caller still waiting gets a connection error (``exc`` itself when it
        is the deadline's TimeoutError)."""
        if self._failure is None:
            self._failure = exc
            self._transport.abort()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._out.clear()
        waiting, self._waiting = self._waiting, collections.deque()
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(
                    exc if isinstance(exc, TimeoutError) else RedisConnectionError(f"Redis connection lost: {exc}")
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or RedisConnectionError("Redis closed the connection"))
        if not self._lost.done():
            self._lost.set_result(None)

    async def close(self) -> None:
        """Close the connection and wait until it is gone."""
        self._fail(RedisConnectionError("the direct Redis client is closed"))
        await self._lost


_pack_command: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """The RESP request for ``commands`` (bytes, str as UTF-8, int, float; anything else is a TypeError, as
    redis-py refuses it), what redis-py's packer makes: hiredis's C packer, about half the cost of packing in
    Python and a tenth of redis-py's."""
    if len(commands) == 1:
        return _pack_command(tuple(commands[0]))
    return b"".join([_pack_command(tuple(command)) for command in commands])


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
