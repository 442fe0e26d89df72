"""Task rewards: RunCompletedV1 → exactly one coupon per run, failures recorded, never oversold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text

from coupon import events as coupon_events
from picool import events, outbox
from picool.kafka import Message
from picool.kernel import Kernel
from picool.testing import wait_for
from tests.coupon.conftest import MakeTemplate

WALLET = "/api/v1/coupon/me/coupons"


def _run_completed(runner: Any, merchant: Any, template_id: str, run_id: str | None = None) -> events.RunCompletedV1:
    return events.RunCompletedV1(
        run_id=run_id or f"run-{uuid.uuid4().hex[:12]}",
        task_id="1",
        runner_id=runner.user_id,
        merchant_id=merchant.merchant_id or "",
        reward_template_id=template_id,
        completed_at=datetime.now(UTC),
        distance_m=3000.0,
        duration_s=900.0,
    )


async def _publish(kernel: Kernel, ev: events.RunCompletedV1, event_id: str) -> None:
    """Publish through the outbox exactly as the run subsystem does."""
    async with kernel.sessionmaker() as session, session.begin():
        outbox.add_event(session, kernel.settings, events.TOPIC_RUN_COMPLETED, ev, key=ev.runner_id, event_id=event_id)
    kernel.relay.wake()


async def _coupons_of(kernel: Kernel, user_id: str) -> list[Any]:
    async with kernel.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT source_kind, source_ref, template_id FROM user_coupons WHERE user_id = :u"),
            {"u": int(user_id)},
        )
        return [tuple(r) for r in rows]


async def _failures(kernel: Kernel) -> list[tuple[str, str]]:
    async with kernel.engine.connect() as conn:
        rows = await conn.execute(text("SELECT run_id, reason FROM reward_failures ORDER BY run_id"))
        return [(r[0], r[1]) for r in rows]


async def _assigned(kernel: Kernel, template_id: str) -> int:
    async with kernel.engine.connect() as conn:
        value = await conn.execute(
            text("SELECT assigned FROM coupon_templates WHERE id = :id"), {"id": int(template_id)}
        )
        return int(value.scalar_one())


async def test_same_event_delivered_twice_earns_one_coupon(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, distribution="task_reward")
    # The wallet is read (and cached, empty) before the reward lands: the reward must invalidate it.
    assert (await client.get(WALLET, headers=runner.headers)).json()["items"] == []
    ev = _run_completed(runner, merchant, template["id"])
    event_id = uuid.uuid4().hex
    await _publish(kernel, ev, event_id)
    await _publish(kernel, ev, event_id)

    async def wallet() -> list[Any]:
        items: list[Any] = (await client.get(WALLET, headers=runner.headers)).json()["items"]
        return items

    items = await wait_for(wallet, timeout_s=15)
    await kernel.quiesce()
    assert await _coupons_of(kernel, runner.user_id) == [("task", ev.run_id, int(template["id"]))]
    assert len(await wallet()) == 1
    assert items[0]["source"] == {"kind": "task", "ref": ev.run_id}
    assert items[0]["template_id"] == template["id"] and items[0]["merchant_id"] == merchant.merchant_id
    assert await _assigned(kernel, template["id"]) == 1


async def test_same_run_under_two_event_ids_earns_one_coupon(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate
) -> None:
    merchant, runner = await accounts.merchant(), await accounts.runner()
    template = await make_template(merchant, distribution="task_reward", per_user_limit=5)
    ev = _run_completed(runner, merchant, template["id"])
    await _publish(kernel, ev, uuid.uuid4().hex)
    await _publish(kernel, ev, uuid.uuid4().hex)
    await wait_for(lambda: _coupons_of(kernel, runner.user_id), timeout_s=15)
    await kernel.quiesce()
    assert len(await _coupons_of(kernel, runner.user_id)) == 1
    assert await _assigned(kernel, template["id"]) == 1
    assert await _failures(kernel) == []


async def test_exhausted_template_records_why_and_never_oversells(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate
) -> None:
    merchant = await accounts.merchant()
    runners = [await accounts.runner() for _ in range(3)]
    template = await make_template(merchant, distribution="task_reward", total_count=1)
    runs = [_run_completed(r, merchant, template["id"]) for r in runners]
    for ev in runs:
        await _publish(kernel, ev, uuid.uuid4().hex)

    async def settled() -> bool:
        return len(await _failures(kernel)) == 2

    await wait_for(settled, timeout_s=15)
    await kernel.quiesce()
    issued = [r for r in runners if await _coupons_of(kernel, r.user_id)]
    assert len(issued) == 1
    assert await _assigned(kernel, template["id"]) == 1
    failed = dict(await _failures(kernel))
    assert set(failed.values()) == {"sold_out"}
    assert len(failed) == 2 and set(failed) <= {ev.run_id for ev in runs}
    stats = await client.get(f"/api/v1/coupon/templates/{template['id']}/stats", headers=merchant.headers)
    assert stats.json() == {"template_id": template["id"], "total": 1, "assigned": 1, "used": 0, "remaining": 0}


async def test_unusable_templates_are_recorded(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate
) -> None:
    merchant, other, runner = await accounts.merchant(), await accounts.merchant(), await accounts.runner()
    claim_only = await make_template(merchant, distribution="claim")
    foreign = await make_template(other, distribution="task_reward")
    cases = {
        "run-claim": _run_completed(runner, merchant, claim_only["id"], "run-claim"),
        "run-missing": _run_completed(runner, merchant, "999999999", "run-missing"),
        "run-foreign": _run_completed(runner, merchant, foreign["id"], "run-foreign"),
        "run-garbage": events.RunCompletedV1(
            run_id="run-garbage",
            task_id="1",
            runner_id="not-a-user",
            merchant_id="1",
            reward_template_id=claim_only["id"],
            completed_at=datetime.now(UTC),
            distance_m=1.0,
            duration_s=1.0,
        ),
    }
    for ev in cases.values():
        await _publish(kernel, ev, uuid.uuid4().hex)

    async def all_recorded() -> bool:
        return len(await _failures(kernel)) == 4

    await wait_for(all_recorded, timeout_s=15)
    assert dict(await _failures(kernel)) == {
        "run-claim": "not_task_reward",
        "run-missing": "template_not_found",
        "run-foreign": "wrong_merchant",
        "run-garbage": "invalid_event",
    }
    assert await _coupons_of(kernel, runner.user_id) == []


async def test_a_replayed_batch_after_a_crash_changes_nothing(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, make_template: MakeTemplate
) -> None:
    """The consumer committed its effects but died before committing offsets: the broker hands the whole
    batch over again, and the handler must leave everything as it was."""
    merchant = await accounts.merchant()
    runners = [await accounts.runner() for _ in range(3)]
    template = await make_template(merchant, distribution="task_reward", total_count=2)
    batch = [
        Message(
            "t",
            0,
            i,
            events.decode_envelope(
                events.encode_envelope(
                    uuid.uuid4().hex, _run_completed(r, merchant, template["id"]), r.user_id, datetime.now(UTC)
                )
            ),
        )
        for i, r in enumerate(runners)
    ]
    await coupon_events.handle_run_completed(kernel, batch[:2])  # died after the first two
    await coupon_events.handle_run_completed(kernel, batch)  # the whole batch again
    await coupon_events.handle_run_completed(kernel, batch)
    counts = [len(await _coupons_of(kernel, r.user_id)) for r in runners]
    assert counts == [1, 1, 0]
    assert await _assigned(kernel, template["id"]) == 2
    assert [reason for _, reason in await _failures(kernel)] == ["sold_out"]


async def test_other_event_types_and_garbage_are_skipped(kernel: Kernel, client: httpx.AsyncClient) -> None:
    env = events.decode_envelope(events.encode_envelope("e1", events.KernelTestV1(n=1), "k", datetime.now(UTC)))
    bad = events.Envelope(id="e2", type="RunCompletedV1", occurred_at=datetime.now(UTC), key="k", payload=env.payload)
    await coupon_events.handle_run_completed(kernel, [Message("t", 0, 0, env), Message("t", 0, 1, bad)])
    assert await _failures(kernel) == []
