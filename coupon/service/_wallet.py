"""A runner's wallet, read through the two-level cache and invalidated whenever one of its coupons changes.

Cache entries are first pages per user and status filter (``<user_id>:<all|unused|used|expired|frozen>``).
An entry holds *stored* statuses; the status shown is computed at read time
(:func:`coupon.domain.effective_status`), so a cached page never shows a coupon past its window as
unused, even before the expiry sweep has written it. That is also why the ``expired`` entry holds
stored-unused coupons too: they turn expired while the entry sits in the cache.

Penetration: an empty wallet is cached like any other page. Avalanche: TTLs are jittered by the
cache. Breakdown: one loader per key per process, and one process at a time through a Redis lock.
Consistency: every change invalidates all five entries of the user, in every process, after it
committed (:func:`invalidate_wallets`), before the request that made it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from coupon.service import _coupons
from coupon.service._records import CouponRecord, WalletPage
from picool.cache import TwoLevelCache
from picool.errors import InvalidRequest
from picool.kernel import Kernel

WALLET_CACHE = "coupon.wallet"
STATUSES = ("unused", "used", "expired", "frozen")
VARIANTS = ("all", *STATUSES)
PAGE_SIZE = 200

# Which stored statuses can show as the requested one (see the module docstring).
_STORED: dict[str, tuple[str, ...]] = {
    "all": (),
    "unused": ("unused",),
    "used": ("used",),
    "expired": ("expired", "unused"),
    "frozen": ("frozen",),
}


def wallet_cache(kernel: Kernel) -> TwoLevelCache[WalletPage]:
    """The two-level cache of first wallet pages."""
    cache: TwoLevelCache[WalletPage] = kernel.cache(
        WALLET_CACHE, WalletPage, local_ttl_s=5.0, redis_ttl_s=300.0, negative_ttl_s=15.0, slot_of=wallet_slot
    )
    return cache


def wallet_slot(key: str) -> str:
    """The group of a wallet cache key: its user (a new coupon drops three of a user's pages in one call)."""
    return key.partition(":")[0]


def wallet_key(user_id: int, variant: str) -> str:
    """The cache key of ``user_id``'s first page for ``variant`` (``all`` or a status)."""
    return f"{user_id}:{variant}"


def wallet_query(user_id: int, variant: str, before: int | None = None) -> Select[Any]:
    """The query of one wallet page: it names ``user_id``, so it touches only the user's partition."""
    table = _coupons.USER_COUPONS
    stmt = select(*_coupons.columns(table)).where(table.c.user_id == user_id)
    stored = _STORED[variant]
    if stored:
        stmt = stmt.where(table.c.status.in_(stored))
    if before is not None:
        stmt = stmt.where(table.c.id < before)
    return stmt.order_by(table.c.id.desc()).limit(PAGE_SIZE + 1)


async def load_page(kernel: Kernel, user_id: int, variant: str, before: int | None = None) -> WalletPage:
    """A page of ``user_id``'s coupons from PostgreSQL, newest first, older than ``before`` if given."""
    stmt = wallet_query(user_id, variant, before)
    async with kernel.sessionmaker() as session:
        rows = (await session.execute(stmt)).all()
    items = [_coupons.to_record(r) for r in rows[:PAGE_SIZE]]
    more = len(rows) > PAGE_SIZE
    return WalletPage(items=items, next_cursor=items[-1].id if more else None)


async def wallet_page(
    kernel: Kernel, user_id: int, status: str | None, now: datetime, cursor: int | None = None
) -> tuple[list[CouponRecord], int | None]:
    """One page of the wallet, filtered by the status each coupon shows at ``now``.

    The first page comes through the cache; later pages (rare) straight from the user's partition.
    Raises ``InvalidRequest`` for an unknown status.
    """
    if status is not None and status not in STATUSES:
        raise InvalidRequest("status: must be one of unused, used, expired, frozen")
    variant = status or "all"
    if cursor is None:

        async def loader() -> WalletPage:
            return await load_page(kernel, user_id, variant)

        page = await wallet_cache(kernel).get(wallet_key(user_id, variant), loader)
        assert page is not None  # the loader always returns a page (an empty one for an empty wallet)
    else:
        page = await load_page(kernel, user_id, variant, before=cursor)
    items = [c for c in page.items if status is None or c.effective_status(now) == status]
    return items, page.next_cursor


async def all_unused(kernel: Kernel, user_id: int, now: datetime) -> list[CouponRecord]:
    """Every coupon of ``user_id`` that shows as unused at ``now`` (first page cached, the rest paged)."""
    items, cursor = await wallet_page(kernel, user_id, "unused", now)
    out = list(items)
    while cursor is not None:
        items, cursor = await wallet_page(kernel, user_id, "unused", now, cursor)
        out += items
    return out


async def invalidate_wallets(kernel: Kernel, user_ids: Iterable[int]) -> None:
    """Drop every cached page of these users, in every process (call after the change committed)."""
    cache = wallet_cache(kernel)
    keys = [wallet_key(u, v) for u in dict.fromkeys(user_ids) for v in VARIANTS]
    # Bounded fan-out: an expiry batch can touch a thousand users.
    for i in range(0, len(keys), 100):
        await asyncio.gather(*(cache.invalidate(k) for k in keys[i : i + 100]))


# A new unused coupon changes only the pages that can show it: all, unused and expired (which holds
# stored-unused coupons, see _STORED); used and frozen pages stay valid.
_NEW_COUPON_VARIANTS = ("all", "unused", "expired")


async def invalidate_new_coupons(kernel: Kernel, user_ids: Iterable[int]) -> None:
    """Drop the cached pages a newly issued coupon changes, for many users at once (claim batches)."""
    keys = [wallet_key(u, v) for u in dict.fromkeys(user_ids) for v in _NEW_COUPON_VARIANTS]
    cache = wallet_cache(kernel)
    for i in range(0, len(keys), 1500):
        await cache.invalidate_many(keys[i : i + 1500])
