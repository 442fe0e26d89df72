"""Redemption at the till and its reversal.

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

from coupon import codes as coupon_codes
from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _coupons, _templates, _wallet
from coupon.service._records import Actor, CouponRecord, TemplateRecord
from picool.errors import Conflict, Forbidden, InvalidRequest, NotFound
from picool.kernel import Kernel

USED = coupon_domain.CouponStatus.USED.value
UNUSED = coupon_domain.CouponStatus.UNUSED.value


class UnknownCode(NotFound):
    """No coupon has this code (or the code has a typo its check symbol caught)."""

    code = "unknown_code"
    title = "Unknown coupon code"


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


def _merchant_of(actor: Actor) -> int:
    if actor.role != "merchant" or actor.merchant_id is None:
        raise Forbidden("Only a merchant's staff redeem coupons.")
    return actor.merchant_id


def _refusal(err: coupon_domain.TransitionError) -> Conflict:
    messages = {
        "already_used": "This coupon has already been used.",
        "expired": "This coupon has expired.",
        "frozen": "This coupon is frozen.",
        "not_yet_valid": "This coupon is not valid yet.",
    }
    return Conflict(messages.get(err.code, str(err)), code=err.code)


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


def _parse(code: str, order_amount_cents: int) -> coupon_codes.ParsedCode:
    if not 0 <= order_amount_cents <= coupon_domain.MAX_CENTS:
        raise InvalidRequest(f"order_amount_cents: must be between 0 and {coupon_domain.MAX_CENTS}")
    try:
        return coupon_codes.parse_code(code)
    except coupon_codes.CodeError as err:
        raise UnknownCode(f"No coupon has this code ({err}).") from None


async def _check(
    kernel: Kernel,
    merchant_id: int,
    coupon: CouponRecord,
    order_amount_cents: int,
    *,
    items: Sequence[coupon_domain.OrderItem] | None,
    now: datetime,
) -> tuple[TemplateRecord, int]:
    """The coupon's template and the discount it gives this order at this merchant now; the same
    409 problems as a redemption when it cannot be redeemed."""
    if coupon.merchant_id is not None and coupon.merchant_id != merchant_id:
        raise Conflict("This coupon belongs to another merchant.", code="wrong_merchant")
    try:
        coupon_domain.ensure_redeemable(
            coupon_domain.CouponStatus(coupon.status), coupon.valid_from, coupon.valid_to, now
        )
    except coupon_domain.TransitionError as err:
        raise _refusal(err) from None
    template = await _templates.require_template(kernel, coupon.template_id)
    rule = template.parsed_rule()
    base = coupon_domain.base_amount(rule, order_amount_cents, items)
    discount = coupon_domain.discount_for(rule, order_amount_cents, items)
    if not coupon_domain.threshold_met(rule, base) or discount == 0:
        raise Conflict(
            f"The order does not meet this coupon's conditions ({coupon_domain.describe_rule(rule)}).",
            code="threshold_not_met",
        )
    return template, discount


@dataclass(frozen=True, slots=True)
class RedemptionPreview:
    """What redeeming a code for an order would give at this moment (nothing was redeemed)."""

    coupon: CouponRecord
    template: TemplateRecord
    order_amount_cents: int
    discount_cents: int

    @property
    def payable_cents(self) -> int:
        """What the customer would pay."""
        return self.order_amount_cents - self.discount_cents


async def preview_redemption(
    kernel: Kernel,
    actor: Actor,
    code: str,
    order_amount_cents: int,
    *,
    items: Sequence[coupon_domain.OrderItem] | None,
    now: datetime,
) -> RedemptionPreview:
    """Every check of :func:`redeem` without redeeming: the till shows the discount before the cashier
    confirms. Raises exactly what :func:`redeem` would (except ``idempotency_conflict``)."""
    merchant_id = _merchant_of(actor)
    parsed = _parse(code, order_amount_cents)
    async with kernel.sessionmaker() as session:
        coupon = await _coupons.find_by_code(session, parsed.canonical)
    if coupon is None:
        raise UnknownCode("No coupon has this code.")
    template, discount = await _check(kernel, merchant_id, coupon, order_amount_cents, items=items, now=now)
    return RedemptionPreview(coupon, template, order_amount_cents, discount)


async def redeem(kernel: Kernel, actor: Actor, req: RedeemRequest, now: datetime) -> RedemptionResult:
    """Redeem ``req.code`` for the actor's merchant (see the module docstring for the guarantees).

    Raises ``UnknownCode`` (404), ``Conflict`` with code ``already_used``, ``expired``, ``frozen``,
    ``not_yet_valid``, ``wrong_merchant``, ``threshold_not_met`` or ``idempotency_conflict`` (409),
    ``Forbidden`` for a caller that is not merchant staff.
    """
    merchant_id = _merchant_of(actor)
    parsed = _parse(req.code, req.order_amount_cents)
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
    _, discount = await _check(kernel, merchant_id, coupon, req.order_amount_cents, items=req.items, now=now)

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
                raise _refusal(err) from None
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


async def reverse(kernel: Kernel, actor: Actor, transaction_id: int, now: datetime) -> CouponRecord:
    """Undo a redemption (a refund): the coupon goes back to unused while its window is open.

    Only the redeeming merchant may (``Forbidden`` otherwise); an unknown transaction is
    ``NotFound``; a coupon whose window has closed stays used (409 ``expired``). Reversing twice
    is harmless: the second call answers with the coupon as it is.
    """
    merchant_id = _merchant_of(actor)
    async with kernel.sessionmaker() as session, session.begin():
        redemption = (
            await session.execute(
                select(models.Redemption).where(models.Redemption.transaction_id == transaction_id).with_for_update()
            )
        ).scalar_one_or_none()
        if redemption is None:
            raise NotFound("There is no redemption with this transaction id.")
        if redemption.merchant_id != merchant_id:
            raise Forbidden("Only the merchant that redeemed this coupon may reverse the redemption.")
        if redemption.reversed_at is not None:
            current = await _coupons.find_of_user(session, redemption.user_id, redemption.coupon_id)
            assert current is not None
            return current
        table = _coupons.USER_COUPONS
        moved = (
            await session.execute(
                update(table)
                .where(
                    table.c.user_id == redemption.user_id,
                    table.c.id == redemption.coupon_id,
                    table.c.status == USED,
                    table.c.valid_to > now,
                )
                .values(status=UNUSED, used_at=None, redeemed_by_merchant=None, updated_at=now)
                .returning(*_coupons.columns(table))
            )
        ).first()
        if moved is None:
            current = await _coupons.find_of_user(session, redemption.user_id, redemption.coupon_id)
            assert current is not None
            if current.status == USED:
                raise Conflict("This coupon's validity has ended; the redemption cannot be reversed.", code="expired")
            raise Conflict(
                f"This coupon is {current.status}; the redemption cannot be reversed.", code="invalid_transition"
            )
        coupon = _coupons.to_record(moved)
        redemption.reversed_at = now
        redemption.reversed_by = actor.user_id
        await session.execute(
            update(models.CouponTemplate)
            .where(models.CouponTemplate.id == coupon.template_id)
            .values(used=models.CouponTemplate.used - 1)
        )
        reason = f"redemption {transaction_id} reversed"
        await _coupons.audit(session, [coupon], actor=actor, from_status=USED, to_status=UNUSED, reason=reason, at=now)
        _coupons.announce(session, kernel.settings, [coupon], from_status=USED, to_status=UNUSED, reason=reason, at=now)
    await _wallet.invalidate_wallets(kernel, [coupon.user_id])
    return coupon
