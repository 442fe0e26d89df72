"""The OAuth2 endpoints: client credentials, authorization code + PKCE, refresh rotation, revocation,
introspection, metadata, logout."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from sqlalchemy import update

from auth import service as auth_service
from auth.models import RefreshFamily, RefreshToken
from auth.service._sessions import CodeGrant
from auth.service._tokens import refresh_hash
from picool.kernel import Kernel
from tests.conftest import Accounts, Actor

REDIRECT = "picool://oauth/callback"
ME = "/api/v1/auth/me"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _query(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["location"]).query).items()}


async def _authorize(client: httpx.AsyncClient, challenge: str | None, **over: str) -> httpx.Response:
    params = {"response_type": "code", "client_id": "runner-app", "redirect_uri": REDIRECT, "state": "st-1"}
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(over)
    return await client.get("/oauth2/authorize", params={k: v for k, v in params.items() if v != ""})


async def _token(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    form.setdefault("client_id", "runner-app")
    return await client.post("/oauth2/token", data=form)


async def _code_flow(client: httpx.AsyncClient) -> dict[str, str]:
    """Tokens from authorization code + PKCE for whoever holds the client's SSO cookie."""
    verifier, challenge = _pkce()
    q = _query(await _authorize(client, challenge))
    resp = await _token(
        client, grant_type="authorization_code", code=q["code"], redirect_uri=REDIRECT, code_verifier=verifier
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, str] = resp.json()
    return body


async def _refresh(client: httpx.AsyncClient, token: str, client_id: str = "runner-app") -> httpx.Response:
    return await _token(client, grant_type="refresh_token", refresh_token=token, client_id=client_id)


async def _me(client: httpx.AsyncClient, access: str) -> int:
    return (await client.get(ME, headers={"Authorization": f"Bearer {access}"})).status_code


def _service_auth(kernel: Kernel) -> tuple[str, str]:
    return ("picool-service", kernel.service_secret())


# --- client credentials ---------------------------------------------------------------------------


async def test_service_token_via_kernel(client: httpx.AsyncClient, kernel: Kernel) -> None:
    kernel._service_token = None  # the kernel caches it across tests
    token = await kernel.service_token()
    ident = await kernel.verifier.verify(token)
    assert ident.role == "service" and ident.user_id == "picool-service" and ident.client_id == "picool-service"
    assert "coupon:templates:read" in ident.scope and ident.family_id is None


async def test_client_credentials_errors(client: httpx.AsyncClient, kernel: Kernel) -> None:
    resp = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("picool-service", "wrong")
    )
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert resp.headers["www-authenticate"].startswith("Basic")
    assert resp.headers["cache-control"] == "no-store"
    resp = await client.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "runner-app"})
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client"
    resp = await client.post(
        "/oauth2/token",
        data={"grant_type": "password", "username": "a@example.com", "password": "x"},
        auth=_service_auth(kernel),
    )
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_grant_type"
    resp = await client.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "picool-service",
            "client_secret": kernel.service_secret(),
        },
    )
    assert resp.status_code == 200 and "refresh_token" not in resp.json()
    resp = await client.post("/oauth2/token", json={"grant_type": "client_credentials"}, auth=_service_auth(kernel))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    resp = await client.post(
        "/oauth2/token", content=b"grant_type=client_credentials&grant_type=refresh_token",
        headers={"content-type": "application/x-www-form-urlencoded"}, auth=_service_auth(kernel),
    )  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


# --- authorization code + PKCE --------------------------------------------------------------------


async def test_authorize_without_session_goes_to_login(client: httpx.AsyncClient) -> None:
    _verifier, challenge = _pkce()
    resp = await _authorize(client, challenge)
    assert resp.status_code == 302
    loc = urlsplit(resp.headers["location"])
    assert loc.path == "/login"
    nxt = parse_qs(loc.query)["next"][0]
    assert nxt.startswith("/oauth2/authorize?") and "code_challenge=" in nxt
    resp = await _authorize(client, challenge, prompt="none")
    assert _query(resp)["error"] == "login_required"


async def test_code_flow_with_sso_session(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()  # the native login left an SSO cookie in the client
    tokens = await _code_flow(client)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == runner.user_id and claims["client_id"] == "runner-app"
    assert await _me(client, tokens["access_token"]) == 200
    # the same session serves the merchant portal too (single sign-on)
    verifier, challenge = _pkce()
    q = _query(
        await _authorize(
            client, challenge, client_id="merchant-portal", redirect_uri="http://127.0.0.1:8000/portal/callback"
        )
    )
    assert q["state"] == "st-1" and q["iss"]
    resp = await _token(
        client, grant_type="authorization_code", code=q["code"], client_id="merchant-portal",
        redirect_uri="http://127.0.0.1:8000/portal/callback", code_verifier=verifier,
    )  # fmt: skip
    assert resp.status_code == 200 and resp.json()["refresh_token"]


async def test_pkce_missing_plain_or_malformed_is_refused(client: httpx.AsyncClient, accounts: Accounts) -> None:
    await accounts.runner()
    q = _query(await _authorize(client, None))
    assert q["error"] == "invalid_request" and "PKCE" in q["error_description"] and q["state"] == "st-1"
    verifier, _challenge = _pkce()
    q = _query(await _authorize(client, None, code_challenge=verifier, code_challenge_method="plain"))
    assert q["error"] == "invalid_request" and "plain" in q["error_description"]
    q = _query(await _authorize(client, None, code_challenge=verifier))  # method omitted means plain
    assert q["error"] == "invalid_request"
    q = _query(await _authorize(client, None, code_challenge="short", code_challenge_method="S256"))
    assert q["error"] == "invalid_request"


async def test_wrong_or_missing_verifier_is_invalid_grant(client: httpx.AsyncClient, accounts: Accounts) -> None:
    await accounts.runner()
    for verifier in ("", secrets.token_urlsafe(48), "x" * 10):
        _right, challenge = _pkce()
        q = _query(await _authorize(client, challenge))
        form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT}
        if verifier:
            form["code_verifier"] = verifier
        resp = await _token(client, **form)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant", verifier


async def test_redirect_uri_must_match_exactly(client: httpx.AsyncClient, accounts: Accounts) -> None:
    await accounts.runner()
    _v, challenge = _pkce()
    for uri in ("picool://oauth/callback/", "picool://oauth/callback?x=1", "https://evil.example/cb", ""):
        resp = await _authorize(client, challenge, redirect_uri=uri)
        assert resp.status_code == 400 and "location" not in resp.headers, uri
    resp = await _authorize(client, challenge, client_id="no-such-client")
    assert resp.status_code == 400 and "location" not in resp.headers
    # at the token endpoint: the URI must be the one the code was issued for
    verifier, challenge = _pkce()
    q = _query(await _authorize(client, challenge))
    resp = await _token(
        client, grant_type="authorization_code", code=q["code"], code_verifier=verifier,
        redirect_uri="http://127.0.0.1:8000/oauth/callback",
    )  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


async def test_code_is_bound_to_its_client(client: httpx.AsyncClient, accounts: Accounts) -> None:
    await accounts.runner()
    verifier, challenge = _pkce()
    q = _query(await _authorize(client, challenge))
    resp = await _token(
        client, grant_type="authorization_code", code=q["code"], redirect_uri=REDIRECT, code_verifier=verifier,
        client_id="merchant-portal",
    )  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


async def test_code_replay_revokes_what_it_issued(client: httpx.AsyncClient, accounts: Accounts) -> None:
    await accounts.runner()
    verifier, challenge = _pkce()
    q = _query(await _authorize(client, challenge))
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT, "code_verifier": verifier}
    first = await _token(client, **form)
    assert first.status_code == 200
    tokens = first.json()
    assert await _me(client, tokens["access_token"]) == 200
    replay = await _token(client, **form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert await _me(client, tokens["access_token"]) == 401
    resp = await _refresh(client, tokens["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


async def test_expired_or_unknown_code_is_invalid_grant(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    verifier, challenge = _pkce()
    code = await auth_service.services_of(kernel).codes.issue(
        CodeGrant(
            client_id="runner-app", redirect_uri=REDIRECT, code_challenge=challenge, user_id=int(runner.user_id),
            scope="profile", sid=None, family_id="fam-expired-test", expires_at=time.time() - 1,
        )
    )  # fmt: skip
    form = {"grant_type": "authorization_code", "redirect_uri": REDIRECT, "code_verifier": verifier}
    resp = await _token(client, code=code, **form)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert "expired" in resp.json()["error_description"]
    resp = await _token(client, code=secrets.token_urlsafe(32), **form)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


# --- refresh rotation ---------------------------------------------------------------------------


async def test_refresh_rotates(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    resp = await _refresh(client, runner.refresh_token)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["refresh_token"] != runner.refresh_token and len(body["refresh_token"]) >= 43
    assert resp.headers["cache-control"] == "no-store"
    old = jwt.decode(runner.access_token, options={"verify_signature": False})
    new = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert new["fid"] == old["fid"] and new["jti"] != old["jti"]
    resp2 = await _refresh(client, body["refresh_token"])
    assert resp2.status_code == 200
    # a refresh token belongs to the client it was issued to
    resp3 = await _refresh(client, resp2.json()["refresh_token"], client_id="merchant-portal")
    assert resp3.status_code == 400 and resp3.json()["error"] == "invalid_grant"
    assert (await _refresh(client, resp2.json()["refresh_token"])).status_code == 200


async def test_replay_before_the_new_token_is_used_revokes_the_family(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    runner = await accounts.runner()
    rotated = (await _refresh(client, runner.refresh_token)).json()
    replay = await _refresh(client, runner.refresh_token)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    resp = await _refresh(client, rotated["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert await _me(client, rotated["access_token"]) == 401
    assert await _me(client, runner.access_token) == 401


async def test_replay_after_the_new_token_is_used_revokes_the_family(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    runner = await accounts.runner()
    second = (await _refresh(client, runner.refresh_token)).json()
    third = (await _refresh(client, second["refresh_token"])).json()
    assert await _me(client, third["access_token"]) == 200
    replay = await _refresh(client, runner.refresh_token)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert await _me(client, third["access_token"]) == 401
    assert (await _refresh(client, third["refresh_token"])).status_code == 400
    # other families of the same account are untouched
    other = await accounts.login(runner.email, runner.password)
    assert await _me(client, other["access_token"]) == 200


async def test_concurrent_refreshes_exactly_one_succeeds(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    results = await asyncio.gather(*(_refresh(client, runner.refresh_token) for _ in range(8)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * 7, statuses
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code == 400)
    # the losers presented an already-rotated token: that is a replay, so the family is gone
    winner = next(r for r in results if r.status_code == 200).json()
    assert (await _refresh(client, winner["refresh_token"])).status_code == 400


async def test_refresh_scope_can_only_narrow(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    resp = await _token(client, grant_type="refresh_token", refresh_token=runner.refresh_token, scope="profile email")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"
    resp = await _token(client, grant_type="refresh_token", refresh_token=runner.refresh_token, scope="profile")
    assert resp.status_code == 200 and resp.json()["scope"] == "profile"


async def test_garbage_refresh_token(client: httpx.AsyncClient) -> None:
    for token in ("", "x", "a" * 5000, secrets.token_urlsafe(32)):
        resp = await _refresh(client, token)
        assert resp.status_code == 400, token
        assert resp.json()["error"] in {"invalid_grant", "invalid_request"}


# --- revocation, introspection, metadata, logout ------------------------------------------------


async def _revoke(
    client: httpx.AsyncClient, token: str, client_id: str = "runner-app", hint: str = ""
) -> httpx.Response:
    data = {"token": token, "client_id": client_id}
    if hint:
        data["token_type_hint"] = hint
    return await client.post("/oauth2/revoke", data=data)


async def test_revoke_refresh_token_revokes_family(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    resp = await _revoke(client, runner.refresh_token, hint="refresh_token")
    assert resp.status_code == 200
    assert (await _refresh(client, runner.refresh_token)).status_code == 400
    assert await _me(client, runner.access_token) == 401


async def test_revoke_access_token(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    other = await accounts.runner("other")
    # another client cannot revoke runner-app's tokens (answer is still 200, RFC 7009 §2.2)
    assert (await _revoke(client, runner.access_token, client_id="merchant-portal")).status_code == 200
    assert await _me(client, runner.access_token) == 200
    assert (await _revoke(client, runner.access_token, hint="access_token")).status_code == 200
    assert await _me(client, runner.access_token) == 401
    assert (await _refresh(client, runner.refresh_token)).status_code == 200  # only that access token
    assert (await _revoke(client, "not-a-token")).status_code == 200
    assert await _me(client, other.access_token) == 200
    resp = await client.post("/oauth2/revoke", data={"client_id": "runner-app"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_introspection(client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel) -> None:
    runner = await accounts.runner()
    auth = _service_auth(kernel)
    resp = await client.post("/oauth2/introspect", data={"token": runner.access_token}, auth=auth)
    assert resp.status_code == 200
    body = resp.json()
    assert body["active"] is True and body["sub"] == runner.user_id and body["role"] == "runner"
    assert body["client_id"] == "runner-app" and body["token_type"] == "Bearer"
    resp = await client.post(
        "/oauth2/introspect", data={"token": runner.refresh_token, "token_type_hint": "refresh_token"}, auth=auth
    )
    body = resp.json()
    assert body["active"] is True and body["token_type"] == "refresh_token" and body["sub"] == runner.user_id
    await _revoke(client, runner.refresh_token)
    for token in (runner.access_token, runner.refresh_token, "garbage"):
        resp = await client.post("/oauth2/introspect", data={"token": token}, auth=auth)
        assert resp.json() == {"active": False}
    # public clients may not introspect; unauthenticated callers neither
    resp = await client.post("/oauth2/introspect", data={"token": runner.access_token, "client_id": "runner-app"})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    resp = await client.post("/oauth2/introspect", data={"token": runner.access_token})
    assert resp.status_code == 401


async def test_metadata(client: httpx.AsyncClient, kernel: Kernel) -> None:
    resp = await client.get("/.well-known/oauth-authorization-server")
    assert resp.status_code == 200
    md = resp.json()
    assert md["issuer"] == kernel.settings.token_issuer
    assert md["code_challenge_methods_supported"] == ["S256"]
    assert "password" not in md["grant_types_supported"]
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
    ):
        assert md[key].startswith(kernel.settings.base_url)


async def test_logout_revokes_family_session_and_token(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner: Actor = await accounts.runner()
    via_code = await _code_flow(client)  # a second family from the same SSO session
    _v, challenge = _pkce()
    authorize = {
        "response_type": "code", "client_id": "runner-app", "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256",
    }  # fmt: skip
    cookie = {"Cookie": f"picool_sso={client.cookies['picool_sso']}"}
    resp = await client.get("/oauth2/authorize", params=authorize, headers=cookie)
    assert "code" in _query(resp)
    resp = await client.post("/api/v1/auth/logout", headers=runner.headers)
    assert resp.status_code == 204
    assert "picool_sso=" in resp.headers["set-cookie"]
    assert "picool_sso" not in client.cookies
    # the server-side session is gone, not just the cookie
    resp = await client.get("/oauth2/authorize", params=authorize, headers=cookie)
    assert urlsplit(resp.headers["location"]).path == "/login"
    assert await _me(client, runner.access_token) == 401
    assert (await _refresh(client, runner.refresh_token)).status_code == 400
    assert await _me(client, via_code["access_token"]) == 401
    assert (await _refresh(client, via_code["refresh_token"])).status_code == 400
    assert (await client.post("/api/v1/auth/logout")).status_code == 401


async def test_refresh_lifetime_slides_and_is_capped(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    settings = kernel.settings

    async def stored(token: str) -> tuple[RefreshToken, RefreshFamily]:
        async with kernel.sessionmaker() as session:
            found = await auth_service.services_of(kernel).tokens.find_refresh(session, token)
        assert found is not None
        return found

    tok, fam = await stored(runner.refresh_token)
    assert tok.token_hash != runner.refresh_token.encode()  # only the hash is stored
    assert abs((tok.expires_at - tok.created_at).total_seconds() - settings.refresh_token_ttl_s) < 5
    assert abs((fam.expires_at - fam.created_at).total_seconds() - settings.refresh_token_max_s) < 5
    # near the family's cap, a rotation grants only what is left of it
    cap = datetime.now(UTC) + timedelta(days=2)
    async with kernel.sessionmaker() as session, session.begin():
        await session.execute(update(RefreshFamily).where(RefreshFamily.id == fam.id).values(expires_at=cap))
    body = (await _refresh(client, runner.refresh_token)).json()
    new_tok, _fam = await stored(body["refresh_token"])
    assert abs((new_tok.expires_at - cap).total_seconds()) < 1
    # past the cap (or past the token's own expiry) the refresh token is dead
    async with kernel.sessionmaker() as session, session.begin():
        await session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == fam.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    resp = await _refresh(client, body["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    other = await accounts.login(runner.email, runner.password)
    async with kernel.sessionmaker() as session, session.begin():
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == refresh_hash(other["refresh_token"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    resp = await _refresh(client, other["refresh_token"])
    assert resp.status_code == 400 and "expired" in resp.json()["error_description"]


async def test_confidential_client_code_flow_needs_its_secret(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    await accounts.runner()
    cid = "partner-web"
    async with kernel.sessionmaker() as session, session.begin():
        secret = await auth_service.create_client(
            session, cid, "Partner", confidential=True, redirect_uris=["https://partner.example/cb"],
            grant_types=["authorization_code", "refresh_token"], scopes=["profile"],
        )  # fmt: skip
    assert secret
    # PKCE is optional for confidential clients (their secret binds the code), but S256 only when used
    q = _query(await _authorize(client, None, client_id=cid, redirect_uri="https://partner.example/cb"))
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": "https://partner.example/cb"}
    resp = await client.post("/oauth2/token", data={**form, "client_id": cid})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    q = _query(await _authorize(client, None, client_id=cid, redirect_uri="https://partner.example/cb"))
    form["code"] = q["code"]
    resp = await client.post("/oauth2/token", data=form, auth=(cid, secret))
    assert resp.status_code == 200, resp.text
    assert resp.json()["refresh_token"]


async def test_hostile_authorize_and_token_requests_are_4xx(client: httpx.AsyncClient, accounts: Accounts) -> None:
    await accounts.runner()
    _v, challenge = _pkce()
    resp = await client.get(
        "/oauth2/authorize",
        params=[("response_type", "code"), ("client_id", "runner-app"), ("redirect_uri", REDIRECT),
                ("code_challenge", challenge), ("code_challenge_method", "S256"), ("state", "a"), ("state", "b")],
    )  # fmt: skip
    assert _query(resp)["error"] == "invalid_request"
    q = _query(await _authorize(client, challenge, response_type="token"))
    assert q["error"] == "unsupported_response_type"
    q = _query(await _authorize(client, challenge, scope="admin"))
    assert q["error"] == "invalid_scope"
    q = _query(await _authorize(client, challenge, state="x" * 2000))
    assert q["error"] == "invalid_request"
    for data in ({}, {"grant_type": ""}, {"grant_type": "authorization_code"}, {"grant_type": "x" * 10_000}):
        resp = await client.post("/oauth2/token", data={**data, "client_id": "runner-app"})
        assert resp.status_code == 400, data
        assert resp.json()["error"] in {"invalid_request", "unsupported_grant_type"}
    for header in (
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff:x").decode(),
    ):
        resp = await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"Authorization": header}
        )
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client", header
    resp = await client.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


async def test_more_concurrent_refreshes_than_pooled_connections(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    # Found by bench/auth_tokens.py: the token endpoint held its request session's connection while the
    # grant opened a second one, so pool-size concurrent refreshes waited on each other until the pool
    # timed out (30 s, then 500s).
    runner = await accounts.runner()
    n = kernel.settings.db_pool_size + kernel.settings.db_max_overflow + 4
    families = [runner.refresh_token] + [
        (await accounts.login(runner.email, runner.password))["refresh_token"] for _ in range(n - 1)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(_refresh(client, t) for t in families)), timeout=20)
    assert [r.status_code for r in results] == [200] * n


async def test_refreshes_while_the_key_ring_reloads(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    # Each refresh holds a pooled connection; a key-ring reload due at that moment needs one more. Requests
    # that find a reload under way sign with the key in hand instead of queueing behind it.
    runner = await accounts.runner()
    n = kernel.settings.db_pool_size + kernel.settings.db_max_overflow + 4
    families = [runner.refresh_token] + [
        (await accounts.login(runner.email, runner.password))["refresh_token"] for _ in range(n - 1)
    ]
    keys = auth_service.services_of(kernel).keys
    keys.reload_s, saved = 0.0, keys.reload_s  # every signature finds the ring due for a reload
    try:
        results = await asyncio.wait_for(asyncio.gather(*(_refresh(client, t) for t in families)), timeout=20)
    finally:
        keys.reload_s = saved
    assert [r.status_code for r in results] == [200] * n
