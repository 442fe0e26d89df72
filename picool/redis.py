"""The Redis client and a registry of Lua scripts (loaded once, run by EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript

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


class ScriptRegistry:
    """Named Lua scripts for one client.

    redis-py's ``Script`` does the EVALSHA-then-load-on-NOSCRIPT dance; this keeps one per name
    so every script is hashed once per process and loaded into Redis at most once per restart of Redis.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {}

    def register(self, name: str, source: str) -> AsyncScript:
        """Register ``source`` under ``name`` (idempotent for the same source)."""
        existing = self._scripts.get(name)
        if existing is not None and existing.script == source:
            return existing
        script = self._redis.register_script(source)
        self._scripts[name] = script
        return script

    def register_package(self, package: str, subdir: str = "lua") -> None:
        """Register every ``*.lua`` file in ``package/subdir`` under ``package.stem`` names."""
        root = resources.files(package).joinpath(subdir)
        for entry in root.iterdir():
            if entry.name.endswith(".lua"):
                self.register(f"{package}.{entry.name[:-4]}", entry.read_text("utf-8"))

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script by EVALSHA (reloading it if Redis lost it)."""
        return await self._scripts[name](keys=keys, args=args)

    def __contains__(self, name: str) -> bool:
        return name in self._scripts
