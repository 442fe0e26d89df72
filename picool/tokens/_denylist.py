"""The denylist: revoked token ids, refresh-token families and accounts, and this process's copy of them."""

from __future__ import annotations

import logging
import math
import time

from redis.asyncio import Redis

from picool.subscriber import Subscriber

log = logging.getLogger("picool.tokens")

_PRUNE_MIN = 1024  # a denylist copy this small is never swept for expired entries


class Denylist:
    """Revoked token ids, refresh-token families and accounts, kept in Redis until the tokens expire.

    Every authenticated request asks it, so once :meth:`start` has subscribed this process to the
    revocation channel it keeps a copy of every live denial and answers from memory. The copy is small:
    a denial lives only as long as the access tokens it covers (minutes). On every (re)subscription it is
    loaded from Redis afresh, *after* subscribing, so no change can fall between the two; each
    :meth:`deny` and :meth:`allow`, in any process, publishes a notice that keeps every copy current,
    and an entry leaves the copy when its Redis key expires. A revocation thus reaches every process
    within the pub/sub delay; this process sees its own at once. Without a live subscription every check
    asks Redis.
    """

    PREFIX = "picool:deny:"
    CHANNEL = "picool:deny:notices"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        # "kind:value" -> the time.monotonic() at which its Redis key expires; None while not kept.
        self._denied: dict[str, float] | None = None
        self._prune_at = _PRUNE_MIN
        self._subscriber: Subscriber | None = None

    @property
    def mirrored(self) -> bool:
        """True while checks are answered from this process's copy (no Redis round trip)."""
        return self._denied is not None and self._subscriber is not None and self._subscriber.listening

    async def deny(self, kind: str, value: str, ttl_s: int) -> None:
        """Refuse tokens whose ``kind`` (jti | fam | sub) equals ``value`` for ``ttl_s`` seconds."""
        entry = f"{kind}:{value}"
        ttl_ms = max(1, ttl_s) * 1000
        # One transaction: every process hears of the changes to a key in the order they were made.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.PREFIX + entry, b"1", px=ttl_ms)
            pipe.publish(self.CHANNEL, f"deny {ttl_ms} {entry}")
            await pipe.execute()
        self._add(entry, ttl_ms)

    async def allow(self, kind: str, value: str) -> None:
        """Lift a denial (e.g. an account unfrozen), in every process."""
        entry = f"{kind}:{value}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.PREFIX + entry)
            pipe.publish(self.CHANNEL, f"allow {entry}")
            await pipe.execute()
        if self._denied is not None:
            self._denied.pop(entry, None)

    async def is_denied(self, jti: str, family_id: str | None, sub: str) -> bool:
        """True when the token, its family or its subject has been revoked."""
        denied = self._denied
        if denied is not None and self._subscriber is not None and self._subscriber.listening:
            now = time.monotonic()
            entries = (f"jti:{jti}", f"sub:{sub}", f"fam:{family_id}") if family_id else (f"jti:{jti}", f"sub:{sub}")
            for entry in entries:
                until = denied.get(entry)
                if until is not None:
                    if until > now:
                        return True
                    del denied[entry]  # expired in Redis too
            return False
        keys = [f"{self.PREFIX}jti:{jti}", f"{self.PREFIX}sub:{sub}"]
        if family_id:
            keys.append(f"{self.PREFIX}fam:{family_id}")
        values = await self.redis.mget(keys)
        return any(v is not None for v in values)

    async def start(self) -> None:
        """Subscribe to revocation notices and load every live denial (returns once checks need no Redis)."""
        if self._subscriber is not None:
            return
        subscriber = Subscriber(
            self.redis,
            self.CHANNEL,
            self._on_notice,
            on_lost=self._drop,
            on_subscribed=self._load,
            name="denylist-notices",
        )
        await subscriber.start()
        self._subscriber = subscriber

    async def stop(self) -> None:
        """Unsubscribe; every later check asks Redis."""
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None
        self._drop()

    async def _load(self) -> None:
        # Run by the subscriber right after it (re)subscribed and before it delivers any notice, so
        # the notices that arrive meanwhile are applied over this snapshot, not under it.
        self._denied = None  # checks ask Redis meanwhile
        keys = [k async for k in self.redis.scan_iter(match=self.PREFIX + "*", count=1000)]
        denied: dict[str, float] = {}
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for key in chunk:
                pipe.pttl(key)
            ttls = await pipe.execute()
            now = time.monotonic()  # after the answer: a local expiry may come late, never early
            for key, ttl_ms in zip(chunk, ttls, strict=True):
                if ttl_ms == -2:
                    continue  # lifted since the scan
                name = key.decode() if isinstance(key, bytes) else str(key)
                denied[name[len(self.PREFIX) :]] = math.inf if ttl_ms < 0 else now + ttl_ms / 1000
        self._denied = denied
        self._prune_at = max(_PRUNE_MIN, 2 * len(denied))

    def _drop(self) -> None:
        self._denied = None

    def _add(self, entry: str, ttl_ms: int) -> None:
        denied = self._denied
        if denied is None:
            return
        now = time.monotonic()
        denied[entry] = now + ttl_ms / 1000
        if len(denied) >= self._prune_at:  # forget expired entries nobody asked about again
            for gone in [e for e, until in denied.items() if until <= now]:
                del denied[gone]
            self._prune_at = max(_PRUNE_MIN, 2 * len(denied))

    async def _on_notice(self, text: str) -> None:
        verb, _, rest = text.partition(" ")
        if verb == "deny":
            ttl_ms, _, entry = rest.partition(" ")
            if ttl_ms.isdigit() and entry:
                self._add(entry, int(ttl_ms))
                return
        elif verb == "allow" and rest:
            if self._denied is not None:
                self._denied.pop(rest, None)
            return
        # Not a notice this version writes (an older process's bare "kind:value"): read them all again.
        log.info("unrecognised denylist notice %r; reloading the denials", text[:100])
        await self._load()
