"""The OAuth2 protocol: /oauth2/authorize decisions and the token endpoint's grants."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth import domain
from auth.models import OAuthClient, User
from auth.service import _clients
from auth.service._errors import OAuthError
from auth.service._sessions import CodeGrant, CodeStore, SsoSession
from auth.service._tokens import TokenService, TokenSet, new_family_id, user_scope
from picool.settings import Settings


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    sep = "&" if "?" in uri else "?"
    return uri + sep + urlencode(params)


@dataclass(frozen=True, slots=True)
class ShowError:
    """Answer with an error page: the client or redirect URI cannot be trusted, so never redirect."""

    status: int
    error: str
    description: str


@dataclass(frozen=True, slots=True)
class RedirectTo:
    """Answer with a redirect to ``url`` (the client's redirect URI, with a code or an error)."""

    url: str


@dataclass(frozen=True, slots=True)
class NeedLogin:
    """No usable SSO session: send the browser to the login page and back here afterwards."""


AuthorizeOutcome = ShowError | RedirectTo | NeedLogin


class Grants:
    """Implements the authorization endpoint and the token endpoint's three grants (no password grant)."""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], tokens: TokenService, codes: CodeStore
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.tokens = tokens
        self.codes = codes

    async def authorize(
        self, session: AsyncSession, params: Mapping[str, str], sso: SsoSession | None, *, duplicated: bool = False
    ) -> AuthorizeOutcome:
        """Decide what GET /oauth2/authorize answers (RFC 6749 §4.1.1-4.1.2 with RFC 7636 PKCE, S256 only)."""
        client = await _clients.get_client(session, params.get("client_id", ""))
        if client is None:
            return ShowError(400, "invalid_client", "unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri or not domain.redirect_uri_allowed(redirect_uri, client.redirect_uris):
            return ShowError(400, "invalid_request", "redirect_uri is missing or not registered for this client")
        state = params.get("state")

        def back(error: str, description: str) -> RedirectTo:
            out = {"error": error, "error_description": description, "iss": self.settings.token_issuer}
            if state is not None:
                out["state"] = state
            return RedirectTo(_with_query(redirect_uri, out))

        if duplicated:
            return back("invalid_request", "a parameter was sent more than once")
        if params.get("response_type") != "code":
            return back("unsupported_response_type", "only response_type=code is supported")
        if _clients.GRANT_CODE not in client.grant_types:
            return back("unauthorized_client", "this client may not use the authorization code grant")
        requested = domain.parse_scope(params.get("scope"))
        scope = user_scope(requested, client.scopes) if requested is not None else None
        if scope is None:
            return back("invalid_scope", "the requested scope is malformed or not allowed")
        challenge = params.get("code_challenge", "")
        method = params.get("code_challenge_method")
        if challenge or method:
            if method != "S256":
                return back("invalid_request", "code_challenge_method must be S256 (plain is not accepted)")
            if not domain.valid_challenge(challenge):
                return back("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")
        elif client.is_public:
            return back("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
        if state is not None and len(state) > 1024:
            return back("invalid_request", "state is too long")
        user = await session.get(User, sso.user_id) if sso is not None else None
        if sso is None or user is None or user.frozen:
            if params.get("prompt") == "none":
                return back("login_required", "no signed-in session")
            return NeedLogin()
        code = await self.codes.issue(
            CodeGrant(
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                code_challenge=challenge,
                user_id=user.id,
                scope=scope,
                sid=sso.sid,
                family_id=new_family_id(),
                expires_at=time.time() + self.settings.auth_code_ttl_s,
            )
        )
        out = {"code": code, "iss": self.settings.token_issuer}
        if state is not None:
            out["state"] = state
        return RedirectTo(_with_query(redirect_uri, out))

    async def token(self, client: OAuthClient, form: Mapping[str, str]) -> TokenSet:
        """Run the grant named by ``grant_type`` for an authenticated ``client``; OAuthError otherwise."""
        grant = form.get("grant_type", "")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant not in _clients.GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant[:40]!r} is not supported")
        if grant not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use {grant}")
        if grant == _clients.GRANT_CODE:
            return await self.authorization_code(
                client, form.get("code", ""), form.get("redirect_uri", ""), form.get("code_verifier")
            )
        if grant == _clients.GRANT_REFRESH:
            return await self.refresh(client, form.get("refresh_token", ""), form.get("scope"))
        return await self.client_credentials(client, form.get("scope"))

    async def client_credentials(self, client: OAuthClient, scope_param: str | None) -> TokenSet:
        """A service token (role ``service``, sub = client id); no refresh token (RFC 6749 §4.4.3)."""
        requested = domain.parse_scope(scope_param)
        scope = domain.grant_scope(requested, client.scopes, "") if requested is not None else None
        if scope is None:
            raise OAuthError("invalid_scope", "the requested scope is malformed or not allowed")
        access, ttl = await self.tokens.sign_access(
            sub=client.client_id, role=domain.ROLE_SERVICE, scope=scope, client_id=client.client_id
        )
        return TokenSet(access_token=access, expires_in=ttl, scope=scope)

    async def authorization_code(
        self, client: OAuthClient, code: str, redirect_uri: str, verifier: str | None
    ) -> TokenSet:
        """Redeem a code: single use, unexpired, same client, same redirect URI, PKCE verifier matching.

        Any second presentation of a code revokes whatever its first one issued.
        """
        if not code:
            raise OAuthError("invalid_request", "code is required")
        found = await self.codes.redeem(code)
        if found is None:
            raise OAuthError("invalid_grant", "the code is invalid or expired")
        uses, grant = found
        if uses > 1:
            async with self.sessionmaker() as session, session.begin():
                await self.tokens.revoke_code_family(
                    session, grant.family_id, user_id=grant.user_id, client_id=grant.client_id, reason="code_replay"
                )
            raise OAuthError("invalid_grant", "the code was already used; the tokens issued for it are revoked")
        if grant.expires_at < time.time():
            raise OAuthError("invalid_grant", "the code has expired")
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if redirect_uri != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if grant.code_challenge:
            if not verifier:
                raise OAuthError("invalid_grant", "code_verifier is required")
            if not domain.pkce_matches(verifier, grant.code_challenge):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        elif verifier:
            raise OAuthError("invalid_grant", "code_verifier sent but no code_challenge was")
        try:
            async with self.sessionmaker() as session, session.begin():
                user = await session.get(User, grant.user_id)
                if user is None or user.frozen:
                    raise OAuthError("invalid_grant", "the account is not available")
                return await self.tokens.start_family(
                    session,
                    user,
                    client_id=client.client_id,
                    scope=grant.scope,
                    session_id=grant.sid,
                    family_id=grant.family_id,
                )
        except IntegrityError as exc:  # a replay revoked the family before we could write it
            raise OAuthError("invalid_grant", "the code was already used") from exc

    async def refresh(self, client: OAuthClient, token: str, scope_param: str | None) -> TokenSet:
        """Rotate a refresh token. Presenting one already rotated revokes its whole family.

        The token row is locked for the transaction, so of two concurrent refreshes one rotates and the
        other finds it used: that one counts as a replay.
        """
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        requested = domain.parse_scope(scope_param)
        if requested is None:
            raise OAuthError("invalid_scope", "malformed scope")
        replayed = False
        async with self.sessionmaker() as session, session.begin():
            found = await self.tokens.find_refresh(session, token, for_update=True)
            if found is None:
                raise OAuthError("invalid_grant", "the refresh token is invalid")
            tok, fam = found
            if fam.client_id != client.client_id:
                raise OAuthError("invalid_grant", "the refresh token was issued to another client")
            if tok.used_at is not None:
                replayed = True
                await self.tokens.revoke_family(session, fam.id, "replay")
            else:
                now = datetime.now(UTC)
                if fam.revoked_at is not None:
                    raise OAuthError("invalid_grant", "the refresh token was revoked")
                if tok.expires_at <= now or fam.expires_at <= now:
                    raise OAuthError("invalid_grant", "the refresh token has expired")
                user = await session.get(User, fam.user_id)
                if user is None or user.frozen:
                    raise OAuthError("invalid_grant", "the account is not available")
                scope = domain.narrow_scope(requested, fam.scope)
                if scope is None:
                    raise OAuthError("invalid_scope", "a refresh may only narrow the granted scope")
                result = await self.tokens.rotate(session, tok, fam, user, scope)
        if replayed:  # after the commit above, so the revocation sticks
            raise OAuthError("invalid_grant", "the refresh token was already used; its family is revoked")
        return result
