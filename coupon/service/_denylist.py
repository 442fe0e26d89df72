"""The claim deny list: accounts operators barred from claiming coupons (risk control).

PostgreSQL holds the list (who, why, by whom). Redis holds a shared copy (one set), which every process
copies from PostgreSQL when it starts. Each process keeps the set in memory and re-reads the Redis copy
in the background when its copy is older than :data:`REFRESH_S`, so the claim path checks the list
before its Lua script without any round trip: a bar set in one process holds there at once and in every
other process within about a second. The list is meant to stay small (accounts, not traffic); a process
holds all of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from coupon import models
from coupon.service import _pools
from coupon.service._records import Actor
from picool.errors import Forbidden
from picool.kernel import Kernel

log = logging.getLogger("coupon.denylist")

MAX_LISTED = 1000
REFRESH_S = 1.0
DENY_SERVICE = "coupon.denylist"


@dataclass
class DenySet:
    """This process's copy of the deny list."""

    users: frozenset[int] = frozenset()
    loaded_at: float = 0.0
    refreshing: asyncio.Task[None] | None = field(default=None, repr=False)


def deny_set(kernel: Kernel) -> DenySet:
    """The process's copy (empty and never loaded until the first use)."""
    ds = kernel.services.get(DENY_SERVICE)
    if not isinstance(ds, DenySet):
        ds = DenySet()
        kernel.services[DENY_SERVICE] = ds
    return ds


async def refresh(kernel: Kernel) -> frozenset[int]:
    """Re-read the shared copy into this process."""
    ds = deny_set(kernel)
    users = await _pools.claim_store(kernel).denied_users()
    ds.users, ds.loaded_at = users, time.monotonic()
    return users


async def _refresh_quietly(kernel: Kernel) -> None:
    try:
        await refresh(kernel)
    except Exception:
        log.warning("could not re-read the claim deny list; keeping the copy we have", exc_info=True)
    finally:
        deny_set(kernel).refreshing = None


async def is_denied(kernel: Kernel, user_id: int) -> bool:
    """Whether ``user_id`` may not claim, from this process's copy (loaded on first use, then refreshed in
    the background: the caller never waits for Redis once the copy exists)."""
    ds = deny_set(kernel)
    if not ds.loaded_at:
        await refresh(kernel)
    elif time.monotonic() - ds.loaded_at > REFRESH_S and ds.refreshing is None:
        ds.refreshing = asyncio.create_task(_refresh_quietly(kernel), name="coupon-denylist-refresh")
    return user_id in ds.users


def _operator(actor: Actor) -> None:
    if actor.role != "operator":
        raise Forbidden("Only operators manage the claim deny list.")


async def deny_claims(kernel: Kernel, actor: Actor, user_id: int, reason: str) -> models.ClaimDenial:
    """Bar ``user_id`` from claiming (again: the reason is updated); operators only."""
    _operator(actor)
    async with kernel.sessionmaker() as session, session.begin():
        row = (
            await session.execute(
                pg_insert(models.ClaimDenial)
                .values(user_id=user_id, reason=reason, created_by=actor.user_id)
                .on_conflict_do_update(index_elements=["user_id"], set_={"reason": reason, "created_by": actor.user_id})
                .returning(models.ClaimDenial)
            )
        ).scalar_one()
    await _pools.claim_store(kernel).deny([user_id])
    await refresh(kernel)
    return row


async def allow_claims(kernel: Kernel, actor: Actor, user_id: int) -> bool:
    """Lift the bar on ``user_id``; False when there was none. Operators only."""
    _operator(actor)
    async with kernel.sessionmaker() as session, session.begin():
        gone = (
            await session.execute(
                delete(models.ClaimDenial)
                .where(models.ClaimDenial.user_id == user_id)
                .returning(models.ClaimDenial.user_id)
            )
        ).first()
    await _pools.claim_store(kernel).allow(user_id)
    await refresh(kernel)
    return gone is not None


async def denied(kernel: Kernel, actor: Actor) -> list[models.ClaimDenial]:
    """The barred accounts, newest first (at most :data:`MAX_LISTED`). Operators only."""
    _operator(actor)
    async with kernel.sessionmaker() as session:
        rows = await session.execute(
            select(models.ClaimDenial).order_by(models.ClaimDenial.created_at.desc()).limit(MAX_LISTED)
        )
        return list(rows.scalars())


async def sync_denylist(kernel: Kernel) -> int:
    """Make the shared copy equal to PostgreSQL's list and load it here (at start-up); how many are barred."""
    async with kernel.sessionmaker() as session:
        users = list((await session.execute(select(models.ClaimDenial.user_id))).scalars())
    await _pools.claim_store(kernel).replace_denied(users)
    await refresh(kernel)
    return len(users)
