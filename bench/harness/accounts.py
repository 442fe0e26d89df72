"""Accounts and tokens for load: a few real sign-ups and logins through the API (argon2 makes each login
cost tens of milliseconds, so only a few), and access tokens minted in-process with the app's own signing
key for scenarios that need thousands of distinct runners (a wallet miss per request)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "bench-password-0123456789"


@dataclass
class Account:
    """A signed-in account."""

    user_id: str
    email: str
    access_token: str
    refresh_token: str
    merchant_id: str | None = None

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def _login(client: httpx.Client, email: str, client_id: str = "runner-app") -> dict[str, Any]:
    resp = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD, "client_id": client_id})
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def runners(base_url: str, n: int, prefix: str = "runner") -> list[Account]:
    """``n`` new runner accounts, each registered and logged in once through the API."""
    tag = secrets.token_hex(3)
    out: list[Account] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(n):
            email = f"{prefix}{i}-{tag}@bench.picool.dev"
            r = client.post(
                "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": f"R{i}"}
            )
            r.raise_for_status()
            tok = _login(client, email)
            out.append(Account(str(r.json()["user_id"]), email, tok["access_token"], tok["refresh_token"]))
    return out


def login_again(base_url: str, account: Account, times: int) -> list[dict[str, Any]]:
    """``times`` more logins of ``account`` (each starts a refresh-token family of its own)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return [_login(client, account.email) for _ in range(times)]


def merchant(base_url: str, name: str = "Bench Shop") -> Account:
    """A new merchant with its owner account, logged in through the merchant portal client."""
    email = f"merchant-{secrets.token_hex(4)}@bench.picool.dev"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post(
            "/api/v1/auth/merchants",
            json={"name": name, "email": email, "password": PASSWORD, "location": {"lat": 31.23, "lon": 121.47}},
        )
        r.raise_for_status()
        body = r.json()
        tok = _login(client, email, "merchant-portal")
    return Account(str(body["user_id"]), email, tok["access_token"], tok["refresh_token"], str(body["merchant_id"]))


async def _mint(settings: Any, user_ids: list[int], role: str) -> list[str]:
    from auth.service._keys import KeyRing
    from auth.service._tokens import TokenService
    from picool import db
    from picool.tokens import Denylist, TokenVerifier

    engine = db.create_engine(settings, pool_size=1, max_overflow=0)
    try:
        keys = KeyRing(db.create_sessionmaker(engine), settings.secret_key)
        await keys.reload()
        verifier = TokenVerifier(settings.token_issuer, [], keys.jwks_now, None)
        svc = TokenService(settings, db.create_sessionmaker(engine), keys, Denylist(None), verifier)  # type: ignore[arg-type]
        out = []
        for uid in user_ids:
            token, _ttl = await svc.sign_access(sub=str(uid), role=role, scope="openid profile", client_id="runner-app")
            out.append(token)
        return out
    finally:
        await engine.dispose()


def mint_tokens(settings: Any, user_ids: list[int], role: str = "runner") -> list[str]:
    """Access tokens for ``user_ids`` signed with the app's current key (as the auth service would sign
    them at login), for load that needs many distinct callers. The accounts need not exist: run and coupon
    trust the token, not the auth database."""
    return asyncio.run(_mint(settings, user_ids, role))
