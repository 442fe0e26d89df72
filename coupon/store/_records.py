"""What the claim scripts decide and what a pool holds: claim outcomes and records, pool and session specs."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ClaimOutcome(enum.StrEnum):
    """What the claim script decided."""

    OK = "ok"
    REPLAY = "replay"  # the same Idempotency-Key claimed before: the first claim is returned
    NOT_OPEN = "not_open"
    LIMIT_REACHED = "limit_reached"
    SOLD_OUT = "sold_out"
    NO_POOL = "no_pool"  # the pool (or the session) is not in Redis


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """An accepted claim as the ledger keeps it (the template is the pool's)."""

    coupon_id: int
    user_id: int
    code: str
    claimed_ms: int
    source_kind: str
    source_ref: str

    def encode(self) -> str:
        """The ledger's text form ``user|code|ms|kind|ref`` (none of them can hold a ``|``)."""
        return f"{self.user_id}|{self.code}|{self.claimed_ms}|{self.source_kind}|{self.source_ref}"

    @classmethod
    def decode(cls, coupon_id: int, raw: bytes | str) -> ClaimRecord:
        """Parse a ledger entry; ``ValueError`` when it is not one."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        user, code, ms, kind, ref = text.split("|")
        return cls(coupon_id, int(user), code, int(ms), kind, ref)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The script's decision: the claim taken (or replayed) and the pool's stock left after it."""

    outcome: ClaimOutcome
    record: ClaimRecord | None = None
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """A flash session's window and stock as its pool holds them."""

    session_id: int
    start_ms: int
    end_ms: int
    stock: int
    initial: int


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A template pool's meta: per-user limit, template claim window, own stock and the template total."""

    limit: int
    start_ms: int
    end_ms: int
    stock: int
    total: int
