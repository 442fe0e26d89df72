"""Signing in and out: throttled password checks, SSO sessions, native-app login, logout, freezing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from auth import domain
from auth.models import RefreshFamily, User
from auth.service import _accounts, _clients
from auth.service._errors import InvalidCredentials
from auth.service._sessions import SessionStore, SsoSession
from auth.service._throttle import LoginThrottle
from auth.service._tokens import TokenService, TokenSet
from picool.errors import InvalidRequest
from picool.tokens import Denylist


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A successful sign-in: the account, its new SSO session and the cookie value that names it."""

    user: User
    session: SsoSession
    cookie: str


async def sign_in(
    db: AsyncSession, throttle: LoginThrottle, sessions: SessionStore, *, email: str, password: str, ip: str
) -> SignedIn:
    """Check the password under the login throttle and open an SSO session.

    Raises TooManyAttempts while the email or IP is locked, InvalidCredentials (counted as a failure)
    for an unknown email or a wrong password alike, AccountFrozen for a frozen account.
    """
    await throttle.before_attempt(email, ip)
    try:
        user = await _accounts.authenticate(db, email, password)
    except InvalidCredentials:
        await throttle.failed(email, ip)
        raise
    await throttle.succeeded(email)
    cookie, sess = await sessions.create(user.id)
    return SignedIn(user, sess, cookie)


async def native_login(
    db: AsyncSession,
    tokens: TokenService,
    throttle: LoginThrottle,
    sessions: SessionStore,
    *,
    email: str,
    password: str,
    client_id: str,
    ip: str,
) -> tuple[SignedIn, TokenSet]:
    """POST /api/v1/auth/login: sign in for a first-party client and issue its tokens (a new family)."""
    client = await _clients.get_client(db, client_id)
    if client is None or _clients.GRANT_REFRESH not in client.grant_types:
        raise InvalidRequest(
            "client_id: not a client that signs users in", errors=[{"key": "client_id", "message": "unknown client"}]
        )
    signed = await sign_in(db, throttle, sessions, email=email, password=password, ip=ip)
    scope = domain.DEFAULT_USER_SCOPE
    tokens_out = await tokens.start_family(
        db, signed.user, client_id=client.client_id, scope=scope, session_id=signed.session.sid
    )
    return signed, tokens_out


async def logout(
    db: AsyncSession,
    tokens: TokenService,
    sessions: SessionStore,
    denylist: Denylist,
    *,
    jti: str,
    expires_at: int,
    family_id: str | None,
    session_ids: list[str],
    now: int,
) -> None:
    """End the caller's SSO sessions (``session_ids``); revoke its refresh-token family, every family signed
    in through those sessions, and the access token used for the call."""
    await denylist.deny("jti", jti, max(1, expires_at - now) + 60)
    if family_id:
        await tokens.revoke_family(db, family_id, "logout")
    for sid in dict.fromkeys(session_ids):
        await tokens.revoke_where(db, RefreshFamily.session_id == sid, reason="logout")
        await sessions.end(sid)


async def set_frozen(db: AsyncSession, tokens: TokenService, user_id: int, frozen: bool) -> User:
    """Freeze (or unfreeze) an account. Freezing refuses its access tokens at once (sub denied), revokes its
    refresh-token families and blocks sign-in; unfreezing lifts the denial (old families stay revoked)."""
    user = await _accounts.set_frozen(db, user_id, frozen)
    if frozen:
        await tokens.denylist.deny("sub", str(user_id), tokens.deny_ttl_s)
        await tokens.revoke_where(db, RefreshFamily.user_id == user_id, reason="frozen")
    else:
        await tokens.denylist.allow("sub", str(user_id))
    return user
