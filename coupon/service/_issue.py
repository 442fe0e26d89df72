"""Issuing one coupon of a template to one user: the path task rewards take today and claims will reuse.

The template's ``assigned`` counter is taken with a conditional UPDATE (``assigned < total_count``)
in the caller's transaction, before the coupon row is written: the row lock it holds until commit
serialises every issuer of one template, which is what keeps the counter exact and the per-user
count honest without any other lock. A duplicate (the same run, the same pre-made coupon id) gives
the counter back, so nothing is counted twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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


@dataclass(frozen=True, slots=True)
class PremadeCoupon:
    """A coupon whose stock and per-user limit were already decided elsewhere (a claim Redis accepted):
    its id and code are made, its receipt time is the moment of the claim."""

    coupon_id: int
    user_id: int
    code: str
    template_id: int
    source_kind: str
    source_ref: str
    received_at: datetime


_INSERT_PREMADE = text(
    """
    WITH ins AS (
        INSERT INTO user_coupons (user_id, id, code, template_id, merchant_id, status, source_kind, source_ref,
                                  received_at, valid_from, valid_to, used_at, redeemed_by_merchant, updated_at)
        SELECT u, i, c, t, m, 'unused', k, r, ra, vf, vt, NULL, NULL, :now
        FROM unnest(CAST(:u AS bigint[]), CAST(:i AS bigint[]), CAST(:c AS text[]), CAST(:t AS bigint[]),
                    CAST(:m AS bigint[]), CAST(:k AS text[]), CAST(:r AS text[]), CAST(:ra AS timestamptz[]),
                    CAST(:vf AS timestamptz[]), CAST(:vt AS timestamptz[])) AS x(u, i, c, t, m, k, r, ra, vf, vt)
        ON CONFLICT DO NOTHING
        RETURNING id, user_id, template_id, source_kind, source_ref
    ), audit AS (
        INSERT INTO coupon_audit (coupon_id, user_id, template_id, actor, at, from_status, to_status, reason)
        SELECT id, user_id, template_id, :actor, :now, NULL, 'unused',
               left('issued (' || source_kind || ' ' || source_ref || ')', 200)
        FROM ins
    ), counted AS (
        UPDATE coupon_templates SET assigned = coupon_templates.assigned + n.n
        FROM (SELECT template_id, count(*) AS n FROM ins GROUP BY template_id) AS n
        WHERE coupon_templates.id = n.template_id
    )
    SELECT id FROM ins
    """
)


@dataclass(frozen=True, slots=True)
class Issued:
    """A coupon :func:`issue_premade` wrote."""

    coupon_id: int
    user_id: int
    template_id: int


async def issue_premade(
    conn: AsyncConnection | AsyncSession,
    templates: dict[int, TemplateRecord],
    coupons: list[PremadeCoupon],
    *,
    actor: Actor,
    now: datetime,
) -> list[Issued]:
    """Write a batch of pre-decided coupons; returns those newly written.

    One statement does it all, so it is atomic even outside a transaction (the claim consumer runs it
    in autocommit: no BEGIN/COMMIT round trips): the coupons (arrays in, ``unnest`` out, ``ON CONFLICT
    DO NOTHING``), an audit row for each coupon really inserted, and ``assigned += n`` once per template
    rather than once per coupon (the template row is the hot spot of a flash sale). Idempotent on the
    coupon id: a coupon already stored is skipped and counted once. The stock was decided before
    (Redis), so nothing here refuses for stock or per-user limit; the table's CHECK (``assigned <=
    total_count``) fails the whole statement if the two ever disagreed. Two batches of the same *two*
    templates can deadlock on the template rows; PostgreSQL then fails one and the consumer retries it.
    Every coupon must carry its user's shard (``ValueError`` otherwise) and name a template in ``templates``.
    """
    for c in coupons:
        shard = models.shard_of_user(c.user_id)
        if ids.shard_of(c.coupon_id) != shard or coupon_codes.shard_of(c.code) != shard:
            raise ValueError(f"coupon {c.coupon_id} does not carry the shard of user {c.user_id}")
        if c.source_kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {c.source_kind!r}")
    unique = {c.coupon_id: c for c in coupons}
    if not unique:
        return []
    done = await _insert_premade(conn, templates, list(unique.values()), actor=actor, now=now)
    left = [c for cid, c in unique.items() if cid not in done]
    if left:
        # Either stored before (a redelivery: fine) or, about once in 2**65, a code someone else holds.
        table = _coupons.USER_COUPONS
        present = {
            row.id
            for row in (
                await conn.execute(
                    select(table.c.id).where(
                        tuple_(table.c.user_id, table.c.id).in_([(c.user_id, c.coupon_id) for c in left])
                    )
                )
            ).all()
        }
        for c in left:
            if c.coupon_id in present:
                continue
            # The runner was shown a code that collides: give the coupon a fresh one rather than lose it.
            for _attempt in range(3):
                fresh = replace(c, code=coupon_codes.new_code(models.shard_of_user(c.user_id)))
                if await _insert_premade(conn, templates, [fresh], actor=actor, now=now):
                    done.add(c.coupon_id)
                    break
    return [Issued(cid, unique[cid].user_id, unique[cid].template_id) for cid in done]


async def _insert_premade(
    conn: AsyncConnection | AsyncSession,
    templates: dict[int, TemplateRecord],
    coupons: list[PremadeCoupon],
    *,
    actor: Actor,
    now: datetime,
) -> set[int]:
    cols: dict[str, list[Any]] = {k: [] for k in ("u", "i", "c", "t", "m", "k", "r", "ra", "vf", "vt")}
    validity = {tid: t.parsed_validity() for tid, t in templates.items()}  # parsed once per batch, not per coupon
    for c in coupons:
        template = templates[c.template_id]
        valid_from, valid_to = coupon_domain.validity_window(validity[c.template_id], c.received_at)
        for name, value in zip(
            cols,
            (c.user_id, c.coupon_id, c.code, template.id, template.merchant_id, c.source_kind, c.source_ref,
             c.received_at, valid_from, valid_to),
            strict=True,
        ):  # fmt: skip
            cols[name].append(value)
    rows = await conn.execute(_INSERT_PREMADE, {**cols, "now": now, "actor": actor.label[:64]})
    return {r.id for r in rows}
