"""The server-rendered login page and the browser single sign-on flow, ending with a real OAuth2 client
(authlib) and a real JWKS client (pyjwt's PyJWKClient over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import http.server
import json
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from litestar import Litestar

from auth.controllers import _common
from picool.kernel import Kernel
from tests.conftest import Accounts

BASE = "http://testserver.local"
REDIRECT = "picool://oauth/callback"


def _form_fields(page: str) -> dict[str, str]:
    # the values are HTML-escaped in the page, as a browser would read them they are unescaped
    return {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page)
    }


async def _login_form(browser: httpx.AsyncClient, url: str = "/login") -> dict[str, str]:
    resp = await browser.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    return _form_fields(resp.text)


def _browser(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=30)


async def test_login_page_is_a_csrf_protected_form(client: httpx.AsyncClient) -> None:
    resp = await client.get("/login")
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert 'name="password"' in resp.text
    fields = _form_fields(resp.text)
    assert len(fields["csrf"]) == 64 and fields["next"] == "/login"
    assert "picool_csrf" in client.cookies
    # the token stays the same while the cookie does (no new cookie on the second visit)
    again = await client.get("/login")
    assert _form_fields(again.text)["csrf"] == fields["csrf"] and "set-cookie" not in again.headers


async def test_login_post_without_valid_csrf_is_refused(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    client.cookies.clear()
    fields = await _login_form(client)
    creds = {"email": runner.email, "password": runner.password, "next": "/login"}
    flipped = fields["csrf"][:-1] + ("1" if fields["csrf"][-1] == "0" else "0")
    for csrf in ("", "0" * 64, flipped):
        resp = await client.post("/login", data={**creds, "csrf": csrf})
        assert resp.status_code == 403 and "picool_sso" not in resp.headers.get("set-cookie", "")
    # a token minted for another browser's cookie does not fit ours
    async with httpx.AsyncClient(transport=client._transport, base_url=BASE) as other:
        other_fields = await _login_form(other)
    resp = await client.post("/login", data={**creds, "csrf": other_fields["csrf"]})
    assert resp.status_code == 403
    resp = await client.post("/login", data={**creds, "csrf": fields["csrf"]})
    assert resp.status_code == 303 and "picool_sso=" in resp.headers["set-cookie"]


async def test_wrong_password_and_unknown_email_render_the_same(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    client.cookies.clear()
    fields = await _login_form(client)
    pages = []
    for email, password in ((runner.email, "not the password"), ("ghost@example.com", runner.password)):
        resp = await client.post("/login", data={**fields, "email": email, "password": password})
        assert resp.status_code == 401
        pages.append(resp.text.replace(email, "EMAIL"))
    assert pages[0] == pages[1]
    assert "Wrong email or password" in pages[0]


async def test_next_never_leaves_the_site(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    for evil in ("https://evil.example/x", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "/ok\r\nX: y"):
        client.cookies.clear()
        fields = await _login_form(client)
        resp = await client.post(
            "/login", data={"csrf": fields["csrf"], "next": evil, "email": runner.email, "password": runner.password}
        )
        assert resp.status_code == 303
        assert resp.headers["location"] == "/login", evil


async def test_sso_cookie_flags(client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel) -> None:
    runner = await accounts.runner()
    client.cookies.clear()
    fields = await _login_form(client)
    resp = await client.post("/login", data={**fields, "email": runner.email, "password": runner.password})
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Secure" not in cookie  # dev/test: http
    prod = kernel.settings.with_(env="prod", secret_key="s" * 40)
    assert "Secure" in _common.sso_cookie(prod, "v").to_header()
    # with the session, GET /login says who is signed in, and forwards to a same-site next at once
    page = await client.get("/login")
    assert page.status_code == 200 and runner.email in page.text
    resp = await client.get("/login", params={"next": "/api/v1/auth/me"})
    assert resp.status_code == 303 and resp.headers["location"] == "/api/v1/auth/me"


async def test_login_page_is_throttled(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    client.cookies.clear()
    fields = await _login_form(client)
    for _ in range(5):
        resp = await client.post("/login", data={**fields, "email": runner.email, "password": "bad password"})
        assert resp.status_code == 401
    resp = await client.post("/login", data={**fields, "email": runner.email, "password": runner.password})
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    assert "picool_sso" not in resp.headers.get("set-cookie", "")


@contextlib.contextmanager
def _serve_json(body: bytes) -> Iterator[str]:
    """A real HTTP server on a free loopback port answering every GET with ``body`` (PyJWKClient uses urllib)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_full_authorization_code_flow_with_authlib_and_pyjwkclient(
    client: httpx.AsyncClient, accounts: Accounts, app: Litestar, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    oauth = AsyncOAuth2Client(
        client_id="runner-app",
        redirect_uri=REDIRECT,
        scope="profile",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
    )
    verifier = generate_token(64)
    url, state = oauth.create_authorization_url(f"{BASE}/oauth2/authorize", code_verifier=verifier)
    async with _browser(app) as browser:  # a fresh browser: no SSO session yet
        resp = await browser.get(url)
        assert resp.status_code == 302 and urlsplit(resp.headers["location"]).path == "/login"
        fields = await _login_form(browser, resp.headers["location"])
        assert fields["next"].startswith("/oauth2/authorize?")
        resp = await browser.post("/login", data={**fields, "email": runner.email, "password": runner.password})
        assert resp.status_code == 303
        resp = await browser.get(resp.headers["location"])
        assert resp.status_code == 302
        callback = resp.headers["location"]
        assert callback.startswith(REDIRECT + "?")
        assert parse_qs(urlsplit(callback).query)["state"] == [state]
        # single sign-on: the merchant portal gets a code straight away, without the login page
        portal = AsyncOAuth2Client(client_id="merchant-portal", redirect_uri="http://127.0.0.1:8000/portal/callback",
                                   code_challenge_method="S256")  # fmt: skip
        portal_url, _ = portal.create_authorization_url(f"{BASE}/oauth2/authorize", code_verifier=generate_token(64))
        sso = await browser.get(portal_url)
        assert sso.status_code == 302 and "code=" in sso.headers["location"]
        await portal.aclose()
    token = await oauth.fetch_token(f"{BASE}/oauth2/token", authorization_response=callback, code_verifier=verifier)
    await oauth.aclose()
    assert token["token_type"] == "Bearer" and token["refresh_token"] and token["scope"] == "profile"

    jwks = (await client.get("/.well-known/jwks.json")).content
    with _serve_json(jwks) as jwks_url:
        jwk_client = jwt.PyJWKClient(jwks_url)
        signing_key = await asyncio.to_thread(jwk_client.get_signing_key_from_jwt, token["access_token"])
        claims = jwt.decode(
            token["access_token"],
            signing_key.key,
            algorithms=["ES256"],
            audience="picool-run",
            issuer=kernel.settings.token_issuer,
            options={"require": ["exp", "iat", "nbf", "jti", "sub"]},
        )
    assert claims["sub"] == runner.user_id and claims["role"] == "runner" and claims["client_id"] == "runner-app"
    assert jwt.get_unverified_header(token["access_token"])["kid"] in {k["kid"] for k in json.loads(jwks)["keys"]}


async def test_hostile_login_posts_are_4xx(client: httpx.AsyncClient) -> None:
    await _login_form(client)
    for kwargs in ({"json": {"email": "a@example.com"}}, {"content": b"\xff\xfe"}, {"data": {"csrf": "x" * 100_000}}):
        resp = await client.post("/login", **kwargs)  # type: ignore[arg-type]
        assert 400 <= resp.status_code < 500, kwargs
    resp = await client.get("/login", params={"next": "x" * 5000})
    assert resp.status_code == 200
