"""The claim deny list: accounts operators barred from claiming coupons (risk control).

PostgreSQL holds the list (who, why, by whom); Redis holds the copy the claim path reads, one key per
account. Every process copies the table into Redis when it starts, so a Redis that lost the keys gets
them back; a change writes PostgreSQL first, then Redis.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from coupon import models
from coupon.service import _pools
from coupon.service._records import Actor
from picool.errors import Forbidden
from picool.kernel import Kernel

MAX_LISTED = 1000


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
    """Copy the whole list into Redis (at start-up); returns how many accounts are barred."""
    async with kernel.sessionmaker() as session:
        users = list((await session.execute(select(models.ClaimDenial.user_id))).scalars())
    store = _pools.claim_store(kernel)
    for i in range(0, len(users), 1000):
        await store.deny(users[i : i + 1000])
    return len(users)
