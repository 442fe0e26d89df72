"""The issuing service: exact counters, per-user limits, one coupon per run, pre-made ids and codes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from coupon import codes as coupon_codes
from coupon import service as coupon_service
from picool.kernel import Kernel

pytestmark = pytest.mark.usefixtures("client")

OPERATOR = coupon_service.Actor(user_id=1, role="operator")
Outcome = coupon_service.IssueOutcome


async def _template(kernel: Kernel, **kw: Any) -> coupon_service.TemplateRecord:
    fields: dict[str, Any] = {
        "name": "t",
        "description": "",
        "rule": {"type": "direct", "amount_cents": 100},
        "validity": {"kind": "relative", "days": 7},
        "total_count": 10,
        "per_user_limit": 1,
        "distribution": "task_reward",
    }
    fields.update(kw)
    return await coupon_service.create_template(kernel, OPERATOR, coupon_service.NewTemplate(**fields))


async def _issue(
    kernel: Kernel, template: coupon_service.TemplateRecord, req: coupon_service.IssueRequest
) -> coupon_service.IssueResult:
    async with kernel.sessionmaker() as session, session.begin():
        return await coupon_service.issue_coupon(
            session, kernel.ids, template, req, actor=coupon_service.system_actor("test"), now=datetime.now(UTC)
        )


async def _counters(kernel: Kernel, template_id: int) -> tuple[int, int]:
    async with kernel.engine.connect() as conn:
        assigned = (
            await conn.execute(text("SELECT assigned FROM coupon_templates WHERE id = :id"), {"id": template_id})
        ).scalar_one()
        rows = (
            await conn.execute(text("SELECT count(*) FROM user_coupons WHERE template_id = :id"), {"id": template_id})
        ).scalar_one()
    return int(assigned), int(rows)


async def test_never_issues_beyond_total_count_under_contention(kernel: Kernel) -> None:
    template = await _template(kernel, total_count=3)
    results = await asyncio.gather(
        *(
            _issue(kernel, template, coupon_service.IssueRequest(user_id=100 + i, source_kind="claim", source_ref="x"))
            for i in range(12)
        )
    )
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.ISSUED) == 3
    assert outcomes.count(Outcome.SOLD_OUT) == 9
    assert await _counters(kernel, template.id) == (3, 3)


async def test_per_user_limit_holds_under_contention(kernel: Kernel) -> None:
    template = await _template(kernel, per_user_limit=2)
    results = await asyncio.gather(
        *(
            _issue(kernel, template, coupon_service.IssueRequest(user_id=77, source_kind="claim", source_ref=str(i)))
            for i in range(6)
        )
    )
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.ISSUED) == 2
    assert outcomes.count(Outcome.LIMIT_REACHED) == 4
    assert await _counters(kernel, template.id) == (2, 2)
    unlimited = coupon_service.IssueRequest(user_id=77, source_kind="claim", source_ref="z", enforce_user_limit=False)
    assert (await _issue(kernel, template, unlimited)).outcome is Outcome.ISSUED


async def test_one_coupon_per_run_even_when_issued_concurrently(kernel: Kernel) -> None:
    template = await _template(kernel, per_user_limit=5)
    req = coupon_service.IssueRequest(user_id=5, source_kind="task", source_ref="run-1")
    results = await asyncio.gather(*(_issue(kernel, template, req) for _ in range(5)))
    outcomes = sorted(r.outcome for r in results)
    assert outcomes.count(Outcome.ISSUED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 4
    issued = next(r.coupon for r in results if r.outcome is Outcome.ISSUED)
    assert all(r.coupon == issued for r in results if r.coupon is not None)
    assert await _counters(kernel, template.id) == (1, 1)
    again = await _issue(kernel, template, req)
    assert again.outcome is Outcome.DUPLICATE and again.coupon == issued


async def test_premade_id_and_code_are_idempotent(kernel: Kernel) -> None:
    template = await _template(kernel, per_user_limit=5, distribution="claim")
    coupon_id, code = coupon_service.new_identifiers(kernel.ids, 21)
    req = coupon_service.IssueRequest(user_id=21, source_kind="flash", source_ref="s1", coupon_id=coupon_id, code=code)
    first = await _issue(kernel, template, req)
    assert first.outcome is Outcome.ISSUED
    assert first.coupon is not None and (first.coupon.id, first.coupon.code) == (coupon_id, code)
    assert (await _issue(kernel, template, req)).outcome is Outcome.DUPLICATE
    # Another coupon id with a code someone already holds: refused, nothing counted, no error.
    other_id, _ = coupon_service.new_identifiers(kernel.ids, 21)
    clash = coupon_service.IssueRequest(user_id=21, source_kind="flash", source_ref="s1", coupon_id=other_id, code=code)
    assert (await _issue(kernel, template, clash)).outcome is Outcome.DUPLICATE
    assert await _counters(kernel, template.id) == (1, 1)


async def test_identifiers_must_carry_the_users_shard(kernel: Kernel) -> None:
    template = await _template(kernel)
    wrong_code = coupon_codes.new_code(3)
    with pytest.raises(ValueError, match="shard"):
        await _issue(
            kernel,
            template,
            coupon_service.IssueRequest(user_id=4, source_kind="claim", source_ref="a", code=wrong_code),
        )
    with pytest.raises(ValueError, match="source kind"):
        await _issue(kernel, template, coupon_service.IssueRequest(user_id=4, source_kind="gift", source_ref="a"))


async def test_validity_window_of_issued_coupons(kernel: Kernel) -> None:
    relative = await _template(kernel, validity={"kind": "relative", "days": 7})
    before = datetime.now(UTC)
    result = await _issue(kernel, relative, coupon_service.IssueRequest(user_id=8, source_kind="claim", source_ref="a"))
    assert result.coupon is not None
    c = result.coupon
    assert c.valid_from == c.received_at and before <= c.received_at
    assert c.valid_to - c.valid_from == timedelta(days=7)
    assert c.status == "unused" and c.merchant_id is None

    fixed = await _template(
        kernel, validity={"kind": "fixed", "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-02-01T00:00:00Z"}
    )
    c2 = (
        await _issue(kernel, fixed, coupon_service.IssueRequest(user_id=8, source_kind="claim", source_ref="b"))
    ).coupon
    assert c2 is not None
    assert (c2.valid_from, c2.valid_to) == (datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC))


async def test_closed_window_issues_nothing(kernel: Kernel) -> None:
    ended = await _template(
        kernel, validity={"kind": "fixed", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2020-02-01T00:00:00Z"}
    )
    result = await _issue(kernel, ended, coupon_service.IssueRequest(user_id=9, source_kind="task", source_ref="r"))
    assert result.outcome is Outcome.VALIDITY_ENDED
    assert await _counters(kernel, ended.id) == (0, 0)


async def test_issuing_is_audited(kernel: Kernel) -> None:
    template = await _template(kernel)
    result = await _issue(
        kernel, template, coupon_service.IssueRequest(user_id=10, source_kind="task", source_ref="run-9")
    )
    assert result.coupon is not None
    async with kernel.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT actor, from_status, to_status, reason FROM coupon_audit WHERE coupon_id = :id"),
                {"id": result.coupon.id},
            )
        ).all()
    assert [tuple(r) for r in rows] == [("system:test", None, "unused", "issued (task run-9)")]
