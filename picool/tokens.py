"""Access-token verification for every subsystem: JWKS cached locally, algorithms pinned, denylist checked.

The verifier never calls the auth service per request: it keeps the published JWKS in memory and
refetches it only when a token names an unknown ``kid`` (at most once per ``refetch_interval_s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK
from redis.asyncio import Redis

log = logging.getLogger("picool.tokens")

ALGORITHMS = ["ES256"]
AUDIENCE_RUN = "picool-run"
AUDIENCE_COUPON = "picool-coupon"
AUDIENCE_AUTH = "picool-auth"
ALL_AUDIENCES = [AUDIENCE_AUTH, AUDIENCE_RUN, AUDIENCE_COUPON]
ROLES = ("runner", "merchant", "operator", "service")

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
    """Revoked token ids, refresh-token families and accounts, kept in Redis until the tokens expire."""

    PREFIX = "picool:deny:"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def deny(self, kind: str, value: str, ttl_s: int) -> None:
        """Refuse tokens whose ``kind`` (jti | fam | sub) equals ``value`` for ``ttl_s`` seconds."""
        await self.redis.set(f"{self.PREFIX}{kind}:{value}", b"1", ex=max(1, ttl_s))

    async def allow(self, kind: str, value: str) -> None:
        """Lift a denial (e.g. an account unfrozen)."""
        await self.redis.delete(f"{self.PREFIX}{kind}:{value}")

    async def is_denied(self, jti: str, family_id: str | None, sub: str) -> bool:
        """True when the token, its family or its subject has been revoked."""
        keys = [f"{self.PREFIX}jti:{jti}", f"{self.PREFIX}sub:{sub}"]
        if family_id:
            keys.append(f"{self.PREFIX}fam:{family_id}")
        values = await self.redis.mget(keys)
        return any(v is not None for v in values)


class TokenVerifier:
    """Verifies access tokens against a cached JWKS.

    Pinned to :data:`ALGORITHMS`; requires ``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``jti`` and
    ``role``; checks ``nbf`` when present; refuses anything whose ``typ`` header is not ``at+jwt``
    (so a refresh token or an ID token cannot pass as an access token); consults the denylist.
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
        if self.denylist is not None and await self.denylist.is_denied(str(claims["jti"]), fid, sub):
            raise TokenError("revoked")
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
