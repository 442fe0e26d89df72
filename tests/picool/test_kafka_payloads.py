"""``picool.kafka.payloads``: a consumer's typed events, with poison messages logged and skipped."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec
import pytest

from picool.events import Envelope, KernelTestV1, decode_envelope, encode_envelope
from picool.kafka import Message, payloads

AT = datetime(2026, 11, 22, tzinfo=UTC)


def _message(offset: int, env: Envelope) -> Message:
    return Message("t", 0, offset, env)


def test_payloads_yields_the_type_asked_and_skips_poison(caplog: pytest.LogCaptureFixture) -> None:
    good = decode_envelope(encode_envelope("e1", KernelTestV1(n=1), "k", AT))
    other = Envelope(id="e2", type="CouponChangedV1", occurred_at=AT, key="k", payload=msgspec.Raw(b"{}"))
    poison = Envelope(id="e3", type="KernelTestV1", occurred_at=AT, key="k", payload=msgspec.Raw(b'{"n": "x"}'))
    later = decode_envelope(encode_envelope("e4", KernelTestV1(n=4, note="after"), "k", AT))
    logger = logging.getLogger("test.payloads")
    with caplog.at_level(logging.ERROR, logger="test.payloads"):
        messages = [_message(i, e) for i, e in enumerate([good, other, poison, later])]
        got = list(payloads(messages, "KernelTestV1", logger))
    assert [(env.id, ev) for env, ev in got] == [("e1", KernelTestV1(n=1)), ("e4", KernelTestV1(n=4, note="after"))]
    assert "undecodable KernelTestV1 e3 at t:0@2; skipped" in caplog.text
