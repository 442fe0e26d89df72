"""Failed-login throttling per email and per IP (auth/service/_throttle.py), through the native login."""

from __future__ import annotations

import httpx

from auth import domain
from tests.conftest import Accounts

LOGIN = "/api/v1/auth/login"


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(LOGIN, json={"email": email, "password": password, "client_id": "runner-app"})


async def _sequence(client: httpx.AsyncClient, email: str, password: str, n: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(n):
        resp = await _login(client, email, password)
        out.append((resp.status_code, resp.json()["code"]))
    return out


async def test_account_is_locked_after_repeated_failures(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    seq = await _sequence(client, runner.email, "wrong password", domain.ACCOUNT_FREE_FAILURES)
    assert seq == [(401, "invalid_credentials")] * domain.ACCOUNT_FREE_FAILURES
    resp = await _login(client, runner.email, runner.password)  # even the right password now waits
    assert resp.status_code == 429
    assert resp.json()["code"] == "too_many_attempts"
    assert domain.LOCK_BASE_S - 1 <= int(resp.headers["retry-after"]) <= domain.LOCK_BASE_S
    # the lock is per normalised email: other spellings are the same account, other accounts are free
    assert (await _login(client, runner.email.upper(), runner.password)).status_code == 429
    other = await accounts.runner("other")
    assert (await _login(client, other.email, other.password)).status_code == 200


async def test_unknown_email_is_throttled_exactly_like_a_real_one(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    runner = await accounts.runner()
    n = domain.ACCOUNT_FREE_FAILURES + 2
    real = await _sequence(client, runner.email, "wrong password", n)
    ghost = await _sequence(client, "ghost-account@example.com", "wrong password", n)
    assert real == ghost
    assert real[-1] == (429, "too_many_attempts")


async def test_success_clears_the_account_counter(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    for _ in range(2):
        seq = await _sequence(client, runner.email, "wrong password", domain.ACCOUNT_FREE_FAILURES - 1)
        assert {s for s, _ in seq} == {401}
        assert (await _login(client, runner.email, runner.password)).status_code == 200


async def test_ip_is_locked_after_failures_across_accounts(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    for i in range(domain.IP_FREE_FAILURES):
        resp = await _login(client, f"spray-{i}@example.com", "Winter2026!")
        assert resp.status_code == 401, i
    resp = await _login(client, runner.email, runner.password)
    assert resp.status_code == 429 and resp.json()["code"] == "too_many_attempts"


def test_lock_grows_and_is_capped() -> None:
    locks = [domain.lock_seconds(n, 5) for n in range(0, 30)]
    assert locks[:5] == [0] * 5
    assert locks[5] == domain.LOCK_BASE_S and locks[6] == 2 * domain.LOCK_BASE_S
    assert locks == sorted(locks) and max(locks) == domain.LOCK_MAX_S
    delays = [domain.tarpit_seconds(n) for n in range(0, 30)]
    assert delays[: domain.TARPIT_AFTER] == [0.0] * domain.TARPIT_AFTER
    assert delays == sorted(delays) and max(delays) == domain.TARPIT_MAX_S
