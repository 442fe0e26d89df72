"""Sliding-window rate limits in Redis: exact under concurrency (one Lua script per check).

A limit "N per W seconds" means: in any window of W seconds, at most N requests are let through.
Each key holds a sorted set of the admitted requests' timestamps; the script drops the ones that left
the window, counts the rest and admits the request only if the count is below N. One script call checks
the keys of one hash tag (one Cluster slot; a key without a tag alone), so it works unchanged on Redis
Cluster.

The windows live in memory only: the script tells Redis not to write its changes to the append-only
file or to replicas (``redis.set_repl(redis.REPL_NONE)``). Every request of every client passes here, so
these were most of what Redis appended to disk, on the same disk as the claim ledger and PostgreSQL's
WAL; a Redis restart or a failover forgets the windows (each client may start one fresh window), which a
flood guard can afford and a ledger could not.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from picool.redis import DirectScript, direct

# KEYS: one window set per limit (all in one Cluster slot). ARGV: now_ms, then per key: window_ms, limit, member.
# Returns per key {admitted(0/1), count_after, oldest_ms}; each key is decided by itself.
_SLIDING = """
redis.set_repl(redis.REPL_NONE)
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local admitted = 0
  if count < limit then
    redis.call('ZADD', key, now, ARGV[3 * i + 1])
    count = count + 1
    admitted = 1
  end
  redis.call('PEXPIRE', key, window)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local oldest_ms = now
  if oldest[2] then oldest_ms = tonumber(oldest[2]) end
  out[i] = {admitted, count, oldest_ms}
end
return out
"""

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class RateLimitSpecError(ValueError):
    """A rate-limit specification could not be parsed."""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``limit`` requests in any ``window_s`` seconds."""

    limit: int
    window_s: int

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Parse ``"N/W"`` (N requests per W seconds)."""
        m = _SPEC.match(text)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise RateLimitSpecError(f"rate limit must look like N/SECONDS, got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check, with what the ``RateLimit-*`` headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (and ``Retry-After`` when refused)."""
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after_s)
        return h


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """Limits a subsystem puts on some of its own routes (the claim endpoints' per-IP and per-account claim
    rates), on top of the route group's. The edge checks them in the same Redis round trip as the group's,
    so a limited route costs no extra trip; a refusal is a 429 ``rate_limited`` saying ``what`` was too
    many, and ``on_refused(path, by)`` lets the subsystem count it in its own metrics."""

    name: str  # the keys' prefix and the metrics label, e.g. "claims"
    method: str
    path: re.Pattern[str]  # matched against the whole path
    per_ip: Limit | None
    per_user: Limit | None
    what: str  # "claims" -> "Too many claims from this address; retry in 5s."
    on_refused: Callable[[str, str], None] | None = None

    def applies(self, method: str, path: str) -> bool:
        """Whether a request for ``method`` ``path`` is limited here."""
        return method == self.method and self.path.fullmatch(path) is not None

    def refusal(self, by: str, decision: Decision) -> str:
        """The problem detail of a refusal by the ``ip`` or ``user`` limit."""
        who = "address" if by == "ip" else "account"
        return f"Too many {self.what} from this {who}; retry in {decision.retry_after_s}s."


class RateLimiter:
    """Checks sliding-window limits for arbitrary keys."""

    def __init__(self, redis: Redis, prefix: str = "picool:rl:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = DirectScript(direct(redis), _SLIDING)

    async def hit(self, key: str, limit: Limit) -> Decision:
        """Count one request for ``key`` against ``limit``; admitted requests are the only ones counted."""
        return (await self.hit_many([(key, limit)]))[0]

    async def hit_many(self, checks: list[tuple[str, Limit]]) -> list[Decision]:
        """:meth:`hit` for several keys in one Redis round trip (a pipeline: each key is still checked
        atomically by itself, and each counts the request whatever the others decide). Keys with the same
        hash tag (``"{ip:10.0.0.1}:default"``, ``"{ip:10.0.0.1}:claims"``: one Cluster slot) go in one
        script call."""
        if not checks:
            return []
        now_ms = int(time.time() * 1000)
        groups = _groups(checks)
        commands = self.commands(checks, now_ms, groups)
        try:
            replies = await self._script.direct.execute_many(commands)
        except NoScriptError:  # Redis restarted: nothing ran, load it and go again
            await self._script.load()
            replies = await self._script.direct.execute_many(commands)
        out: list[Decision | None] = [None] * len(checks)
        for members, reply in zip(groups.values(), replies, strict=True):
            for i, (admitted, count, oldest_ms) in zip(members, reply, strict=True):
                out[i] = _decision(checks[i][1], now_ms, admitted, count, oldest_ms)
        return [d for d in out if d is not None]

    def commands(
        self, checks: list[tuple[str, Limit]], now_ms: int, groups: dict[str, list[int]] | None = None
    ) -> list[list[Any]]:
        """The script calls that check ``checks`` at ``now_ms``: one per hash tag (a key without one alone)."""
        commands = []
        for members in (groups or _groups(checks)).values():
            args: list[Any] = [now_ms]
            for i in members:
                limit = checks[i][1]
                args += [limit.window_s * 1000, limit.limit, _member(now_ms)]
            commands.append(self._script.command([f"{self.prefix}{checks[i][0]}" for i in members], args))
        return commands


def _groups(checks: list[tuple[str, Limit]]) -> dict[str, list[int]]:
    """The indexes of ``checks`` by hash tag, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, (key, _limit) in enumerate(checks):
        groups.setdefault(_hash_tag(key) or f"\x00{i}", []).append(i)
    return groups


def _hash_tag(key: str) -> str | None:
    """The hash tag of a key as Redis Cluster reads it (the text between the first ``{`` and the next ``}``,
    when not empty), or None."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    return key[start + 1 : end] if end > start + 1 else None


_PROCESS = [os.urandom(6).hex()]  # in a list so a forked child can replace it
_SEQ = itertools.count()
# A forked worker must not repeat its parent's members.
os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, os.urandom(6).hex()))


def _member(now_ms: int) -> str:
    # A unique member per request: two requests in the same millisecond, from this process or another,
    # must both count (a per-process random prefix and a counter: uuid4 cost more than the rest of this).
    return f"{now_ms}:{_PROCESS[0]}:{next(_SEQ)}"


def _decision(limit: Limit, now_ms: int, admitted: int, count: int, oldest_ms: int) -> Decision:
    window_ms = limit.window_s * 1000
    # Clamped to the window: a request counted by a concurrent caller whose clock read came a moment later
    # than ours can sit a millisecond in our future.
    reset_ms = min(window_ms, max(0, int(oldest_ms) + window_ms - now_ms))
    reset_s = max(1, math.ceil(reset_ms / 1000))
    return Decision(
        allowed=bool(admitted),
        limit=limit.limit,
        remaining=max(0, limit.limit - int(count)),
        reset_s=reset_s,
        retry_after_s=reset_s,
    )
