"""Issuing one coupon of a template to one user: the path task rewards take today and claims will reuse.

The template's ``assigned`` counter is taken with a conditional UPDATE (``assigned < total_count``)
in the caller's transaction, before the coupon row is written: the row lock it holds until commit
serialises every issuer of one template, which is what keeps the counter exact and the per-user
count honest without any other lock. A duplicate (the same run, the same pre-made coupon id) gives
the counter back, so nothing is counted twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from coupon import codes as coupon_codes
from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _coupons
from coupon.service._records import Actor, CouponRecord, TemplateRecord
from picool import ids
from picool.ids import IdGenerator

SOURCE_KINDS = ("claim", "flash", "task")


class IssueOutcome(enum.StrEnum):
    """How an attempt to issue a coupon ended; everything but ``issued`` leaves the counters as they were."""

    ISSUED = "issued"
    DUPLICATE = "duplicate"  # this source already earned its coupon; ``coupon`` is that one if known
    SOLD_OUT = "sold_out"  # assigned == total_count
    LIMIT_REACHED = "limit_reached"  # the user holds per_user_limit coupons of the template
    VALIDITY_ENDED = "validity_ended"  # a fixed window that has closed: the coupon would be born expired


@dataclass(frozen=True, slots=True)
class IssueResult:
    """The outcome and, when there is one, the coupon."""

    outcome: IssueOutcome
    coupon: CouponRecord | None = None


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """One coupon for ``user_id`` from a source. ``coupon_id``/``code`` may be made beforehand (a claim
    acknowledged by Redis carries them; issuing is then idempotent on the id); both must carry the
    user's shard."""

    user_id: int
    source_kind: str
    source_ref: str
    coupon_id: int | None = None
    code: str | None = None
    enforce_user_limit: bool = True


def new_identifiers(generator: IdGenerator, user_id: int) -> tuple[int, str]:
    """A fresh coupon id and code for ``user_id``: both carry the user's shard, no database round trip."""
    shard = models.shard_of_user(user_id)
    return generator.next_id(shard), coupon_codes.new_code(shard)


async def _existing(session: AsyncSession, req: IssueRequest) -> CouponRecord | None:
    table = _coupons.USER_COUPONS
    stmt = select(*_coupons.columns(table)).where(table.c.user_id == req.user_id)
    if req.coupon_id is not None:
        stmt = stmt.where(table.c.id == req.coupon_id)
    elif req.source_kind == "task":
        stmt = stmt.where(table.c.source_kind == "task", table.c.source_ref == req.source_ref)
    else:
        return None
    row = (await session.execute(stmt)).first()
    return None if row is None else _coupons.to_record(row)


async def _give_back(session: AsyncSession, template_id: int) -> None:
    await session.execute(
        update(models.CouponTemplate)
        .where(models.CouponTemplate.id == template_id)
        .values(assigned=models.CouponTemplate.assigned - 1)
    )


async def issue_coupon(
    session: AsyncSession,
    generator: IdGenerator,
    template: TemplateRecord,
    req: IssueRequest,
    *,
    actor: Actor,
    now: datetime,
) -> IssueResult:
    """Issue one coupon of ``template`` in the caller's transaction (the caller commits, then invalidates
    the user's wallet when the outcome is ``issued``). Never issues beyond ``total_count``."""
    if req.source_kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {req.source_kind!r}")
    shard = models.shard_of_user(req.user_id)
    if req.coupon_id is not None and ids.shard_of(req.coupon_id) != shard:
        raise ValueError("coupon_id does not carry the user's shard")
    if req.code is not None and coupon_codes.shard_of(req.code) != shard:
        raise ValueError("code does not carry the user's shard")

    existing = await _existing(session, req)
    if existing is not None:
        return IssueResult(IssueOutcome.DUPLICATE, existing)
    valid_from, valid_to = coupon_domain.validity_window(template.parsed_validity(), now)
    if valid_to <= now:
        return IssueResult(IssueOutcome.VALIDITY_ENDED)

    taken = (
        await session.execute(
            update(models.CouponTemplate)
            .where(
                models.CouponTemplate.id == template.id,
                models.CouponTemplate.assigned < models.CouponTemplate.total_count,
            )
            .values(assigned=models.CouponTemplate.assigned + 1)
            .returning(models.CouponTemplate.id)
        )
    ).first()
    if taken is None:
        return IssueResult(IssueOutcome.SOLD_OUT)

    # From here on this transaction holds the template row: no other issuer of this template can
    # change the user's count under us.
    if req.enforce_user_limit:
        held = (
            await session.execute(
                select(func.count())
                .select_from(models.UserCoupon)
                .where(models.UserCoupon.user_id == req.user_id, models.UserCoupon.template_id == template.id)
            )
        ).scalar_one()
        if held >= template.per_user_limit:
            await _give_back(session, template.id)
            return IssueResult(IssueOutcome.LIMIT_REACHED)

    coupon_id, code = req.coupon_id, req.code
    for _attempt in range(3):
        if coupon_id is None or code is None:
            fresh_id, fresh_code = new_identifiers(generator, req.user_id)
            coupon_id, code = coupon_id or fresh_id, code or fresh_code
        values = {
            "user_id": req.user_id,
            "id": coupon_id,
            "code": code,
            "template_id": template.id,
            "merchant_id": template.merchant_id,
            "status": coupon_domain.CouponStatus.UNUSED.value,
            "source_kind": req.source_kind,
            "source_ref": req.source_ref,
            "received_at": now,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "used_at": None,
            "redeemed_by_merchant": None,
            "updated_at": now,
        }
        table = models.partition(shard)
        inserted = (
            await session.execute(
                pg_insert(table).values(**values).on_conflict_do_nothing().returning(*_coupons.columns(table))
            )
        ).first()
        if inserted is not None:
            record = _coupons.to_record(inserted)
            why = f"issued ({req.source_kind} {req.source_ref})"
            await _coupons.audit(
                session, [record], actor=actor, from_status=None, to_status=record.status, reason=why, at=now
            )
            return IssueResult(IssueOutcome.ISSUED, record)
        existing = await _existing(session, req)
        if existing is not None:  # a concurrent twin got there first
            await _give_back(session, template.id)
            return IssueResult(IssueOutcome.DUPLICATE, existing)
        if req.code is not None:  # a pre-made code that someone else holds: nothing we can retry
            break
        code = None  # a random code collided (about 1 in 2**65): draw another
    await _give_back(session, template.id)
    return IssueResult(IssueOutcome.DUPLICATE)
