"""Accounts through the public API: registration, native login, /me, freezing, operators."""

from __future__ import annotations

import asyncio

import httpx
from argon2 import PasswordHasher
from sqlalchemy import select

from auth import service as auth_service
from auth.models import User
from picool.kernel import Kernel
from tests.conftest import Accounts

PASSWORD = "correct horse battery"


async def _register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/register", json={"email": email, "password": password, "display_name": "R"})


async def test_accounts_fixture_makes_all_three_roles(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    merchant = await accounts.merchant()
    operator = await accounts.operator()
    for actor, role in ((runner, "runner"), (merchant, "merchant"), (operator, "operator")):
        resp = await client.get("/api/v1/auth/me", headers=actor.headers)
        assert resp.status_code == 200, resp.text
        me = resp.json()
        assert me["role"] == role
        assert me["user_id"] == actor.user_id
        assert me["email"] == actor.email
    assert merchant.merchant_id
    resp = await client.get("/api/v1/auth/me", headers=merchant.headers)
    assert resp.json()["merchant_id"] == merchant.merchant_id
    assert (await client.get("/api/v1/auth/me", headers=runner.headers)).json()["merchant_id"] is None


async def test_register_then_login_returns_token_response(client: httpx.AsyncClient) -> None:
    resp = await _register(client, "  Ann@Example.COM ")
    assert resp.status_code == 201
    user_id = resp.json()["user_id"]
    assert isinstance(user_id, str) and user_id.isdigit()
    resp = await client.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD, "client_id": "runner-app"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert resp.headers["cache-control"] == "no-store"
    cookie = resp.headers["set-cookie"]
    assert "picool_sso=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")


async def test_email_is_normalised_and_unique(client: httpx.AsyncClient) -> None:
    assert (await _register(client, "bob@example.com")).status_code == 201
    for variant in ("BOB@example.com", " bob@EXAMPLE.com", "ｂｏｂ@example.com"):  # the last is full-width (NFKC)
        resp = await _register(client, variant)
        assert resp.status_code == 409, variant
        assert resp.json()["code"] == "email_taken"
        assert resp.headers["content-type"].startswith("application/problem+json")


async def test_concurrent_registrations_of_one_email_create_one_account(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    results = await asyncio.gather(*(_register(client, "race@example.com") for _ in range(5)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409, 409, 409, 409]
    async with kernel.sessionmaker() as session:
        rows = (await session.scalars(select(User).where(User.email == "race@example.com"))).all()
    assert len(rows) == 1


async def test_bad_registration_input_is_400(client: httpx.AsyncClient) -> None:
    bad = [
        {"email": "not-an-email", "password": PASSWORD, "display_name": "x"},
        {"email": "a@example.com", "password": "short", "display_name": "x"},
        {"email": "a@example.com", "password": "x" * 257, "display_name": "x"},
        {"email": "a@example.com", "password": PASSWORD, "display_name": "   "},
        {"email": "a@example.com", "password": PASSWORD},
        {"email": 5, "password": PASSWORD, "display_name": "x"},
        {"email": "a@example.com", "password": PASSWORD, "display_name": "x", "role": "operator"},
    ]
    for body in bad:
        resp = await client.post("/api/v1/auth/register", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["code"] == "invalid_request"
    resp = await client.post(
        "/api/v1/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400


async def test_merchant_registration(client: httpx.AsyncClient) -> None:
    body = {
        "name": "Noodle Shop",
        "email": "shop@example.com",
        "password": PASSWORD,
        "location": {"lat": 31.23, "lon": 121.47},
        "address": "1 Road",
        "category": "food",
    }
    resp = await client.post("/api/v1/auth/merchants", json=body)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["merchant_id"] != created["user_id"]
    resp = await client.post("/api/v1/auth/merchants", json=body)
    assert resp.status_code == 409 and resp.json()["code"] == "email_taken"
    for location in ({"lat": 91, "lon": 0}, {"lat": 0, "lon": 181}, {"lat": "x", "lon": 0}):
        resp = await client.post(
            "/api/v1/auth/merchants", json={**body, "email": "o@example.com", "location": location}
        )
        assert resp.status_code == 400, location


async def test_wrong_password_and_unknown_email_answer_alike(client: httpx.AsyncClient) -> None:
    await _register(client, "carol@example.com")
    answers = []
    for email, password in (("carol@example.com", "wrong password!"), ("nobody@example.com", PASSWORD)):
        resp = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": password, "client_id": "runner-app"}
        )
        assert resp.status_code == 401
        body = resp.json()
        answers.append((body["code"], body["detail"], body["title"]))
    assert answers[0] == answers[1] == ("invalid_credentials", "The email or password is wrong.", "Invalid credentials")


async def test_login_with_unknown_client_is_400(client: httpx.AsyncClient) -> None:
    await _register(client, "dan@example.com")
    resp = await client.post(
        "/api/v1/auth/login", json={"email": "dan@example.com", "password": PASSWORD, "client_id": "picool-service"}
    )
    assert resp.status_code == 400


async def test_password_hash_is_argon2id_at_owasp_minimum(client: httpx.AsyncClient, kernel: Kernel) -> None:
    await _register(client, "erin@example.com")
    async with kernel.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.email == "erin@example.com"))
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    params = dict(p.split("=") for p in user.password_hash.split("$")[3].split(","))
    assert int(params["m"]) >= 19456 and int(params["t"]) >= 2


async def test_weak_hash_is_upgraded_on_login(client: httpx.AsyncClient, kernel: Kernel) -> None:
    await _register(client, "finn@example.com")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    async with kernel.sessionmaker() as session, session.begin():
        user = await session.scalar(select(User).where(User.email == "finn@example.com"))
        assert user is not None
        user.password_hash = weak
    resp = await client.post(
        "/api/v1/auth/login", json={"email": "finn@example.com", "password": PASSWORD, "client_id": "runner-app"}
    )
    assert resp.status_code == 200
    async with kernel.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.email == "finn@example.com"))
    assert user is not None and user.password_hash != weak and "m=19456" in user.password_hash


async def test_me_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    resp = await client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not.a.token"})
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_token"


async def test_runner_cannot_call_operator_only_endpoint(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    victim = await accounts.runner("victim")
    resp = await client.post(f"/api/v1/auth/users/{victim.user_id}/freeze", headers=runner.headers)
    assert resp.status_code == 403
    assert resp.json()["code"] == "forbidden"
    assert (await client.get("/api/v1/auth/me", headers=victim.headers)).status_code == 200


async def test_operator_freezes_and_unfreezes_an_account(client: httpx.AsyncClient, accounts: Accounts) -> None:
    operator = await accounts.operator()
    runner = await accounts.runner()
    resp = await client.post(f"/api/v1/auth/users/{runner.user_id}/freeze", headers=operator.headers)
    assert resp.status_code == 200 and resp.json() == {"user_id": runner.user_id, "role": "runner", "frozen": True}
    # its access token stops at once, its refresh token and a new login are refused
    assert (await client.get("/api/v1/auth/me", headers=runner.headers)).status_code == 401
    resp = await client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": runner.refresh_token, "client_id": "runner-app"},
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    resp = await client.post(
        "/api/v1/auth/login", json={"email": runner.email, "password": runner.password, "client_id": "runner-app"}
    )
    assert resp.status_code == 403 and resp.json()["code"] == "account_frozen"
    resp = await client.post(f"/api/v1/auth/users/{runner.user_id}/unfreeze", headers=operator.headers)
    assert resp.status_code == 200 and resp.json()["frozen"] is False
    tokens = await accounts.login(runner.email, runner.password)
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert (await client.post("/api/v1/auth/users/123/freeze", headers=operator.headers)).status_code == 404
    assert (await client.post("/api/v1/auth/users/abc/freeze", headers=operator.headers)).status_code == 404


async def test_create_operator_service_refuses_duplicates(client: httpx.AsyncClient, kernel: Kernel) -> None:
    async with kernel.sessionmaker() as session, session.begin():
        uid = await auth_service.create_operator(session, "Op@Example.com", PASSWORD)
    assert uid.isdigit()
    try:
        async with kernel.sessionmaker() as session, session.begin():
            await auth_service.create_operator(session, "op@example.com", PASSWORD)
    except auth_service.EmailTaken:
        pass
    else:
        raise AssertionError("a second operator with the same email was created")


async def test_hostile_login_bodies_are_4xx(client: httpx.AsyncClient) -> None:
    bodies: list[object] = [
        {},
        {"email": "a@example.com", "password": PASSWORD},
        {"email": "a" * 2000, "password": PASSWORD, "client_id": "runner-app"},
        {"email": "a@example.com", "password": "p" * 2000, "client_id": "runner-app"},
        {"email": "a@example.com", "password": PASSWORD, "client_id": ""},
        {"email": ["a"], "password": PASSWORD, "client_id": "runner-app"},
        [1, 2, 3],
        "string",
    ]
    for body in bodies:
        resp = await client.post("/api/v1/auth/login", json=body)
        assert 400 <= resp.status_code < 500, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
