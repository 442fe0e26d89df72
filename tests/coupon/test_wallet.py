"""The wallet: own coupons only, status filter, paging, and the two-level cache's guarantees."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from coupon import service as coupon_service
from coupon.service import _wallet
from picool.cache import CacheBus, TwoLevelCache
from picool.kernel import Kernel
from picool.testing import wait_for
from tests.coupon.conftest import Issue, MakeTemplate, close_window, iso

WALLET = "/api/v1/coupon/me/coupons"


async def _wallet_items(client: httpx.AsyncClient, runner: Any, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    resp = await client.get(WALLET, params=params, headers=runner.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"items", "next_cursor"}
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_runners_see_only_their_own_coupons(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, alice, bob = await accounts.merchant(), await accounts.runner(), await accounts.runner()
    template = await make_template(merchant, per_user_limit=3)
    a1 = await issue(template["id"], alice.user_id)
    a2 = await issue(template["id"], alice.user_id)
    b1 = await issue(template["id"], bob.user_id)
    alice_items = await _wallet_items(client, alice)
    assert [c["id"] for c in alice_items] == [str(a2.id), str(a1.id)]  # newest first
    assert {c["user_id"] for c in alice_items} == {alice.user_id}
    assert [c["id"] for c in await _wallet_items(client, bob)] == [str(b1.id)]
    c = alice_items[0]
    assert set(c) == {
        "id", "code", "template_id", "merchant_id", "user_id", "status", "source",
        "received_at", "valid_from", "valid_to", "used_at",
    }  # fmt: skip
    assert c["code"] == a2.code and c["status"] == "unused" and c["used_at"] is None
    assert c["merchant_id"] == merchant.merchant_id and c["template_id"] == template["id"]
    assert c["valid_to"].endswith("Z")


async def test_wallet_is_for_runners_and_needs_a_token(client: httpx.AsyncClient, accounts: Any) -> None:
    merchant = await accounts.merchant()
    assert (await client.get(WALLET)).status_code == 401
    assert (await client.get(WALLET, headers=merchant.headers)).status_code == 403


@pytest.mark.parametrize("params", [{"status": "bogus"}, {"status": "UNUSED"}, {"cursor": "abc"}, {"cursor": "-5"}])
async def test_bad_query_is_400(client: httpx.AsyncClient, accounts: Any, params: dict[str, str]) -> None:
    runner = await accounts.runner()
    resp = await client.get(WALLET, params=params, headers=runner.headers)
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_request"


async def test_status_filter_uses_the_status_shown_now(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, per_user_limit=3)
    keep = await issue(template["id"], runner.user_id)
    old = await issue(template["id"], runner.user_id)
    await close_window(kernel, old)  # its window closed, and the sweep has not run
    assert [c["id"] for c in await _wallet_items(client, runner, "unused")] == [str(keep.id)]
    assert [c["id"] for c in await _wallet_items(client, runner, "expired")] == [str(old.id)]
    assert {c["id"]: c["status"] for c in await _wallet_items(client, runner)} == {
        str(keep.id): "unused",
        str(old.id): "expired",
    }
    assert await _wallet_items(client, runner, "used") == []
    assert await _wallet_items(client, runner, "frozen") == []


async def test_a_cached_page_never_shows_a_closed_window_as_unused(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    now = datetime.now(UTC).replace(microsecond=0)
    validity = {"kind": "fixed", "starts_at": iso(now - timedelta(hours=1)), "ends_at": iso(now + timedelta(seconds=2))}
    template = await make_template(merchant, validity=validity)
    coupon = await issue(template["id"], runner.user_id)
    assert [c["status"] for c in await _wallet_items(client, runner, "unused")] == ["unused"]
    await asyncio.sleep(max(0.0, (coupon.valid_to - datetime.now(UTC)).total_seconds()) + 0.1)
    # Nothing invalidated the cached pages and no sweep ran; the read itself applies the window.
    assert await _wallet_items(client, runner, "unused") == []
    assert [c["status"] for c in await _wallet_items(client, runner)] == ["expired"]


async def test_paging(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, per_user_limit=1000, total_count=1000)
    n = coupon_service.PAGE_SIZE + 5
    ids = [str((await issue(template["id"], runner.user_id)).id) for _ in range(n)]
    first = (await client.get(WALLET, headers=runner.headers)).json()
    assert len(first["items"]) == coupon_service.PAGE_SIZE and first["next_cursor"]
    second = (await client.get(WALLET, params={"cursor": first["next_cursor"]}, headers=runner.headers)).json()
    assert second["next_cursor"] is None
    assert [c["id"] for c in first["items"] + second["items"]] == list(reversed(ids))
    # The settlement path reads every unused coupon, past the first page.
    assert len(await coupon_service.all_unused(kernel, int(runner.user_id), datetime.now(UTC))) == n


async def test_empty_wallet_is_cached(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    runner = await accounts.runner()
    cache = coupon_service.wallet_cache(kernel)
    misses, local, remote = cache.stats.misses, cache.stats.local_hits, cache.stats.redis_hits
    for _ in range(3):
        assert await _wallet_items(client, runner) == []
    assert cache.stats.misses == misses + 1
    assert cache.stats.local_hits == local + 2
    cache.clear_local()  # another process, or this one after the local TTL: Redis still has it
    assert await _wallet_items(client, runner) == []
    assert cache.stats.redis_hits == remote + 1
    assert cache.stats.misses == misses + 1


async def test_fifty_concurrent_cold_reads_load_once(
    client: httpx.AsyncClient,
    accounts: Any,
    kernel: Kernel,
    make_template: MakeTemplate,
    issue: Issue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant)
    await issue(template["id"], runner.user_id)
    cache = coupon_service.wallet_cache(kernel)
    misses = cache.stats.misses
    loads = 0
    real = _wallet.load_page

    async def counting(*args: Any, **kw: Any) -> Any:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # a slow database makes the stampede real
        return await real(*args, **kw)

    monkeypatch.setattr(_wallet, "load_page", counting)
    results = await asyncio.gather(*(_wallet_items(client, runner) for _ in range(50)))
    assert all(len(r) == 1 for r in results)
    assert loads == 1
    assert cache.stats.misses == misses + 1


async def test_changes_are_seen_on_the_next_read(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, issue: Issue
) -> None:
    merchant, operator, runner = await accounts.merchant(), await accounts.operator(), await accounts.runner()
    template = await make_template(merchant, per_user_limit=2)
    assert await _wallet_items(client, runner, "unused") == []  # cached empty
    coupon = await issue(template["id"], runner.user_id)
    assert [c["status"] for c in await _wallet_items(client, runner, "unused")] == ["unused"]
    resp = await client.post(f"/api/v1/coupon/coupons/{coupon.id}/freeze", headers=operator.headers)
    assert resp.status_code == 200
    assert await _wallet_items(client, runner, "unused") == []
    assert [c["status"] for c in await _wallet_items(client, runner, "frozen")] == ["frozen"]
    await client.post(f"/api/v1/coupon/coupons/{coupon.id}/unfreeze", headers=operator.headers)
    redeem = {"code": coupon.code, "order_amount_cents": 20_000, "idempotency_key": "k1"}
    assert (await client.post("/api/v1/coupon/redemptions", json=redeem, headers=merchant.headers)).status_code == 200
    assert [c["status"] for c in await _wallet_items(client, runner)] == ["used"]
    assert await _wallet_items(client, runner, "unused") == []


async def test_invalidation_reaches_another_process(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate, issue: Issue
) -> None:
    """A second cache on its own Redis connection and bus stands in for another process."""
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, per_user_limit=2)
    await issue(template["id"], runner.user_id)
    user_id = int(runner.user_id)
    key = _wallet.wallet_key(user_id, "all")

    other_redis = Redis.from_url(kernel.settings.redis_url)
    bus = CacheBus(other_redis)
    await bus.start()
    try:
        other: TwoLevelCache[coupon_service.WalletPage] = TwoLevelCache(
            _wallet.WALLET_CACHE, bus, coupon_service.WalletPage, local_ttl_s=60.0, slot_of=_wallet.wallet_slot
        )

        async def load() -> coupon_service.WalletPage:
            return await coupon_service.load_page(kernel, user_id, "all")

        page = await other.get(key, load)
        assert page is not None and len(page.items) == 1
        assert key in other.local

        await issue(template["id"], runner.user_id)  # commits, then invalidates through the bus

        await wait_for(lambda: asyncio.sleep(0, key not in other.local), timeout_s=5)
        page = await other.get(key, load)
        assert page is not None and len(page.items) == 2
    finally:
        await bus.stop()
        await other_redis.aclose()
