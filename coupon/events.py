"""Task rewards: every ``RunCompletedV1`` issues one coupon of the task's reward template to the runner.

Exactly once per run, two guards deep: the event id is recorded in ``consumed_events`` in the same
transaction as the coupon (a redelivered event, or a batch replayed after the consumer died, is
skipped), and the coupon row is unique on (runner, ``task``, run id) (the same run announced twice
under different event ids still earns one coupon). When the coupon cannot be issued (template
missing, not a task reward, sold out, per-user limit, window closed) a ``reward_failures`` row
records why; the run keeps its result either way.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from coupon import models
from coupon import service as coupon_service
from picool import events, outbox
from picool.ids import parse_id_str
from picool.kafka import Message, payloads
from picool.kernel import Kernel

log = logging.getLogger("coupon.events")

CONSUMER = "coupon.task-rewards"
MAX_REF = 64


async def _record_failure(
    session: AsyncSession, event_id: str, ev: events.RunCompletedV1, reason: str, detail: str = ""
) -> None:
    await session.execute(
        pg_insert(models.RewardFailure)
        .values(
            run_id=ev.run_id[:MAX_REF],
            template_id=ev.reward_template_id[:MAX_REF],
            runner_id=ev.runner_id[:MAX_REF],
            event_id=event_id[:MAX_REF],
            reason=reason,
            detail=detail[:500],
        )
        .on_conflict_do_nothing(index_elements=["run_id"])
    )
    log.warning("run %s earned no coupon: %s %s", ev.run_id, reason, detail)


async def reward_run(kernel: Kernel, event_id: str, ev: events.RunCompletedV1) -> int | None:
    """Apply one ``RunCompletedV1`` in its own transaction; returns the runner whose wallet changed."""
    now = datetime.now(UTC)
    runner_id = parse_id_str(ev.runner_id)
    template_id = parse_id_str(ev.reward_template_id)
    # The template (immutable but for its counters) is read before the transaction opens, so the
    # transaction never holds a pooled connection while the cache may need another one.
    template = None if template_id is None else await coupon_service.get_template(kernel, template_id)
    async with kernel.sessionmaker() as session, session.begin():
        if not await outbox.first_deliveries(session, CONSUMER, [event_id]):
            return None
        if runner_id is None or template_id is None or not 0 < len(ev.run_id) <= MAX_REF:
            await _record_failure(session, event_id, ev, "invalid_event", "runner, template or run id is malformed")
            return None
        if template is None:
            await _record_failure(session, event_id, ev, "template_not_found")
            return None
        if template.distribution != "task_reward":
            await _record_failure(session, event_id, ev, "not_task_reward", f"distribution is {template.distribution}")
            return None
        if template.merchant_id is not None and str(template.merchant_id) != ev.merchant_id:
            await _record_failure(
                session, event_id, ev, "wrong_merchant", f"template belongs to {template.merchant_id}"
            )
            return None
        result = await coupon_service.issue_coupon(
            session,
            kernel.ids,
            template,
            coupon_service.IssueRequest(user_id=runner_id, source_kind="task", source_ref=ev.run_id),
            actor=coupon_service.system_actor("task-reward"),
            now=now,
        )
        if result.outcome is coupon_service.IssueOutcome.ISSUED:
            return runner_id
        if result.outcome is not coupon_service.IssueOutcome.DUPLICATE:
            await _record_failure(session, event_id, ev, result.outcome.value)
        return None


async def handle_run_completed(kernel: Kernel, messages: list[Message]) -> None:
    """The consumer's batch handler: each event in its own transaction, wallets invalidated after each.

    A crash mid-batch leaves the handled events recorded; the replayed batch skips them.
    """
    for env, ev in payloads(messages, "RunCompletedV1", log):
        runner = await reward_run(kernel, env.id, ev)
        if runner is not None:
            await coupon_service.invalidate_wallets(kernel, [runner])
