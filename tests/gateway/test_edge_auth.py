"""The edge checks each token once per request, and limits per user as well as per IP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from gateway.app import create_app
from picool.kernel import Kernel
from picool.settings import Settings
from picool.testing import running


async def test_token_verified_once_per_request(client: httpx.AsyncClient, kernel: Kernel, accounts: object) -> None:
    runner = await accounts.runner()  # type: ignore[attr-defined]
    before = kernel.verifier.verifications
    resp = await client.get("/api/v1/auth/me", headers=runner.headers)
    assert resp.status_code == 200
    assert kernel.verifier.verifications - before == 1


async def test_bad_token_is_401_problem(client: httpx.AsyncClient) -> None:
    for header in ("Bearer nope", "Basic abc", "Bearer "):
        resp = await client.get("/api/v1/auth/me", headers={"Authorization": header})
        assert resp.status_code == 401, header
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture
async def per_user(stack_settings: Settings, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    app: Litestar = create_app(
        stack_settings.with_(rate_limits="default:ip=1000/60,user=10/60;auth:ip=1000/60", workers_enabled=False)
    )
    async with running(app, wait_consumers=False):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver.local") as c:
            yield c


async def test_per_user_limit_is_exact_and_separate(per_user: httpx.AsyncClient, accounts: object) -> None:
    a = await accounts.runner("a")  # type: ignore[attr-defined]
    b = await accounts.runner("b")  # type: ignore[attr-defined]
    results = await asyncio.gather(*[per_user.get("/api/v1/auth/me", headers=a.headers) for _ in range(25)])
    codes = [r.status_code for r in results]
    assert codes.count(200) == 10 and codes.count(429) == 15
    # the other user (same IP) is not affected
    assert (await per_user.get("/api/v1/auth/me", headers=b.headers)).status_code == 200


async def test_claim_outcomes_in_metrics(client: httpx.AsyncClient, accounts: object) -> None:
    merchant = await accounts.merchant()  # type: ignore[attr-defined]
    runner = await accounts.runner()  # type: ignore[attr-defined]
    template = await client.post(
        "/api/v1/coupon/templates",
        headers=merchant.headers,
        json={
            "name": "1 off",
            "rule": {"type": "direct", "amount_cents": 100},
            "validity": {"kind": "relative", "days": 7},
            "total_count": 1,
            "per_user_limit": 1,
            "distribution": "claim",
        },
    )
    assert template.status_code == 201, template.text
    url = f"/api/v1/coupon/templates/{template.json()['id']}/claims"
    assert (await client.post(url, headers=runner.headers)).status_code == 201
    second = await client.post(url, headers=runner.headers)
    assert second.status_code == 409
    text = (await client.get("/metrics")).text
    assert 'picool_claims_total{kind="claim",outcome="ok"}' in text
    assert f'outcome="{second.json()["code"]}"' in text
