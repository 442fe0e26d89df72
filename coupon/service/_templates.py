"""Templates (coupon batches): creation with rule validation, cached reads, exact statistics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _pools
from coupon.service._records import Actor, TemplateRecord
from picool.cache import TwoLevelCache
from picool.errors import Forbidden, InvalidRequest, NotFound
from picool.kernel import Kernel

log = logging.getLogger("coupon.templates")

TEMPLATE_CACHE = "coupon.template"
DISTRIBUTIONS = ("claim", "task_reward")
MAX_TOTAL_COUNT = 10_000_000


def template_cache(kernel: Kernel) -> TwoLevelCache[TemplateRecord]:
    """The two-level cache of templates by id (a missing id is cached as None for a short while)."""
    cache: TwoLevelCache[TemplateRecord] = kernel.cache(
        TEMPLATE_CACHE, TemplateRecord, local_ttl_s=30.0, redis_ttl_s=600.0, negative_ttl_s=15.0
    )
    return cache


def to_template(row: models.CouponTemplate) -> TemplateRecord:
    """The cacheable record of a template row."""
    return TemplateRecord(
        id=row.id,
        merchant_id=row.merchant_id,
        name=row.name,
        description=row.description,
        rule=dict(row.rule),
        validity=dict(row.validity),
        total_count=row.total_count,
        per_user_limit=row.per_user_limit,
        distribution=row.distribution,
        status=row.status,
        created_at=row.created_at,
    )


@dataclass(frozen=True, slots=True)
class NewTemplate:
    """What a merchant or operator asks for; ``rule`` and ``validity`` are the raw API JSON."""

    name: str
    description: str
    rule: Any
    validity: Any
    total_count: int
    per_user_limit: int
    distribution: str


def _invalid(prefix: str, err: coupon_domain.RuleError) -> InvalidRequest:
    key = f"{prefix}.{err.field}"
    return InvalidRequest(f"{key}: {err.message}", errors=[{"key": key, "message": err.message, "source": "body"}])


def validate(new: NewTemplate) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The cleaned name and the canonical rule and validity JSON; ``InvalidRequest`` naming the field otherwise."""
    name = new.name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest(
            "name: must be 1 to 100 characters", errors=[{"key": "name", "message": "must be 1 to 100 characters"}]
        )
    if not 1 <= new.total_count <= MAX_TOTAL_COUNT:
        raise InvalidRequest(f"total_count: must be between 1 and {MAX_TOTAL_COUNT}")
    if new.per_user_limit < 1:
        raise InvalidRequest("per_user_limit: must be at least 1")
    if new.distribution not in DISTRIBUTIONS:
        raise InvalidRequest("distribution: must be claim or task_reward")
    try:
        rule = coupon_domain.parse_rule(new.rule)
    except coupon_domain.RuleError as err:
        raise _invalid("rule", err) from None
    try:
        validity = coupon_domain.parse_validity(new.validity)
    except coupon_domain.RuleError as err:
        raise _invalid("validity", err) from None
    return name, coupon_domain.rule_to_dict(rule), coupon_domain.validity_to_dict(validity)


async def create_template(kernel: Kernel, actor: Actor, new: NewTemplate) -> TemplateRecord:
    """Create a batch: a merchant's own, or (operator) a platform batch that every merchant accepts.

    Raises ``Forbidden`` for other roles and ``InvalidRequest`` naming the first failing field.
    """
    if actor.role == "merchant":
        if actor.merchant_id is None:
            raise Forbidden("This merchant account is not linked to a merchant.")
        merchant_id: int | None = actor.merchant_id
    elif actor.role == "operator":
        merchant_id = None
    else:
        raise Forbidden(f"Only merchants and operators create coupon templates; you are {actor.role}.")
    name, rule, validity = validate(new)
    row = models.CouponTemplate(
        id=kernel.ids.next_id(0),
        merchant_id=merchant_id,
        name=name,
        description=new.description.strip(),
        rule=rule,
        validity=validity,
        total_count=new.total_count,
        per_user_limit=new.per_user_limit,
        distribution=new.distribution,
        status="active",
        assigned=0,
        used=0,
        created_by=actor.user_id,
    )
    async with kernel.sessionmaker() as session, session.begin():
        session.add(row)
        await session.flush()
        await session.refresh(row, ["created_at"])
    record = to_template(row)
    # A negative entry for this id cannot exist in practice (ids are new), but dropping one is cheap.
    await template_cache(kernel).invalidate(str(record.id))
    # Its claim pool, right away; should this fail, the first claim rebuilds it (_pools.ensure_pool).
    try:
        await _pools.create_pool(kernel, record)
    except Exception:
        log.warning("could not create the claim pool of template %s; the first claim will", record.id, exc_info=True)
    return record


async def load_template(kernel: Kernel, template_id: int) -> TemplateRecord | None:
    """The template straight from PostgreSQL (the cache's loader)."""
    async with kernel.sessionmaker() as session:
        row = await session.get(models.CouponTemplate, template_id)
        return None if row is None else to_template(row)


async def get_template(kernel: Kernel, template_id: int) -> TemplateRecord | None:
    """The template through the two-level cache, or None when there is none."""

    async def loader() -> TemplateRecord | None:
        return await load_template(kernel, template_id)

    return await template_cache(kernel).get(str(template_id), loader)


async def require_template(kernel: Kernel, template_id: int) -> TemplateRecord:
    """The template, or ``NotFound``."""
    template = await get_template(kernel, template_id)
    if template is None:
        raise NotFound("There is no coupon template with this id.")
    return template


async def list_templates(
    kernel: Kernel, actor: Actor, before: int | None, limit: int
) -> tuple[list[TemplateRecord], int | None]:
    """A page of the batches the actor manages, newest first: a merchant's own, or (operator) the
    platform batches. Returns the page and the cursor of the next one (None on the last page)."""
    table = models.CouponTemplate
    if actor.role == "merchant" and actor.merchant_id is not None:
        owner = table.merchant_id == actor.merchant_id
    elif actor.role == "operator":
        owner = table.merchant_id.is_(None)
    else:
        raise Forbidden("Only merchants and operators list coupon templates.")
    stmt = select(table).where(owner)
    if before is not None:
        stmt = stmt.where(table.id < before)
    async with kernel.sessionmaker() as session:
        rows = (await session.execute(stmt.order_by(table.id.desc()).limit(limit + 1))).scalars().all()
    page = [to_template(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def invalidate_template(kernel: Kernel, template_id: int) -> None:
    """Drop a template from every process's cache (call after committing a change to it)."""
    await template_cache(kernel).invalidate(str(template_id))


@dataclass(frozen=True, slots=True)
class Stats:
    """Exact counters of a batch at one moment."""

    template_id: int
    total: int
    assigned: int
    used: int

    @property
    def remaining(self) -> int:
        """Coupons not handed out yet."""
        return self.total - self.assigned


def ensure_owner(actor: Actor, template: TemplateRecord) -> None:
    """Operators see every batch; a merchant only its own (not platform ones). ``Forbidden`` otherwise."""
    if actor.role == "operator":
        return
    if actor.role == "merchant" and template.merchant_id is not None and template.merchant_id == actor.merchant_id:
        return
    raise Forbidden("Only the merchant that owns this coupon template, or an operator, may see its statistics.")


async def template_stats(kernel: Kernel, actor: Actor, template_id: int) -> Stats:
    """The counters of a batch for its merchant or an operator, read from PostgreSQL (never cached)."""
    template = await require_template(kernel, template_id)
    ensure_owner(actor, template)
    async with kernel.sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    models.CouponTemplate.total_count, models.CouponTemplate.assigned, models.CouponTemplate.used
                ).where(models.CouponTemplate.id == template_id)
            )
        ).one()
    return Stats(template_id=template_id, total=row.total_count, assigned=row.assigned, used=row.used)
