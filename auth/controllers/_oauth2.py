"""The OAuth2 endpoints under /oauth2 (RFC 6749, 7636, 7009, 7662): form-encoded in, RFC JSON errors out."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus, urlencode

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.response import Redirect

from auth import service
from auth.controllers._common import NO_STORE, SSO_COOKIE, DbSession, KernelDep, single_valued_form
from auth.controllers._pages import render
from auth.models import OAuthClient
from auth.service import OAuthError


def _oauth_error(exc: OAuthError, *, basic: bool = False) -> Response[dict[str, str]]:
    headers = dict(NO_STORE)
    if exc.status == 401 and basic:
        headers["WWW-Authenticate"] = 'Basic realm="picool"'
    body = {"error": exc.error}
    if exc.description:
        body["error_description"] = exc.description
    return Response(body, status_code=exc.status, headers=headers, media_type=MediaType.JSON)


def _basic_credentials(request: Request[Any, Any, Any]) -> tuple[str, str] | None:
    """``(client_id, secret)`` from ``Authorization: Basic`` (both form-urlencoded, RFC 6749 §2.3.1)."""
    raw = request.headers.get("authorization", "")
    scheme, _, value = raw.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
    cid, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return unquote_plus(cid), unquote_plus(secret)


async def _read_client_request(
    request: Request[Any, Any, Any], db_session: DbSession
) -> tuple[OAuthClient, dict[str, str]]:
    """The authenticated client and the form of a token/revoke/introspect request."""
    if (request.content_type[0] or "") != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    form, duplicated = await single_valued_form(request)
    if duplicated:
        raise OAuthError("invalid_request", "a parameter was sent more than once")
    basic = _basic_credentials(request)
    if basic is not None:
        if "client_secret" in form or form.get("client_id", basic[0]) != basic[0]:
            raise OAuthError("invalid_request", "use one client authentication method")
        cid, secret = basic
    else:
        cid, secret_or_none = form.get("client_id", ""), form.get("client_secret")
        secret = secret_or_none or ""
    client = await service.authenticate_client(db_session, cid, secret)
    return client, form


class OAuth2Controller(Controller):
    """Authorization, token, revocation and introspection endpoints."""

    path = "/oauth2"
    tags = ["oauth2"]  # noqa: RUF012 - litestar reads this class attribute

    @get("/authorize", media_type=MediaType.HTML)
    async def authorize(
        self, request: Request[Any, Any, Any], db_session: DbSession, kernel: KernelDep
    ) -> Response[Any]:
        """Authorization code flow: back to the client with a code when an SSO session is live, else to /login."""
        svc = service.services_of(kernel)
        params: dict[str, str] = {}
        duplicated = False
        for k, v in request.query_params.multi_items():
            duplicated = duplicated or k in params
            params[k] = v
        sso = await svc.sessions.get(request.cookies.get(SSO_COOKIE))
        outcome = await svc.grants.authorize(db_session, params, sso, duplicated=duplicated)
        if isinstance(outcome, service.ShowError):
            return render(
                "error.html",
                status=outcome.status,
                title="Sign-in request refused",
                error=outcome.error,
                description=outcome.description,
            )
        if isinstance(outcome, service.RedirectTo):
            return Redirect(outcome.url, status_code=302, headers=NO_STORE)
        here = request.url.path + ("?" + request.url.query if request.url.query else "")
        return Redirect("/login?" + urlencode({"next": here}), status_code=302, headers=NO_STORE)

    @post("/token", status_code=200)
    async def token(self, request: Request[Any, Any, Any], db_session: DbSession, kernel: KernelDep) -> Response[Any]:
        """Token endpoint: authorization_code (PKCE), refresh_token (rotating), client_credentials."""
        basic = request.headers.get("authorization", "").lower().startswith("basic ")
        try:
            client, form = await _read_client_request(request, db_session)
            # The grants run their own transactions: give this request's connection back first, or as many
            # concurrent token requests as the pool has connections would each hold one while waiting for a
            # second, until the pool timed out.
            await db_session.commit()
            tokens = await service.services_of(kernel).grants.token(client, form)
        except OAuthError as exc:
            return _oauth_error(exc, basic=basic)
        return Response(tokens.as_dict(), headers=NO_STORE, media_type=MediaType.JSON)

    @post("/revoke", status_code=200)
    async def revoke(self, request: Request[Any, Any, Any], db_session: DbSession, kernel: KernelDep) -> Response[Any]:
        """RFC 7009: 200 whether or not the token was known (a refresh token takes its family with it)."""
        basic = request.headers.get("authorization", "").lower().startswith("basic ")
        try:
            client, form = await _read_client_request(request, db_session)
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            await service.services_of(kernel).tokens.revoke(
                db_session, client.client_id, token, form.get("token_type_hint")
            )
        except OAuthError as exc:
            return _oauth_error(exc, basic=basic)
        return Response(b"", headers=NO_STORE, media_type=MediaType.TEXT)

    @post("/introspect", status_code=200)
    async def introspect(
        self, request: Request[Any, Any, Any], db_session: DbSession, kernel: KernelDep
    ) -> Response[Any]:
        """RFC 7662, for confidential clients only: ``{"active": false}`` unless the token is live."""
        basic = request.headers.get("authorization", "").lower().startswith("basic ")
        try:
            client, form = await _read_client_request(request, db_session)
            if client.is_public:
                raise OAuthError("invalid_client", "introspection needs a confidential client", 401)
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            body = await service.services_of(kernel).tokens.introspect(db_session, token, form.get("token_type_hint"))
        except OAuthError as exc:
            return _oauth_error(exc, basic=basic)
        return Response(body, headers=NO_STORE, media_type=MediaType.JSON)
