"""Redemption at the till (its reversal is :mod:`coupon.service._reversal`).

Reads first, without a transaction:

1. the idempotency key: a stored answer for (merchant, key) is returned as it was (409
   ``idempotency_conflict`` when the key comes back with another code or amount);
2. the coupon, found in the one partition its code names; ownership (``wrong_merchant``), state
   and threshold are checked so the answer names the real reason.

Then one transaction, whose conditional writes re-check whatever may have changed meanwhile:

3. the redemption row is inserted ``ON CONFLICT DO NOTHING`` on (merchant, key): a concurrent
   request with the same key waits here for ours and then replays our answer;
4. the coupon row moves ``unused → used`` with one conditional UPDATE (status and window in the
   WHERE clause), so of many concurrent redemptions of one code exactly one wins; the losers roll
   back, their redemption row with them;
5. the template's ``used`` counter, the audit row and the change event; then, after commit, the
   runner's wallet is invalidated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate

from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _coupons, _wallet
from coupon.service._records import Actor, CouponRecord
from coupon.service._redeem_checks import (
    UNUSED,
    USED,
    UnknownCode,
    check_redeemable,
    checked_code,
    merchant_of,
    refusal,
)
from picool.errors import Conflict
from picool.kernel import Kernel


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    """A code presented at the till for an order (``items`` lets scoped rules see the basket)."""

    code: str
    order_amount_cents: int
    idempotency_key: str
    items: Sequence[coupon_domain.OrderItem] | None = None


@dataclass(frozen=True, slots=True)
class RedemptionResult:
    """The answer to a redemption; a retry with the same key gets exactly this again."""

    transaction_id: int
    coupon_id: int
    discount_cents: int
    payable_cents: int
    redeemed_at: datetime


def _fingerprint(canonical_code: str, req: RedeemRequest) -> str:
    items = None if req.items is None else [[i.sku, i.category, i.price_cents, i.qty] for i in req.items]
    body = json.dumps([canonical_code, req.order_amount_cents, items], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _result(row: models.Redemption) -> RedemptionResult:
    return RedemptionResult(
        transaction_id=row.transaction_id,
        coupon_id=row.coupon_id,
        discount_cents=row.discount_cents,
        payable_cents=row.payable_cents,
        redeemed_at=row.redeemed_at,
    )


async def _stored(session: AsyncSession, merchant_id: int, key: str) -> models.Redemption | None:
    stmt = select(models.Redemption).where(
        models.Redemption.merchant_id == merchant_id, models.Redemption.idempotency_key == key
    )
    return (await session.execute(stmt)).scalar_one_or_none()


def _replay(stored: models.Redemption, fingerprint: str) -> RedemptionResult:
    if stored.request_hash != fingerprint:
        raise Conflict("This idempotency_key was already used for a different redemption.", code="idempotency_conflict")
    return _result(stored)


def use_statement(coupon: CouponRecord, merchant_id: int, now: datetime) -> ReturningUpdate[Any]:
    """The conditional ``unused → used`` UPDATE: it changes the row only if the coupon is unused and
    inside its window at ``now`` (and names ``user_id``, so it touches one partition)."""
    table = _coupons.USER_COUPONS
    return (
        update(table)
        .where(
            table.c.user_id == coupon.user_id,
            table.c.id == coupon.id,
            table.c.status == UNUSED,
            table.c.valid_from <= now,
            table.c.valid_to > now,
        )
        .values(status=USED, used_at=now, redeemed_by_merchant=merchant_id, updated_at=now)
        .returning(*_coupons.columns(table))
    )


async def redeem(kernel: Kernel, actor: Actor, req: RedeemRequest, now: datetime) -> RedemptionResult:
    """Redeem ``req.code`` for the actor's merchant (see the module docstring for the guarantees).

    Raises ``UnknownCode`` (404), ``Conflict`` with code ``already_used``, ``expired``, ``frozen``,
    ``not_yet_valid``, ``wrong_merchant``, ``threshold_not_met`` or ``idempotency_conflict`` (409),
    ``Forbidden`` for a caller that is not merchant staff.
    """
    merchant_id = merchant_of(actor)
    parsed = checked_code(req.code, req.order_amount_cents)
    fingerprint = _fingerprint(parsed.canonical, req)

    # Reads first, holding no transaction: the template may come from PostgreSQL through the cache,
    # and a transaction that waits on it while holding a pooled connection could starve the pool.
    async with kernel.sessionmaker() as session:
        stored = await _stored(session, merchant_id, req.idempotency_key)
        coupon = None if stored is not None else await _coupons.find_by_code(session, parsed.canonical)
    if stored is not None:
        return _replay(stored, fingerprint)
    if coupon is None:
        raise UnknownCode("No coupon has this code.")
    _, discount = await check_redeemable(kernel, merchant_id, coupon, req.order_amount_cents, items=req.items, now=now)

    # The checks above were made on a snapshot; the transaction below re-checks what can change
    # (the key, the coupon's status and window) with conditional writes.
    async with kernel.sessionmaker() as session, session.begin():
        transaction_id = kernel.ids.next_id(models.shard_of_user(coupon.user_id))
        claimed = (
            await session.execute(
                pg_insert(models.Redemption)
                .values(
                    transaction_id=transaction_id,
                    merchant_id=merchant_id,
                    idempotency_key=req.idempotency_key,
                    request_hash=fingerprint,
                    coupon_id=coupon.id,
                    user_id=coupon.user_id,
                    template_id=coupon.template_id,
                    code=coupon.code,
                    order_amount_cents=req.order_amount_cents,
                    discount_cents=discount,
                    payable_cents=req.order_amount_cents - discount,
                    redeemed_by=actor.user_id,
                    redeemed_at=now,
                )
                .on_conflict_do_nothing(index_elements=["merchant_id", "idempotency_key"])
                .returning(models.Redemption.transaction_id)
            )
        ).first()
        if claimed is None:  # a concurrent request with this key committed first: replay its answer
            stored = await _stored(session, merchant_id, req.idempotency_key)
            if stored is None:
                raise Conflict("This idempotency_key is being used right now; retry.", code="idempotency_conflict")
            return _replay(stored, fingerprint)

        moved = (await session.execute(use_statement(coupon, merchant_id, now))).first()
        if moved is None:
            # Someone changed the coupon between our read and our update; name what happened.
            current = await _coupons.find_of_user(session, coupon.user_id, coupon.id)
            assert current is not None
            try:
                coupon_domain.ensure_redeemable(
                    coupon_domain.CouponStatus(current.status), current.valid_from, current.valid_to, now
                )
            except coupon_domain.TransitionError as err:
                raise refusal(err) from None
            raise Conflict("This coupon has already been used.", code="already_used")
        used = _coupons.to_record(moved)
        await session.execute(
            update(models.CouponTemplate)
            .where(models.CouponTemplate.id == coupon.template_id)
            .values(used=models.CouponTemplate.used + 1)
        )
        reason = f"redeemed (transaction {transaction_id})"
        await _coupons.audit(session, [used], actor=actor, from_status=UNUSED, to_status=USED, reason=reason, at=now)
        _coupons.announce(session, kernel.settings, [used], from_status=UNUSED, to_status=USED, reason=reason, at=now)
    await _wallet.invalidate_wallets(kernel, [coupon.user_id])
    return RedemptionResult(
        transaction_id=transaction_id,
        coupon_id=coupon.id,
        discount_cents=discount,
        payable_cents=req.order_amount_cents - discount,
        redeemed_at=now,
    )
