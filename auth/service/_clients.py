"""OAuth2 clients: the built-in ones seeded at startup, registration of others, client authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from auth import domain
from auth.models import OAuthClient
from auth.service._errors import OAuthError
from picool.settings import Settings

RUNNER_APP = "runner-app"
MERCHANT_PORTAL = "merchant-portal"
SERVICE_CLIENT = "picool-service"
GRANT_CODE = "authorization_code"
GRANT_REFRESH = "refresh_token"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TYPES = (GRANT_CODE, GRANT_REFRESH, GRANT_CLIENT_CREDENTIALS)


def hash_secret(secret: str) -> str:
    """SHA-256 of a client secret. Secrets are ≥256 random bits made by us, so a fast hash is enough
    (nothing to brute-force) and the token endpoint stays cheap for service calls."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def _upsert(session: AsyncSession, client: OAuthClient) -> None:
    values = {
        "client_id": client.client_id,
        "name": client.name,
        "secret_hash": client.secret_hash,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "scopes": client.scopes,
    }
    stmt = insert(OAuthClient).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[OAuthClient.client_id], set_={k: stmt.excluded[k] for k in values if k != "client_id"}
    )
    await session.execute(stmt)


def portal_redirect_uris(settings: Settings) -> list[str]:
    """The merchant portal's redirect URIs: the configured ones plus the callback of the portal that this
    gateway serves itself (``<public URL>/portal/callback``), so ``picool dev --port P`` signs in on any
    port without configuration. A public URL that may not be a redirect URI (plain http on a public
    host) adds nothing."""
    uris = settings.csv(settings.merchant_portal_redirect_uris)
    own = f"{settings.base_url}/portal/callback"
    if own not in uris and domain.valid_redirect_uri(own):
        uris.append(own)
    return uris


async def seed_builtin_clients(session: AsyncSession, settings: Settings, service_secret: str) -> None:
    """Create or update runner-app, merchant-portal (public, PKCE) and picool-service (confidential,
    client_credentials) so they match the current settings."""
    user_grants = [GRANT_CODE, GRANT_REFRESH]
    await _upsert(
        session,
        OAuthClient(
            client_id=RUNNER_APP,
            name="Picool runner app",
            secret_hash=None,
            redirect_uris=settings.csv(settings.runner_app_redirect_uris),
            grant_types=user_grants,
            scopes=list(domain.USER_SCOPES),
        ),
    )
    await _upsert(
        session,
        OAuthClient(
            client_id=MERCHANT_PORTAL,
            name="Picool merchant portal",
            secret_hash=None,
            redirect_uris=portal_redirect_uris(settings),
            grant_types=user_grants,
            scopes=list(domain.USER_SCOPES),
        ),
    )
    await _upsert(
        session,
        OAuthClient(
            client_id=SERVICE_CLIENT,
            name="Picool internal services",
            secret_hash=hash_secret(service_secret),
            redirect_uris=[],
            grant_types=[GRANT_CLIENT_CREDENTIALS],
            scopes=[domain.ANY_SCOPE],
        ),
    )


async def create_client(
    session: AsyncSession,
    client_id: str,
    name: str,
    *,
    confidential: bool,
    redirect_uris: list[str],
    grant_types: list[str],
    scopes: list[str],
) -> str | None:
    """Register a client; returns its secret (shown once, stored only hashed) or None for a public client.

    ValueError when the input is unusable (unknown grant, bad redirect URI, public client_credentials...).
    """
    if not client_id or len(client_id) > 100 or not all(c.isalnum() or c in "-_." for c in client_id):
        raise ValueError("client_id: 1-100 characters of letters, digits, '-', '_' and '.'")
    if client_id in {RUNNER_APP, MERCHANT_PORTAL, SERVICE_CLIENT}:
        raise ValueError(f"{client_id} is a built-in client")
    for g in grant_types:
        if g not in GRANT_TYPES:
            raise ValueError(f"unknown grant type {g!r} (no password grant)")
    if not grant_types:
        raise ValueError("at least one grant type is needed")
    if GRANT_CLIENT_CREDENTIALS in grant_types and not confidential:
        raise ValueError("client_credentials needs a confidential client")
    if GRANT_CODE in grant_types and not redirect_uris:
        raise ValueError("authorization_code needs at least one redirect URI")
    for uri in redirect_uris:
        if not domain.valid_redirect_uri(uri):
            raise ValueError(f"redirect URI not allowed: {uri!r}")
    parsed = domain.parse_scope(" ".join(scopes))
    if parsed is None:
        raise ValueError("malformed scope")
    if await session.get(OAuthClient, client_id) is not None:
        raise ValueError(f"client {client_id} exists already")
    secret = secrets.token_urlsafe(32) if confidential else None
    session.add(
        OAuthClient(
            client_id=client_id,
            name=name[:100],
            secret_hash=hash_secret(secret) if secret else None,
            redirect_uris=list(redirect_uris),
            grant_types=list(grant_types),
            scopes=parsed or list(domain.USER_SCOPES),
        )
    )
    await session.flush()
    return secret


async def get_client(session: AsyncSession, client_id: str) -> OAuthClient | None:
    """The registered client, or None."""
    if not client_id or len(client_id) > 100:
        return None
    return await session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))


async def authenticate_client(session: AsyncSession, client_id: str | None, secret: str | None) -> OAuthClient:
    """The client making a token-endpoint request (RFC 6749 §2.3).

    Confidential clients must prove their secret; public clients send only ``client_id`` and must not
    send a secret. Anything else is ``invalid_client`` (401).
    """
    if not client_id:
        raise OAuthError("invalid_client", "client authentication is required", 401)
    client = await get_client(session, client_id)
    if client is None:
        # Compare anyway so an unknown id costs what a wrong secret costs.
        hmac.compare_digest(hash_secret(secret or ""), "0" * 64)
        raise OAuthError("invalid_client", "unknown client or bad credentials", 401)
    if client.secret_hash is None:
        if secret:
            raise OAuthError("invalid_client", "public clients do not have a secret", 401)
        return client
    if not secret or not hmac.compare_digest(hash_secret(secret), client.secret_hash):
        raise OAuthError("invalid_client", "unknown client or bad credentials", 401)
    return client
