"""Sharded storage: rows land in partition ``user_id % 16``, and user- or code-keyed queries touch one partition."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from coupon import codes as coupon_codes
from coupon import models
from coupon import service as coupon_service
from coupon.service import _coupons, _redeem, _wallet
from picool import ids
from picool.kernel import Kernel

OPERATOR = coupon_service.Actor(user_id=1, role="operator")
PARTITION = re.compile(r"\buser_coupons_p\d+\b")


async def _template(kernel: Kernel, total: int = 1000, per_user: int = 5) -> coupon_service.TemplateRecord:
    new = coupon_service.NewTemplate(
        name="t",
        description="",
        rule={"type": "direct", "amount_cents": 100},
        validity={"kind": "relative", "days": 1},
        total_count=total,
        per_user_limit=per_user,
        distribution="claim",
    )
    return await coupon_service.create_template(kernel, OPERATOR, new)


async def _issue(kernel: Kernel, template: coupon_service.TemplateRecord, user_id: int) -> coupon_service.CouponRecord:
    async with kernel.sessionmaker() as session, session.begin():
        result = await coupon_service.issue_coupon(
            session,
            kernel.ids,
            template,
            coupon_service.IssueRequest(user_id=user_id, source_kind="claim", source_ref="s"),
            actor=OPERATOR,
            now=datetime.now(UTC),
        )
    assert result.coupon is not None
    return result.coupon


async def _explain(conn: AsyncConnection, stmt: Any) -> str:
    """The plan PostgreSQL makes for ``stmt`` with its real (bound) parameters."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    positional = tuple(params[name] for name in compiled.positiontup)
    rows = await conn.exec_driver_sql("EXPLAIN " + str(compiled), positional)
    return "\n".join(r[0] for r in rows)


def _partitions(plan: str) -> set[str]:
    return set(PARTITION.findall(plan))


@pytest.mark.usefixtures("client")
async def test_rows_land_in_the_partition_their_ids_and_codes_name(kernel: Kernel) -> None:
    template = await _template(kernel, total=1000, per_user=1)
    users = list(range(1, 40)) + [random.randrange(1, 1 << 63) for _ in range(150)]
    for user_id in users:
        coupon = await _issue(kernel, template, user_id)
        shard = user_id % models.SHARDS
        assert ids.shard_of(coupon.id) == shard
        assert coupon_codes.parse_code(coupon.code).shard == shard
    async with kernel.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT user_id, tableoid::regclass::text FROM user_coupons"))).all()
    assert len(rows) == len(users)
    assert all(table == f"user_coupons_p{user_id % 16}" for user_id, table in rows)


@pytest.mark.usefixtures("client")
async def test_wallet_query_touches_one_partition(kernel: Kernel) -> None:
    template = await _template(kernel)
    users = [7, 16, 1 << 40, random.randrange(1, 1 << 63)]
    for user_id in users:
        await _issue(kernel, template, user_id)
    async with kernel.engine.connect() as conn:
        for user_id in users:
            for variant in ("all", "unused", "expired"):
                plan = await _explain(conn, _wallet.wallet_query(user_id, variant, before=None))
                assert _partitions(plan) == {f"user_coupons_p{user_id % 16}"}, plan
            plan = await _explain(conn, _wallet.wallet_query(user_id, "used", before=1 << 60))
            assert _partitions(plan) == {f"user_coupons_p{user_id % 16}"}, plan


@pytest.mark.usefixtures("client")
async def test_the_same_query_on_a_generic_plan_prunes_at_run_time(kernel: Kernel) -> None:
    """A prepared statement may get a generic plan (no values at planning): pruning then happens when it runs."""
    user_id = 123_457
    async with kernel.engine.connect() as conn:
        await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await conn.execute(text("PREPARE wallet(bigint) AS SELECT id FROM user_coupons WHERE user_id = $1"))
        plan = "\n".join(
            r[0] for r in await conn.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE wallet({user_id})"))
        )
        await conn.execute(text("DEALLOCATE wallet"))
    assert "Subplans Removed: 15" in plan, plan
    assert _partitions(plan) == {f"user_coupons_p{user_id % 16}"}, plan


@pytest.mark.usefixtures("client")
async def test_code_lookup_and_redemption_touch_one_partition(kernel: Kernel) -> None:
    template = await _template(kernel)
    user_id = random.randrange(1, 1 << 63)
    coupon = await _issue(kernel, template, user_id)
    parsed = coupon_codes.parse_code(coupon.code.lower())
    async with kernel.engine.connect() as conn:
        plan = await _explain(conn, _coupons.code_query(parsed.canonical, parsed.shard))
        assert _partitions(plan) == {f"user_coupons_p{user_id % 16}"}, plan
        assert "uq_user_coupons_p" in plan  # by the per-partition unique index on the code
        plan = await _explain(conn, _redeem.use_statement(coupon, 42, datetime.now(UTC)))
        assert _partitions(plan) == {f"user_coupons_p{user_id % 16}"}, plan
    async with kernel.sessionmaker() as session:
        found = await coupon_service.find_by_code(session, coupon.code.lower().replace("-", " "))
        assert found == coupon
        assert await coupon_service.find_by_id(session, coupon.id) == coupon


@pytest.mark.usefixtures("client")
async def test_malformed_codes_and_foreign_shards_find_nothing(kernel: Kernel) -> None:
    template = await _template(kernel)
    coupon = await _issue(kernel, template, 5)
    typo = coupon.code[:-1] + ("0" if coupon.code[-1] != "0" else "1")
    async with kernel.sessionmaker() as session:
        assert await coupon_service.find_by_code(session, typo) is None
        assert await coupon_service.find_by_code(session, "") is None
        assert await coupon_service.find_by_code(session, "x" * 10_000) is None
        # A well-formed code of a shard beyond the 16 partitions (the format has room for 1024).
        assert await coupon_service.find_by_code(session, coupon_codes.new_code(1000)) is None
        assert await coupon_service.find_by_id(session, (coupon.id & ~63) | 40) is None


def test_partition_table_bounds() -> None:
    assert models.partition(0).name == "user_coupons_p0"
    assert models.partition(15).name == "user_coupons_p15"
    with pytest.raises(ValueError, match="shard"):
        models.partition(16)
