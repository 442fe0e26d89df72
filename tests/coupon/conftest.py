"""Coupon test helpers: templates through the API, coupons issued through the issuing service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from coupon import service as coupon_service
from picool.kernel import Kernel

FULL_REDUCTION = {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_000}


def template_body(**overrides: Any) -> dict[str, Any]:
    """A valid template request (spend 100.00, get 20.00 off; 30 days; 100 coupons)."""
    body: dict[str, Any] = {
        "name": "20 off 100",
        "description": "Spring promotion",
        "rule": dict(FULL_REDUCTION),
        "validity": {"kind": "relative", "days": 30},
        "total_count": 100,
        "per_user_limit": 1,
        "distribution": "claim",
    }
    body.update(overrides)
    return body


def iso(dt: datetime) -> str:
    """RFC 3339 UTC."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(start_offset: timedelta, end_offset: timedelta) -> dict[str, Any]:
    """A fixed validity relative to now."""
    now = datetime.now(UTC)
    return {"kind": "fixed", "starts_at": iso(now + start_offset), "ends_at": iso(now + end_offset)}


async def close_window(kernel: Kernel, coupon: coupon_service.CouponRecord, *, invalidate: bool = True) -> None:
    """Move a coupon's window into the past behind the service's back (as time passing would), then
    (by default) drop its owner's cached wallet pages so the next read reloads it."""
    async with kernel.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE user_coupons SET valid_from = now() - interval '2 days', valid_to = now() - interval '1 day' "
                "WHERE user_id = :u AND id = :id"
            ),
            {"u": coupon.user_id, "id": coupon.id},
        )
    if invalidate:
        await coupon_service.invalidate_wallets(kernel, [coupon.user_id])


MakeTemplate = Callable[..., Awaitable[dict[str, Any]]]
Issue = Callable[..., Awaitable[coupon_service.CouponRecord]]


@pytest.fixture
def make_template(client: httpx.AsyncClient) -> MakeTemplate:
    """``await make_template(actor, **overrides)`` → the created Template JSON (asserts 201)."""

    async def make(actor: Any, **overrides: Any) -> dict[str, Any]:
        resp = await client.post("/api/v1/coupon/templates", json=template_body(**overrides), headers=actor.headers)
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    return make


@pytest.fixture
def issue(kernel: Kernel) -> Issue:
    """``await issue(template_id, user_id, source_kind="claim", ref=...)`` → a coupon, committed and
    the wallet invalidated, through the same issuing service that task rewards use."""
    counter = {"n": 0}

    async def do(
        template_id: str | int, user_id: str | int, source_kind: str = "claim", ref: str | None = None
    ) -> coupon_service.CouponRecord:
        counter["n"] += 1
        template = await coupon_service.require_template(kernel, int(template_id))
        req = coupon_service.IssueRequest(
            user_id=int(user_id), source_kind=source_kind, source_ref=ref or f"test-{counter['n']}"
        )
        async with kernel.sessionmaker() as session, session.begin():
            result = await coupon_service.issue_coupon(
                session,
                kernel.ids,
                template,
                req,
                actor=coupon_service.system_actor("test"),
                now=datetime.now(UTC),
            )
        assert result.outcome is coupon_service.IssueOutcome.ISSUED, result
        assert result.coupon is not None
        await coupon_service.invalidate_wallets(kernel, [int(user_id)])
        return result.coupon

    return do
