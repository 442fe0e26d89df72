"""The auth subsystem's ``picool admin`` commands, run through the real CLI against the test servers."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from auth.models import OAuthClient, SigningKey
from auth.service._keys import decrypt_private
from picool.cli import main
from picool.kernel import Kernel
from picool.settings import Settings
from picool.testing import wait_for
from picool.tokens import TokenError


def _admin(settings: Settings, *args: str) -> str:
    env = {
        "PICOOL_ENV": "test",
        "PICOOL_DATABASE_URL": settings.database_url,
        "PICOOL_REDIS_URL": settings.redis_url,
        "PICOOL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PICOOL_SECRET_KEY": settings.secret_key,
        "PICOOL_LOG_LEVEL": "WARNING",
    }
    result = CliRunner().invoke(main, ["admin", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def _in_thread(settings: Settings, *args: str) -> str:
    # the command runs its own event loop (asyncio.run), so keep it off the test's loop
    return await asyncio.to_thread(_admin, settings, *args)


async def test_create_operator_command(client: httpx.AsyncClient, stack_settings: Settings) -> None:
    email = f"op-{uuid.uuid4().hex[:6]}@example.com"
    out = await _in_thread(stack_settings, "create-operator", "--email", email, "--password", "operator password")
    assert "operator created" in out
    resp = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": "operator password", "client_id": "merchant-portal"}
    )
    assert resp.status_code == 200
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {resp.json()['access_token']}"})
    assert me.json()["role"] == "operator"
    with pytest.raises(AssertionError):  # a second one with the same email fails with a message
        await _in_thread(stack_settings, "create-operator", "--email", email.upper(), "--password", "operator password")


async def test_create_client_command_confidential(
    client: httpx.AsyncClient, stack_settings: Settings, kernel: Kernel
) -> None:
    cid = f"reports-{uuid.uuid4().hex[:6]}"
    out = await _in_thread(stack_settings, "create-client", "--client-id", cid, "--scope", "reports:read")
    match = re.search(r"client secret \(shown once\): (\S+)", out)
    assert match is not None, out
    secret = match.group(1)
    async with kernel.sessionmaker() as session:
        row = await session.scalar(select(OAuthClient).where(OAuthClient.client_id == cid))
    assert row is not None and row.secret_hash != secret and row.grant_types == ["client_credentials"]
    resp = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "reports:read"}, auth=(cid, secret)
    )
    assert resp.status_code == 200, resp.text
    ident = await kernel.verifier.verify(resp.json()["access_token"])
    assert ident.role == "service" and ident.user_id == cid and ident.scope == frozenset({"reports:read"})
    resp = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "admin"}, auth=(cid, secret)
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"


async def test_create_client_command_public_with_redirect(client: httpx.AsyncClient, stack_settings: Settings) -> None:
    cid = f"kiosk-{uuid.uuid4().hex[:6]}"
    out = await _in_thread(
        stack_settings, "create-client", "--client-id", cid, "--public", "--redirect-uri", "https://kiosk.example/cb"
    )
    assert "secret" not in out
    with pytest.raises(AssertionError):  # http to a non-loopback host is not a redirect URI we accept
        await _in_thread(
            stack_settings,
            "create-client",
            "--client-id",
            cid + "x",
            "--public",
            "--redirect-uri",
            "http://kiosk.example/cb",
        )


async def test_rotate_key_command(client: httpx.AsyncClient, stack_settings: Settings, kernel: Kernel) -> None:
    out = await _in_thread(stack_settings, "rotate-key")
    new_kid = out.strip().rsplit(" ", 1)[-1]
    async with kernel.sessionmaker() as session:
        current = await session.scalar(select(SigningKey).where(SigningKey.retired_at.is_(None)))
    assert current is not None and current.kid == new_kid
    # the private half is not stored in the clear
    assert b"PRIVATE" not in current.private_enc and len(current.private_enc) > 100
    with pytest.raises(InvalidTag):  # sealed with a key derived from the secret key
        decrypt_private(current.private_enc, current.kid, "another secret key entirely, 40 chars...")
    private = decrypt_private(current.private_enc, current.kid, stack_settings.secret_key)
    now = int(time.time())
    claims = {"iss": kernel.settings.token_issuer, "sub": "123", "aud": ["picool-run"], "iat": now, "nbf": now,
              "exp": now + 60, "jti": uuid.uuid4().hex, "role": "runner", "scope": ""}  # fmt: skip
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": new_kid, "typ": "at+jwt"})

    async def accepted() -> bool:
        try:
            await kernel.verifier.verify(token)
        except TokenError:
            return False
        return True

    # signed by a key this process has never seen: the verifier refetches the JWKS (rate-limited) and accepts
    await wait_for(accepted, timeout_s=kernel.verifier.refetch_interval_s + 3, interval_s=0.5)
    published = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert new_kid in published
