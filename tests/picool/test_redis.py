"""The Redis client: a burst of concurrent commands beyond the pool size waits for connections, never fails."""

from __future__ import annotations

import asyncio

from picool.redis import create_redis
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
