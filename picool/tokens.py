"""Access-token verification for every subsystem: JWKS cached locally, algorithms pinned, denylist checked.

The verifier never calls the auth service per request: it keeps the published JWKS in memory and
refetches it only when a token names an unknown ``kid`` (at most once per ``refetch_interval_s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cachetools import LRUCache
from jwt import PyJWK
from redis.asyncio import Redis

from picool.subscriber import Subscriber

log = logging.getLogger("picool.tokens")

ALGORITHMS = ["ES256"]
AUDIENCE_RUN = "picool-run"
AUDIENCE_COUPON = "picool-coupon"
AUDIENCE_AUTH = "picool-auth"
ALL_AUDIENCES = [AUDIENCE_AUTH, AUDIENCE_RUN, AUDIENCE_COUPON]
ROLES = ("runner", "merchant", "operator", "service")

_PRUNE_MIN = 1024  # a denylist copy this small is never swept for expired entries

JwksSource = Callable[[], Awaitable[Mapping[str, Any]]]


class TokenError(Exception):
    """The token is not acceptable; ``reason`` says why (never shown in detail to clients)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as the verified access token says."""

    user_id: str
    role: str
    merchant_id: str | None
    scope: frozenset[str]
    jti: str
    client_id: str
    family_id: str | None
    session_id: str | None
    expires_at: int
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_role(self, *roles: str) -> bool:
        """True when the caller has one of ``roles``."""
        return self.role in roles


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


class TokenVerifier:
    """Verifies access tokens against a cached JWKS.

    Pinned to :data:`ALGORITHMS`; requires ``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``jti`` and
    ``role``; checks ``nbf`` when present; refuses anything whose ``typ`` header is not ``at+jwt``
    (so a refresh token or an ID token cannot pass as an access token); consults the denylist.

    A client sends the same token with every request for its whole lifetime, so the identities of the
    last ``verified_max`` tokens that passed are kept (keyed by the exact token text) and a repeat only
    checks the expiry and the denylist again. They are forgotten when a key leaves the JWKS.
    """

    def __init__(
        self,
        issuer: str,
        audiences: list[str],
        source: JwksSource,
        denylist: Denylist | None,
        *,
        refetch_interval_s: float = 5.0,
        leeway_s: int = 5,
        verified_max: int = 10_000,
    ) -> None:
        self.issuer = issuer
        self.audiences = audiences
        self.source = source
        self.denylist = denylist
        self.refetch_interval_s = refetch_interval_s
        self.leeway_s = leeway_s
        self._keys: dict[str, PyJWK] = {}
        self._last_fetch = 0.0
        self._fetch_lock = asyncio.Lock()
        self.verifications = 0  # how many tokens this verifier checked (the edge must check each once)
        self._verified: LRUCache[str, Identity] | None = LRUCache(maxsize=verified_max) if verified_max > 0 else None

    async def refresh(self, *, force: bool = False) -> None:
        """Fetch the JWKS again (rate-limited unless ``force``)."""
        async with self._fetch_lock:
            now = time.monotonic()
            if not force and self._last_fetch and now - self._last_fetch < self.refetch_interval_s:
                return
            self._last_fetch = now
            try:
                jwks = await self.source()
            except Exception as exc:  # keep the keys we have; a token with an unknown kid is refused meanwhile
                log.warning("JWKS fetch failed: %s", exc)
                return
            keys: dict[str, PyJWK] = {}
            for jwk in jwks.get("keys", []):
                kid = jwk.get("kid")
                if not kid or jwk.get("use", "sig") != "sig":
                    continue
                try:
                    keys[kid] = PyJWK.from_dict(dict(jwk))
                except Exception:
                    log.warning("skipping unusable JWK %s", kid)
            if self._verified is not None and not set(self._keys) <= set(keys):
                self._verified.clear()  # a key was withdrawn: what it signed must be checked again
            self._keys = keys

    async def _key_for(self, kid: str) -> PyJWK:
        key = self._keys.get(kid)
        if key is None:
            await self.refresh()
            key = self._keys.get(kid)
        if key is None:
            raise TokenError("unknown_kid")
        return key

    async def verify(self, token: str) -> Identity:
        """The identity in ``token``, or :class:`TokenError`."""
        self.verifications += 1
        ident = self._verified.get(token) if self._verified is not None else None
        if ident is None or ident.expires_at + self.leeway_s <= time.time():
            ident = await self._verify_signed(token)
            if self._verified is not None:
                self._verified[token] = ident
        if self.denylist is not None and await self.denylist.is_denied(ident.jti, ident.family_id, ident.user_id):
            raise TokenError("revoked")
        return ident

    async def _verify_signed(self, token: str) -> Identity:
        """Header, key, signature and claims of ``token`` (everything but the denylist)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("malformed") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenError("bad_alg")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in {"at+jwt", "application/at+jwt"}:
            raise TokenError("not_access_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("no_kid")
        key = await self._key_for(kid)
        if key.algorithm_name not in ALGORITHMS:
            raise TokenError("bad_alg")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=ALGORITHMS,
                audience=self.audiences,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"], "verify_nbf": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("not_yet_valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("bad_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("bad_issuer") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise TokenError("bad_role")
        sub = str(claims["sub"])
        fid = claims.get("fid")
        scope = claims.get("scope", "")
        mid = claims.get("merchant_id")
        return Identity(
            user_id=sub,
            role=str(role),
            merchant_id=str(mid) if mid is not None else None,
            scope=frozenset(str(scope).split()),
            jti=str(claims["jti"]),
            client_id=str(claims.get("client_id", "")),
            family_id=str(fid) if fid else None,
            session_id=str(claims["sid"]) if claims.get("sid") else None,
            expires_at=int(claims["exp"]),
            claims=claims,
        )


def http_jwks_source(url: str, timeout_s: float = 5.0) -> JwksSource:
    """A JWKS source that GETs ``url`` (used when the auth service runs in another process)."""
    import httpx

    async def fetch() -> Mapping[str, Any]:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            resp = await client.get(url)
            resp.raise_for_status()
            data: Mapping[str, Any] = json.loads(resp.content)
            return data

    return fetch
