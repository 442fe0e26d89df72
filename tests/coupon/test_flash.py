"""Flash sessions: creation (operators, platform claim templates, stock out of the template), the day
listing (cached, remaining at most a second old), flash claims, and the big race: 2,000 concurrent
claims from 300 runners (2 each at most) for a stock of 500."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from coupon import models
from coupon import service as coupon_service
from coupon import store as coupon_store
from picool.errors import DomainError
from picool.kernel import Kernel
from picool.settings import Settings
from tests.coupon.conftest import MakeTemplate, iso, window
from tests.coupon.runners import make_runners, roomy_client
from tests.coupon.test_claims import claim_path, persisted

SESSIONS = "/api/v1/coupon/flash-sessions"


def session_body(template_id: str, start: timedelta, end: timedelta, stock: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"template_id": template_id, "starts_at": iso(now + start), "ends_at": iso(now + end), "stock": stock}


async def make_session(
    client: httpx.AsyncClient, operator: Any, template_id: str, start: timedelta, end: timedelta, stock: int
) -> dict[str, Any]:
    resp = await client.post(SESSIONS, json=session_body(template_id, start, end, stock), headers=operator.headers)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def grab_path(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}/claims"


async def test_session_takes_its_stock_from_the_template(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel, stack_settings: Settings
) -> None:
    operator = await accounts.operator()
    runners = [await accounts.runner() for _ in range(5)]
    template = await make_template(operator, total_count=10, per_user_limit=3)
    assert template["merchant_id"] is None
    session = await make_session(client, operator, template["id"], timedelta(minutes=-1), timedelta(hours=1), 6)
    assert set(session) == {"id", "template_id", "starts_at", "ends_at", "stock", "remaining"}
    assert session["template_id"] == template["id"]
    assert session["stock"] == session["remaining"] == 6
    store = coupon_service.claim_store(kernel)
    assert await store.pool_stock(int(template["id"])) == 4

    too_big = await client.post(
        SESSIONS, json=session_body(template["id"], timedelta(0), timedelta(hours=1), 5), headers=operator.headers
    )
    assert too_big.status_code == 400 and "4 coupons left" in too_big.json()["detail"]
    assert await store.pool_stock(int(template["id"])) == 4  # a refused session reserved nothing

    # Template claims and flash claims of one template together stop exactly at total_count (more
    # claims than the default per-address limit allows: an app with roomy limits).
    template_ok = flash_ok = 0
    async with roomy_client(stack_settings, node_id=204) as roomy:
        for r in runners:
            for _ in range(2):
                template_ok += (await roomy.post(claim_path(template["id"]), headers=r.headers)).status_code == 201
        for r in runners[:3]:
            for _ in range(3):
                resp = await roomy.post(grab_path(session["id"]), headers=r.headers)
                flash_ok += resp.status_code == 201
        assert (template_ok, flash_ok) == (4, 5)  # per-user limit 3 is shared by template and flash claims
        late = await roomy.post(grab_path(session["id"]), headers=runners[4].headers)
        assert late.status_code == 201
        gone = await roomy.post(grab_path(session["id"]), headers=runners[4].headers)
        assert gone.status_code == 409 and gone.json()["code"] == "sold_out"
    await persisted(kernel, template["id"], 10)
    async with kernel.sessionmaker() as db:
        by_source = dict(
            (
                await db.execute(
                    select(models.UserCoupon.source_kind, func.count())
                    .where(models.UserCoupon.template_id == int(template["id"]))
                    .group_by(models.UserCoupon.source_kind)
                )
            ).all()
        )
    assert by_source == {"claim": 4, "flash": 6}


async def test_flash_claim_answers(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    operator, runner, merchant = await accounts.operator(), await accounts.runner(), await accounts.merchant()
    template = await make_template(
        operator, total_count=20, per_user_limit=1, validity=window(timedelta(days=-1), timedelta(days=10))
    )
    open_now = await make_session(client, operator, template["id"], timedelta(minutes=-5), timedelta(hours=1), 3)
    later = await make_session(client, operator, template["id"], timedelta(hours=2), timedelta(hours=3), 3)

    early = await client.post(grab_path(later["id"]), headers=runner.headers)
    assert early.status_code == 409 and early.json()["code"] == "not_open"
    resp = await client.post(grab_path(open_now["id"]), headers=runner.headers)
    assert resp.status_code == 201, resp.text
    coupon = resp.json()
    assert coupon["source"] == {"kind": "flash", "ref": open_now["id"]}
    assert coupon["merchant_id"] is None and coupon["status"] == "unused"
    assert (coupon["valid_from"], coupon["valid_to"]) == (
        template["validity"]["starts_at"],
        template["validity"]["ends_at"],
    )
    again = await client.post(grab_path(open_now["id"]), headers=runner.headers)
    assert again.status_code == 409 and again.json()["code"] == "limit_reached"
    other = await accounts.runner()
    with pytest.raises(DomainError) as err:  # the same session once it has ended
        await coupon_service.claim_flash(
            kernel, coupon_service.Actor(user_id=int(other.user_id), role="runner"), int(open_now["id"]),
            idempotency_key=None, now=datetime.now(UTC) + timedelta(hours=1, seconds=1),
        )  # fmt: skip
    assert err.value.instance_code == "not_open"

    for odd in ("0", "nope", "123456789"):
        assert (await client.post(grab_path(odd), headers=runner.headers)).status_code == 404
    assert (await client.post(grab_path(open_now["id"]), headers=merchant.headers)).status_code == 403
    assert (await client.post(grab_path(open_now["id"]))).status_code == 401
    await persisted(kernel, template["id"], 1)
    wallet = (await client.get("/api/v1/coupon/me/coupons", headers=runner.headers)).json()["items"]
    assert wallet == [coupon]


async def test_who_may_create_sessions_and_bad_input(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    operator, merchant, runner = await accounts.operator(), await accounts.merchant(), await accounts.runner()
    platform = await make_template(operator, total_count=50)
    fixed = await make_template(operator, validity=window(timedelta(days=-1), timedelta(hours=2)))
    reward = await make_template(operator, distribution="task_reward")
    own = await make_template(merchant)
    good = session_body(platform["id"], timedelta(0), timedelta(hours=1), 5)
    assert (await client.post(SESSIONS, json=good)).status_code == 401
    for who in (merchant, runner):
        assert (await client.post(SESSIONS, json=good, headers=who.headers)).status_code == 403
    now = datetime.now(UTC)
    bad_bodies: list[Any] = [
        {**good, "template_id": own["id"]},  # a merchant's own template
        {**good, "template_id": reward["id"]},  # task rewards are not claimed
        {**good, "template_id": "123456789"},  # no such template
        {**good, "template_id": "abc"},
        {**good, "ends_at": good["starts_at"]},
        {**good, "starts_at": iso(now - timedelta(hours=3)), "ends_at": iso(now - timedelta(hours=2))},
        {**good, "ends_at": iso(now + timedelta(days=40))},
        {**good, "stock": 0},
        {**good, "stock": -3},
        {**good, "stock": 10**12},
        {**good, "stock": 51},
        {**good, "starts_at": "2026-11-22T08:00:00"},  # no zone
        {**good, "starts_at": "tomorrow"},
        {**good, "extra": 1},
        {**session_body(fixed["id"], timedelta(0), timedelta(hours=3), 5)},  # outlives the validity
        {k: v for k, v in good.items() if k != "stock"},
        [],
        "x",
    ]
    for body in bad_bodies:
        resp = await client.post(SESSIONS, json=body, headers=operator.headers)
        assert resp.status_code == 400, (bad_bodies.index(body), body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["code"] == "invalid_request"
    for raw in (b"", b"{", b"\xff\xfe", b'{"a": ' * 3000 + b"1" + b"}" * 3000, b"null"):
        resp = await client.post(
            SESSIONS, content=raw, headers={**operator.headers, "Content-Type": "application/json"}
        )
        assert 400 <= resp.status_code < 500, (raw[:20], resp.text)
    assert await coupon_service.claim_store(kernel).pool_stock(int(platform["id"])) == 50


async def test_day_listing(client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate) -> None:
    operator, runner = await accounts.operator(), await accounts.runner()
    template = await make_template(operator, total_count=100, per_user_limit=5)
    today = datetime.now(UTC).date()
    midnight = datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    empty = await client.get(SESSIONS, params={"date": today.isoformat()})
    assert empty.status_code == 200 and empty.json() == {"items": [], "next_cursor": None}  # now cached

    async def at(start: datetime, end: datetime, stock: int) -> dict[str, Any]:
        body = {"template_id": template["id"], "starts_at": iso(start), "ends_at": iso(end), "stock": stock}
        resp = await client.post(SESSIONS, json=body, headers=operator.headers)
        assert resp.status_code == 201, resp.text
        result: dict[str, Any] = resp.json()
        return result

    now = datetime.now(UTC)
    end_of_day = midnight + timedelta(days=1) - timedelta(seconds=1)
    open_now = await at(now - timedelta(minutes=1), min(now + timedelta(minutes=30), end_of_day), 10)
    tonight = await at(midnight + timedelta(hours=23), midnight + timedelta(hours=25), 10)  # into tomorrow
    tomorrow = await at(midnight + timedelta(days=1, hours=8), midnight + timedelta(days=1, hours=9), 10)

    listed = await client.get(SESSIONS, params={"date": today.isoformat()})  # the cache was invalidated
    assert listed.status_code == 200
    ids = [s["id"] for s in listed.json()["items"]]
    assert set(ids) == {open_now["id"], tonight["id"]}
    assert [s["starts_at"] for s in listed.json()["items"]] == sorted(s["starts_at"] for s in listed.json()["items"])
    assert (await client.get(SESSIONS)).json() == listed.json()  # default: today, UTC
    nxt = await client.get(SESSIONS, params={"date": (today + timedelta(days=1)).isoformat()})
    assert {s["id"] for s in nxt.json()["items"]} == {tonight["id"], tomorrow["id"]}  # visible before opening
    assert (await client.get(SESSIONS, params={"date": "2001-01-01"})).json()["items"] == []

    assert (await client.post(grab_path(open_now["id"]), headers=runner.headers)).status_code == 201
    await asyncio.sleep(coupon_service._flash.REMAINING_TTL_S + 0.05)  # at most a second stale
    fresh = {s["id"]: s for s in (await client.get(SESSIONS)).json()["items"]}
    assert fresh[open_now["id"]]["remaining"] == 9 and fresh[open_now["id"]]["stock"] == 10
    assert fresh[tonight["id"]]["remaining"] == 10

    for bad in (
        "2026-13-01",
        "2026-02-30",
        "yesterday",
        "2026-1-1",
        "",
        "2026-01-01T00:00:00Z",
        "x" * 40,
        "１２３",
        "9999-12-31",
        "0001-01-01",
        "1969-12-31",
    ):
        resp = await client.get(SESSIONS, params={"date": bad})
        assert resp.status_code == 400, (bad, resp.text)
        assert resp.json()["code"] == "invalid_request"


async def test_listing_rebuilds_a_lost_pool(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    operator, runner = await accounts.operator(), await accounts.runner()
    template = await make_template(operator, total_count=30, per_user_limit=5)
    session = await make_session(client, operator, template["id"], timedelta(minutes=-1), timedelta(hours=1), 8)
    assert (await client.post(grab_path(session["id"]), headers=runner.headers)).status_code == 201
    assert (await client.post(claim_path(template["id"]), headers=runner.headers)).status_code == 201
    await persisted(kernel, template["id"], 2)
    tid, sid = int(template["id"]), int(session["id"])
    keys = coupon_store.PoolKeys(tid)
    await kernel.redis.delete(*keys.all_static(), keys.session(sid))  # Redis lost the template's slot
    kernel.services.pop(coupon_service._flash.REMAINING_SERVICE, None)
    listed = (await client.get(SESSIONS)).json()["items"]
    assert [(s["id"], s["remaining"]) for s in listed] == [(session["id"], 7)]
    store = coupon_service.claim_store(kernel)
    assert await store.pool_stock(tid) == 30 - 8 - 1
    assert await store.user_count(tid, int(runner.user_id)) == 2


async def test_two_thousand_claims_three_hundred_runners_five_hundred_coupons(
    client: httpx.AsyncClient,
    accounts: Any,
    make_template: MakeTemplate,
    kernel: Kernel,
    stack_settings: Settings,
) -> None:
    operator = await accounts.operator()
    template = await make_template(operator, total_count=800, per_user_limit=2)
    session = await make_session(client, operator, template["id"], timedelta(minutes=-1), timedelta(hours=1), 500)
    runners = await make_runners(kernel, 300)
    order = [runners[i % 300] for i in range(2000)]
    random.Random(6).shuffle(order)
    async with roomy_client(stack_settings, node_id=202) as roomy:
        responses = await asyncio.gather(*(roomy.post(grab_path(session["id"]), headers=r.headers) for r in order))
        await asyncio.sleep(coupon_service._flash.REMAINING_TTL_S)
        # (through this app: the storm spent the default per-address allowance that apps share in Redis)
        listed = {s["id"]: s for s in (await roomy.get(SESSIONS)).json()["items"]}
    assert listed[session["id"]]["remaining"] == 0
    codes = Counter(r.status_code for r in responses)
    assert codes[201] == 500, codes
    assert codes[409] == 1500, codes
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {"sold_out", "limit_reached"}
    won = [r.json() for r in responses if r.status_code == 201]
    per_user = Counter(c["user_id"] for c in won)
    assert max(per_user.values()) <= 2
    assert len({c["id"] for c in won}) == 500 and len({c["code"] for c in won}) == 500

    tid, sid = int(template["id"]), int(session["id"])
    store = coupon_service.claim_store(kernel)
    assert await store.session_remaining([(tid, sid)]) == [0]
    assert await store.pool_stock(tid) == 300  # the template's own stock was never touched
    assert await store.claim_count(tid) == 500
    await persisted(kernel, tid, 500, timeout_s=30)
    async with kernel.sessionmaker() as db:
        rows = (
            await db.execute(
                select(models.UserCoupon.id, models.UserCoupon.user_id, models.UserCoupon.code).where(
                    models.UserCoupon.template_id == tid
                )
            )
        ).all()
    assert {str(r.id) for r in rows} == {c["id"] for c in won}  # nothing lost, nothing extra
    assert {r.code for r in rows} == {c["code"] for c in won}
    assert max(Counter(r.user_id for r in rows).values()) <= 2


async def test_openapi_lists_the_claim_endpoints(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert "post" in paths["/api/v1/coupon/templates/{template_id}/claims"]
    assert {"get", "post"} <= set(paths["/api/v1/coupon/flash-sessions"])
    assert "post" in paths["/api/v1/coupon/flash-sessions/{session_id}/claims"]
    assert "post" in paths["/api/v1/coupon/claim-denylist"]
    assert "delete" in paths["/api/v1/coupon/claim-denylist/{user_id}"]
    grab = paths["/api/v1/coupon/flash-sessions/{session_id}/claims"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in grab.get("parameters", []))
