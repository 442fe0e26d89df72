"""The claim sender: accepted claims go to Kafka a few milliseconds' worth to a message, and every claim of a
message is written exactly as a single ``CouponClaimedV1`` would be."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from coupon import service as coupon_service
from coupon import store as coupon_store
from picool import events
from picool.kafka import Message
from picool.kernel import Kernel
from tests.coupon.conftest import MakeTemplate
from tests.coupon.test_claims import assigned, pg_count

AT_MS = 1_700_000_000_123


def _records(kernel: Kernel, users: list[int], template_id: int) -> list[coupon_store.ClaimRecord]:
    out = []
    for i, user in enumerate(users):
        coupon_id, code = coupon_service.new_identifiers(kernel.ids, user)
        out.append(coupon_store.ClaimRecord(coupon_id, user, code, AT_MS + i, "claim", str(template_id)))
    return out


async def _template(make_template: MakeTemplate, accounts: Any, total: int = 50) -> int:
    merchant = await accounts.merchant()
    return int((await make_template(merchant, total_count=total, per_user_limit=5))["id"])


async def test_claims_accepted_together_travel_in_one_message_and_all_land(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    tid = await _template(make_template, accounts)
    runners = [int((await accounts.runner()).user_id) for _ in range(3)]
    records = _records(kernel, [runners[i % 3] for i in range(12)], tid)
    sender = coupon_service.ClaimSender(kernel, linger_s=0.2)
    for r in records:
        sender.add(tid, r)
    assert sender.buffered == 12  # nothing sent before the linger is over
    await asyncio.sleep(0.4)
    await sender.close()
    assert (sender.buffered, sender.messages) == (0, 1)
    for _ in range(150):
        if await pg_count(kernel, tid) == 12:
            break
        await asyncio.sleep(0.1)
    assert await pg_count(kernel, tid) == 12 and await assigned(kernel, tid) == 12


async def test_a_full_buffer_is_sent_at_once_and_close_sends_the_rest(
    client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    tid = await _template(make_template, accounts)
    user = int((await accounts.runner()).user_id)
    records = _records(kernel, [user] * 7, tid)
    sender = coupon_service.ClaimSender(kernel, linger_s=3600, max_claims=3)
    for r in records:
        sender.add(tid, r)
    assert (sender.buffered, sender.messages) == (1, 2)  # two full messages went at once; one claim waits
    await sender.close()  # a clean stop does not wait an hour for it
    assert (sender.buffered, sender.messages) == (0, 3)
    for _ in range(150):
        if await pg_count(kernel, tid) == 7:
            break
        await asyncio.sleep(0.1)
    assert await pg_count(kernel, tid) == 7


async def test_batch_message_round_trip_and_a_bad_claim_inside_spares_the_others(
    client: httpx.AsyncClient,
    accounts: Any,
    make_template: MakeTemplate,
    kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tid = await _template(make_template, accounts)
    user = int((await accounts.runner()).user_id)
    good = [coupon_service.claimed_event(tid, r) for r in _records(kernel, [user] * 3, tid)]
    bad = events.CouponClaimedV1(
        coupon_id="not-a-number", code="x", template_id=str(tid), user_id=str(user), source_kind="claim",
        source_ref=str(tid), claimed_at=datetime.now(UTC),
    )  # fmt: skip
    key, value = coupon_service.batch_message([good[0], bad, *good[1:]])
    env = events.decode_envelope(value)
    assert key == good[0].coupon_id and env.type == "CouponClaimsV1"
    assert env.id == f"claims-{good[0].coupon_id}-4"
    assert events.decode_payload(env).claims[2] == good[1]  # claimed_at survives exactly (milliseconds)
    with caplog.at_level(logging.ERROR, logger="coupon.claims"):
        written = await coupon_service.handle_claims(kernel, [Message("t", 0, 0, env)] * 2)  # redelivered too
    assert written == 3
    assert "malformed claim not-a-number in CouponClaimsV1" in caplog.text
    await asyncio.sleep(0.2)  # the tidy-up runs in the background
    assert await pg_count(kernel, tid) == 3 and await assigned(kernel, tid) == 3
