"""The Redis client: a burst of concurrent commands beyond the pool size waits for connections, never fails;
the direct path for hot commands gives the same replies and keeps its connections clean."""

from __future__ import annotations

import asyncio
import socket

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from picool.redis import DirectRedis, DirectScript, create_redis, direct, pack
from picool.settings import Settings


async def test_a_burst_beyond_the_pool_waits_for_connections(stack_settings: Settings) -> None:
    redis = create_redis(stack_settings, max_connections=4)
    try:

        async def transaction(k: int) -> list[object]:
            # A MULTI/EXEC pipeline holds its connection for the whole round trip, like a claim does.
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(f"test:burst:{k}", k, ex=60)
                pipe.get(f"test:burst:{k}")
                return list(await pipe.execute())

        results = await asyncio.gather(*(transaction(k) for k in range(100)))
        assert [int(r[1]) for r in results] == list(range(100))  # type: ignore[call-overload]
    finally:
        await redis.aclose()


async def test_direct_commands_pipelines_and_errors(stack_settings: Settings) -> None:
    redis = create_redis(stack_settings)
    d = direct(redis)
    try:
        assert direct(redis) is d  # one per client
        await d.execute("SET", "test:direct:a", "1", "EX", 60)
        assert await d.execute("GET", "test:direct:a") == b"1"
        assert await d.execute_many([["INCR", "test:direct:a"], ["GET", "test:direct:a"], ["PING"]]) == [
            2,
            b"2",
            b"PONG",  # replies as Redis sends them (no response callbacks)
        ]
        # An error reply in the middle is raised once every reply has been read: the next command on the
        # same connection gets its own reply, not a leftover.
        with pytest.raises(ResponseError):
            await d.execute_many([["INCR", "test:direct:a"], ["LPUSH", "test:direct:a", "x"], ["GET", "test:direct:a"]])
        assert await d.execute("GET", "test:direct:a") == b"3"
        assert await d.execute_many([]) == []
        await d.aclose()
        assert await d.execute("GET", "test:direct:a") == b"3"  # closed, then used again: a fresh connection
    finally:
        await d.aclose()
        await redis.aclose()


async def test_direct_script_reloads_after_a_flush_and_survives_a_killed_connection(stack_settings: Settings) -> None:
    redis = create_redis(stack_settings)
    d = direct(redis)
    script = DirectScript(d, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        await redis.delete("test:direct:s")
        assert await script(["test:direct:s"], [2]) == 2
        await redis.script_flush()
        assert await script(["test:direct:s"], [3]) == 5  # NOSCRIPT: loaded again, ran once
        # Redis drops every normal client connection (a restart or a failover looks the same to a client):
        # the next command goes out on a fresh connection.
        await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert await script(["test:direct:s"], [1]) == 6
    finally:
        await d.aclose()
        await redis.aclose()


async def test_a_cancelled_caller_still_runs_and_leaves_no_reply_behind(stack_settings: Settings) -> None:
    redis = create_redis(stack_settings)
    d = DirectRedis(redis)
    # Busy in Redis for about 0.3 s, then counts: a reply that arrives long after its caller gave up.
    slow = "local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; " + (
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 300000; return redis.call('INCR', KEYS[1])"
    )
    try:
        await redis.delete("test:direct:slow", "test:direct:early")
        task = asyncio.create_task(d.execute("EVAL", slow, 1, "test:direct:slow"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The next caller on the same connection gets its own reply, not the cancelled one's.
        assert await d.execute("PING") == b"PONG"
        assert await redis.get("test:direct:slow") == b"1"  # the cancelled command ran, as one on the wire does
        # Cancelled before its turn's write: it still goes out and runs.
        early = asyncio.create_task(d.execute("INCR", "test:direct:early"))
        await asyncio.sleep(0)
        early.cancel()
        assert await d.execute("GET", "test:direct:early") == b"1"
    finally:
        await d.aclose()
        await redis.aclose()


async def test_the_callers_of_one_turn_share_a_write_and_each_gets_its_own_replies(
    stack_settings: Settings,
) -> None:
    redis = create_redis(stack_settings)
    d = DirectRedis(redis)
    try:
        await d.execute("PING")  # connected
        writes = 0
        link = d._link
        assert link is not None
        transport = link._transport
        real_write = transport.write  # type: ignore[attr-defined]

        def counting_write(data: bytes) -> None:
            nonlocal writes
            writes += 1
            real_write(data)

        transport.write = counting_write  # type: ignore[attr-defined]

        async def caller(k: int) -> list[object]:
            return await d.execute_many(
                [["SET", f"test:direct:turn:{k}", k, "EX", 60], ["GET", f"test:direct:turn:{k}"]]
            )

        results = await asyncio.gather(*(caller(k) for k in range(300)))
        assert results == [[b"OK", str(k).encode()] for k in range(300)]
        assert writes == 1  # one loop turn's callers: one buffer
        # An error reply reaches only its own caller.
        outcomes = await asyncio.gather(
            d.execute("GET", "test:direct:turn:1"),
            d.execute("LPUSH", "test:direct:turn:1", "x"),
            d.execute("GET", "test:direct:turn:2"),
            return_exceptions=True,
        )
        assert outcomes[0] == b"1" and outcomes[2] == b"2"
        assert isinstance(outcomes[1], ResponseError)
    finally:
        await d.aclose()
        await redis.aclose()


def test_pack_matches_redis_py() -> None:
    from redis.asyncio.connection import Connection

    commands = [
        ("EVALSHA", "ab" * 20, 2, "k:{x}", b"k:\x00bin", 1_700_000_000_123, 0.1, -3, "žluť"),
        ("MGET", "a", "b"),
        ("PING",),
    ]
    assert pack(commands) == b"".join(Connection().pack_commands(commands))
    for bad in (None, True, [1]):
        with pytest.raises(TypeError):
            pack([("SET", "k", bad)])


async def test_one_deadline_per_exchange(stack_settings: Settings) -> None:
    redis = create_redis(stack_settings)
    d = DirectRedis(redis)
    d._timeout_s = 0.2
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await d.execute("BLPOP", "test:direct:never", 2)  # blocks longer than the deadline, every try
        assert asyncio.get_running_loop().time() - started < 1.5
        assert await d.execute("PING") == b"PONG"  # the timed-out connections were dropped, not reused
    finally:
        await d.aclose()
        await redis.aclose()


async def test_an_unreachable_redis_is_a_connection_error_not_a_hang(stack_settings: Settings) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = create_redis(stack_settings.with_(redis_url=f"redis://127.0.0.1:{port}/0"))
    d = DirectRedis(redis)
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(d.execute("PING") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await d.aclose()
        await redis.aclose()
