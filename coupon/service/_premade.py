"""Issuing a batch of pre-made coupons (claims Redis accepted) in one statement: the claim pipeline's
batched sibling of :func:`coupon.service._issue.issue_coupon`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from coupon import codes as coupon_codes
from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _coupons
from coupon.service._issue import SOURCE_KINDS
from coupon.service._records import Actor, TemplateRecord
from picool import ids


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


def check_premade(c: PremadeCoupon) -> None:
    """``ValueError`` unless the coupon's id and code carry its user's shard and its source kind is known."""
    shard = models.shard_of_user(c.user_id)
    if ids.shard_of(c.coupon_id) != shard:
        raise ValueError("coupon id does not carry the user's shard")
    try:
        if coupon_codes.shard_of(c.code) != shard:
            raise ValueError("code does not carry the user's shard")
    except coupon_codes.CodeError as exc:
        raise ValueError(f"malformed code: {exc}") from None
    if c.source_kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {c.source_kind!r}")


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
    checked: bool = False,
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
    Every coupon must pass :func:`check_premade` (``ValueError`` otherwise; ``checked`` says the caller
    already checked each one) and name a template in ``templates``.
    """
    if not checked:
        for c in coupons:
            check_premade(c)
    unique = {c.coupon_id: c for c in coupons}
    if not unique:
        return []
    done = await _insert_premade(conn, templates, list(unique.values()), actor=actor, now=now)
    left = [c for cid, c in unique.items() if cid not in done]
    if left:
        # Either stored before (a redelivery: fine) or, about once in 2**65, a code someone else holds.
        present = await _coupons.stored_of(conn, [(c.user_id, c.coupon_id) for c in left])
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
