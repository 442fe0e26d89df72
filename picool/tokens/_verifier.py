"""The access-token verifier: the published JWKS kept in memory, algorithms pinned, the denylist asked."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cachetools import LRUCache
from jwt import PyJWK

from picool.tokens._denylist import Denylist

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
        self._headers: LRUCache[str, dict[str, Any]] = LRUCache(maxsize=256)  # header text -> parsed header

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
        # Every token a key signs has the same header text: parse each header once (pyjwt's parse alone is
        # ~60 us, a quarter of a first-sight check). Only the parse is kept; the checks below run every time.
        segment = token.partition(".")[0]
        header = self._headers.get(segment)
        if header is None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise TokenError("malformed") from exc
            self._headers[segment] = header
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
