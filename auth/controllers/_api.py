"""The JSON auth API under /api/v1/auth and the well-known documents."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from auth import domain, schemas, service
from auth.controllers._common import (
    NO_STORE,
    SSO_COOKIE,
    DbSession,
    IdentityDep,
    KernelDep,
    clear_sso_cookie,
    client_ip,
    sso_cookie,
)
from picool.errors import Forbidden, NotFound
from picool.ids import parse_id_str
from picool.kernel import Kernel
from picool.tokens import Identity
from picool.web import require_role


class AuthController(Controller):
    """Accounts and the native-app sign-in."""

    path = "/api/v1/auth"
    tags = ["auth"]  # noqa: RUF012 - litestar reads this class attribute

    @post("/register", status_code=HTTP_201_CREATED)
    async def register(
        self, data: JSONBody[schemas.RegisterRunner], db_session: DbSession, kernel: KernelDep
    ) -> schemas.UserCreated:
        """Create a runner account. 409 ``email_taken``."""
        user = await service.register_runner(
            db_session, data.email, data.password, data.display_name, ids=kernel.ids.next_id
        )
        return schemas.UserCreated(user_id=str(user.id))

    @post("/merchants", status_code=HTTP_201_CREATED)
    async def register_merchant(
        self, data: JSONBody[schemas.RegisterMerchant], db_session: DbSession, kernel: KernelDep
    ) -> schemas.MerchantCreated:
        """Create a merchant and its owner account (role ``merchant``). 409 ``email_taken``."""
        merchant, user = await service.register_merchant(
            db_session,
            name=data.name,
            email=data.email,
            password=data.password,
            lat=data.location.lat,
            lon=data.location.lon,
            address=data.address,
            category=data.category,
            ids=kernel.ids.next_id,
        )
        return schemas.MerchantCreated(merchant_id=str(merchant.id), user_id=str(user.id))

    @post("/login", status_code=HTTP_200_OK)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[schemas.LoginRequest],
        db_session: DbSession,
        kernel: KernelDep,
    ) -> Response[schemas.TokenResponse]:
        """Sign in from a first-party app: the token response plus an SSO session cookie.

        401 ``invalid_credentials`` (same answer for unknown email and wrong password); 429
        ``too_many_attempts`` after repeated failures (per email and per IP).
        """
        svc = service.services_of(kernel)
        signed, tokens = await service.native_login(
            db_session,
            svc.tokens,
            svc.throttle,
            svc.sessions,
            email=data.email,
            password=data.password,
            client_id=data.client_id,
            ip=client_ip(request, kernel.settings),
        )
        body = schemas.TokenResponse(**tokens.as_dict())
        return Response(body, headers=NO_STORE, cookies=[sso_cookie(kernel.settings, signed.cookie)])

    @post("/logout", status_code=HTTP_204_NO_CONTENT)
    async def logout(
        self, request: Request[Any, Any, Any], identity: IdentityDep, db_session: DbSession, kernel: KernelDep
    ) -> Response[None]:
        """End the SSO session, revoke the refresh-token family and this access token."""
        svc = service.services_of(kernel)
        sessions = [identity.session_id] if identity.session_id else []
        browser = await svc.sessions.get(request.cookies.get(SSO_COOKIE))
        if browser is not None and str(browser.user_id) == identity.user_id:
            sessions.append(browser.sid)  # the browser's session too, when it belongs to the same account
        await service.logout(
            db_session,
            svc.tokens,
            svc.sessions,
            kernel.denylist,
            jti=identity.jti,
            expires_at=identity.expires_at,
            family_id=identity.family_id,
            session_ids=sessions,
            now=int(time.time()),
        )
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[clear_sso_cookie(kernel.settings)])

    @get("/me")
    async def me(self, identity: IdentityDep, db_session: DbSession) -> schemas.Me:
        """The signed-in account."""
        require_role(identity, "runner", "merchant", "operator")
        user = await service.get_user(db_session, _user_id(identity))
        if user is None:
            raise NotFound("The account no longer exists.")
        return schemas.Me(
            user_id=str(user.id),
            email=user.email,
            display_name=user.display_name,
            role=user.role,
            merchant_id=str(user.merchant_id) if user.merchant_id is not None else None,
        )

    @post("/users/{user_id:str}/freeze", status_code=HTTP_200_OK)
    async def freeze(
        self, user_id: FromPath[str], identity: IdentityDep, db_session: DbSession, kernel: KernelDep
    ) -> schemas.AccountStatus:
        """Operator: freeze a suspicious account (its tokens stop working at once, sign-in is refused)."""
        return await _set_frozen(user_id, True, identity, db_session, kernel)

    @post("/users/{user_id:str}/unfreeze", status_code=HTTP_200_OK)
    async def unfreeze(
        self, user_id: FromPath[str], identity: IdentityDep, db_session: DbSession, kernel: KernelDep
    ) -> schemas.AccountStatus:
        """Operator: lift a freeze (the account must sign in again)."""
        return await _set_frozen(user_id, False, identity, db_session, kernel)


def _user_id(identity: Identity) -> int:
    uid = parse_id_str(identity.user_id)
    if uid is None:
        raise Forbidden("This needs a user account.")
    return uid


async def _set_frozen(
    user_id: str, frozen: bool, identity: Identity, db_session: AsyncSession, kernel: Kernel
) -> schemas.AccountStatus:
    require_role(identity, "operator")
    uid = parse_id_str(user_id)
    if uid is None:
        raise NotFound("No such account.")
    if str(uid) == identity.user_id and frozen:
        raise Forbidden("Operators cannot freeze themselves.")
    user = await service.set_frozen(db_session, service.services_of(kernel).tokens, uid, frozen)
    return schemas.AccountStatus(user_id=str(user.id), role=user.role, frozen=user.frozen)


@get("/.well-known/jwks.json", tags=["auth"])
async def jwks(kernel: KernelDep) -> Response[dict[str, Any]]:
    """The public signing keys (current and recently retired), for verifying access tokens."""
    keys = await service.services_of(kernel).keys.jwks()
    return Response(keys, headers={"Cache-Control": "public, max-age=60"}, media_type="application/jwk-set+json")


@get("/.well-known/oauth-authorization-server", tags=["auth"])
async def metadata(kernel: KernelDep) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    base = kernel.settings.base_url
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return {
        "issuer": kernel.settings.token_issuer,
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{base}/oauth2/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "revocation_endpoint": f"{base}/oauth2/revoke",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": list(domain.USER_SCOPES),
        "authorization_response_iss_parameter_supported": True,
    }
