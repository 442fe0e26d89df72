"""Access tokens (ES256 JWTs) and refresh-token families: issuing, revoking, introspecting."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth import domain
from auth.models import RefreshFamily, RefreshToken, User
from auth.service._keys import ALG, KeyRing
from picool.settings import Settings
from picool.tokens import ALL_AUDIENCES, Denylist, TokenError, TokenVerifier

# How long a denial outlives the tokens it targets: covers the verifier's clock leeway with room to spare.
DENY_MARGIN_S = 60


def refresh_hash(token: str) -> bytes:
    """The stored form of a refresh token (SHA-256; the token itself carries 256 random bits)."""
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token() -> str:
    """A fresh opaque refresh token: 256 random bits, base64url."""
    return secrets.token_urlsafe(32)


def new_family_id() -> str:
    """A fresh refresh-token family id."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What the token endpoint and the native login answer (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    token_type: str = "Bearer"

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of the token response."""
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


class TokenService:
    """Signs access tokens, keeps refresh-token families, and revokes them (in PostgreSQL and the denylist)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        keys: KeyRing,
        denylist: Denylist,
        verifier: TokenVerifier,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.keys = keys
        self.denylist = denylist
        self.verifier = verifier

    @property
    def deny_ttl_s(self) -> int:
        """How long a family or account denial must last: until every access token it covers has expired."""
        return self.settings.access_token_ttl_s + DENY_MARGIN_S

    async def sign_access(
        self,
        *,
        sub: str,
        role: str,
        scope: str,
        client_id: str,
        merchant_id: int | None = None,
        family_id: str | None = None,
        session_id: str | None = None,
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        key = await self.keys.active()
        now = int(time.time())
        ttl = self.settings.access_token_ttl_s
        claims: dict[str, Any] = {
            "iss": self.settings.token_issuer,
            "sub": sub,
            "aud": list(ALL_AUDIENCES),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "scope": scope,
            "role": role,
            "client_id": client_id,
        }
        if merchant_id is not None:
            claims["merchant_id"] = str(merchant_id)
        if family_id:
            claims["fid"] = family_id
        if session_id:
            claims["sid"] = session_id
        token = jwt.encode(claims, key.private, algorithm=ALG, headers={"kid": key.kid, "typ": "at+jwt"})
        return token, ttl

    async def access_for_user(
        self, user: User, *, scope: str, client_id: str, family_id: str | None, session_id: str | None
    ) -> tuple[str, int]:
        """An access token for an account."""
        return await self.sign_access(
            sub=str(user.id),
            role=user.role,
            scope=scope,
            client_id=client_id,
            merchant_id=user.merchant_id,
            family_id=family_id,
            session_id=session_id,
        )

    async def start_family(
        self,
        session: AsyncSession,
        user: User,
        *,
        client_id: str,
        scope: str,
        session_id: str | None,
        family_id: str | None = None,
    ) -> TokenSet:
        """A new refresh-token family for a fresh sign-in, with its first refresh token and an access token.

        Written in ``session``; the caller commits. The family may live at most ``refresh_token_max_s``.
        """
        now = datetime.now(UTC)
        fid = family_id or new_family_id()
        session.add(
            RefreshFamily(
                id=fid,
                user_id=user.id,
                client_id=client_id,
                scope=scope,
                session_id=session_id,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_max_s),
            )
        )
        await session.flush()
        refresh = new_refresh_token()
        session.add(
            RefreshToken(token_hash=refresh_hash(refresh), family_id=fid, expires_at=self._next_expiry(now, None))
        )
        await session.flush()
        access, ttl = await self.access_for_user(
            user, scope=scope, client_id=client_id, family_id=fid, session_id=session_id
        )
        return TokenSet(access_token=access, expires_in=ttl, scope=scope, refresh_token=refresh)

    def _next_expiry(self, now: datetime, family_cap: datetime | None) -> datetime:
        # Sliding lifetime: each rotation grants refresh_token_ttl_s more, never past the family's cap.
        sliding = now + timedelta(seconds=self.settings.refresh_token_ttl_s)
        return min(sliding, family_cap) if family_cap is not None else sliding

    async def rotate(
        self, session: AsyncSession, token: RefreshToken, family: RefreshFamily, user: User, scope: str
    ) -> TokenSet:
        """Mark ``token`` used and issue its successor plus an access token (the caller commits)."""
        now = datetime.now(UTC)
        token.used_at = now
        refresh = new_refresh_token()
        session.add(
            RefreshToken(
                token_hash=refresh_hash(refresh),
                family_id=family.id,
                expires_at=self._next_expiry(now, family.expires_at),
            )
        )
        await session.flush()
        access, ttl = await self.access_for_user(
            user, scope=scope, client_id=family.client_id, family_id=family.id, session_id=family.session_id
        )
        return TokenSet(access_token=access, expires_in=ttl, scope=scope, refresh_token=refresh)

    async def revoke_family(self, session: AsyncSession, family_id: str, reason: str) -> None:
        """Revoke every refresh token of the family and refuse its unexpired access tokens from now on."""
        await self.denylist.deny("fam", family_id, self.deny_ttl_s)
        await session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
        )

    async def revoke_code_family(
        self, session: AsyncSession, family_id: str, *, user_id: int, client_id: str, reason: str
    ) -> None:
        """Revoke the family an authorization code issued, even if its first redemption has not written it yet
        (a revoked placeholder row then makes that redemption fail)."""
        await self.denylist.deny("fam", family_id, self.deny_ttl_s)
        now = datetime.now(UTC)
        stmt = insert(RefreshFamily).values(
            id=family_id,
            user_id=user_id,
            client_id=client_id,
            scope="",
            session_id=None,
            expires_at=now,
            revoked_at=now,
            revoked_reason=reason,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[RefreshFamily.id], set_={"revoked_at": now, "revoked_reason": reason}
        )
        await session.execute(stmt)

    async def revoke_where(self, session: AsyncSession, *conditions: Any, reason: str) -> int:
        """Revoke every live family matching ``conditions``; returns how many."""
        rows = await session.scalars(
            update(RefreshFamily)
            .where(RefreshFamily.revoked_at.is_(None), *conditions)
            .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
            .returning(RefreshFamily.id)
        )
        ids = list(rows.all())
        for fid in ids:
            await self.denylist.deny("fam", fid, self.deny_ttl_s)
        return len(ids)

    async def find_refresh(
        self, session: AsyncSession, token: str, *, for_update: bool = False
    ) -> tuple[RefreshToken, RefreshFamily] | None:
        """The stored refresh token and its family (locking the token row when ``for_update``)."""
        if not token or len(token) > 200:
            return None
        stmt = (
            select(RefreshToken, RefreshFamily)
            .join(RefreshFamily, RefreshFamily.id == RefreshToken.family_id)
            .where(RefreshToken.token_hash == refresh_hash(token))
        )
        if for_update:
            stmt = stmt.with_for_update(of=RefreshToken)
        row = (await session.execute(stmt)).first()
        return (row[0], row[1]) if row is not None else None

    async def verify_access(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unrevoked access token of ours, or None."""
        try:
            ident = await self.verifier.verify(token)
        except TokenError:
            return None
        return dict(ident.claims)

    async def introspect(self, session: AsyncSession, token: str, hint: str | None) -> dict[str, Any]:
        """RFC 7662 answer for ``token``: ``{"active": false}`` unless it is a live token of ours."""
        order = ["refresh_token", "access_token"] if hint == "refresh_token" else ["access_token", "refresh_token"]
        for kind in order:
            if kind == "access_token":
                claims = await self.verify_access(token)
                if claims is not None:
                    out = {k: v for k, v in claims.items() if k not in {"fid", "sid"}}
                    out.update({"active": True, "token_type": "Bearer"})
                    return out
            else:
                found = await self.find_refresh(session, token)
                if found is None:
                    continue
                tok, fam = found
                now = datetime.now(UTC)
                user = await session.get(User, fam.user_id)
                live = (
                    tok.used_at is None
                    and fam.revoked_at is None
                    and tok.expires_at > now
                    and fam.expires_at > now
                    and user is not None
                    and not user.frozen
                )
                if live and user is not None:
                    return {
                        "active": True,
                        "token_type": "refresh_token",
                        "client_id": fam.client_id,
                        "sub": str(user.id),
                        "scope": fam.scope,
                        "iss": self.settings.token_issuer,
                        "iat": int(tok.created_at.timestamp()),
                        "exp": int(min(tok.expires_at, fam.expires_at).timestamp()),
                        "role": user.role,
                    }
        return {"active": False}

    async def revoke(self, session: AsyncSession, client_id: str, token: str, hint: str | None) -> None:
        """RFC 7009: revoke ``token`` if it is ours and was issued to ``client_id``; silently nothing otherwise.

        A refresh token revokes its whole family; an access token is denied until it expires.
        """
        found = await self.find_refresh(session, token)
        if found is not None:
            _tok, fam = found
            if fam.client_id == client_id:
                await self.revoke_family(session, fam.id, "revoked")
            return
        claims = await self.verify_access(token)
        if claims is not None and claims.get("client_id") == client_id:
            remaining = int(claims["exp"]) - int(time.time())
            await self.denylist.deny("jti", str(claims["jti"]), remaining + DENY_MARGIN_S)


def user_scope(requested: list[str], allowed: list[str]) -> str | None:
    """The scope to grant a user token, or None when something not allowed was asked for."""
    return domain.grant_scope(requested, [s for s in allowed if s != domain.ANY_SCOPE], domain.DEFAULT_USER_SCOPE)
