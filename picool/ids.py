"""64-bit time-ordered ids that carry a shard number.

Layout of the (positive, signed 64-bit) id, most significant first::

    41 bits  milliseconds since 2025-01-01T00:00:00Z   (~69 years)
     8 bits  node (0..255; one per running process, leased from Redis)
     8 bits  sequence within the millisecond (256 ids/ms = 256k ids/s per process)
     6 bits  shard (0..63; user coupons use ``user_id % 16`` today)

The shard sits in the lowest bits so that ids from one process are strictly increasing whatever
shard they carry; ids from several processes are ordered by the millisecond they were made in
(k-sorted), and never collide while the node numbers differ.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
TS_BITS, NODE_BITS, SEQ_BITS, SHARD_BITS = 41, 8, 8, 6
MAX_SHARD = (1 << SHARD_BITS) - 1
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQ = (1 << SEQ_BITS) - 1
SHARD_SHIFT = 0
SEQ_SHIFT = SHARD_BITS
NODE_SHIFT = SHARD_BITS + SEQ_BITS
TS_SHIFT = SHARD_BITS + SEQ_BITS + NODE_BITS


@dataclass(frozen=True, slots=True)
class IdParts:
    """The fields of an id."""

    ms: int
    shard: int
    node: int
    seq: int


class IdGenerator:
    """Makes ids for one process (one ``node``). Thread-safe; never goes backwards with the clock."""

    def __init__(self, node: int) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node must be in 0..{MAX_NODE}")
        self.node = node
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = -1

    def _tick(self) -> tuple[int, int]:
        with self._lock:
            now = int(time.time() * 1000) - EPOCH_MS
            if now < self._last_ms:  # clock went back: keep using the last millisecond
                now = self._last_ms
            if now == self._last_ms:
                self._seq += 1
                if self._seq > MAX_SEQ:
                    # Sequence exhausted in this millisecond: move to the next one.
                    while now <= self._last_ms:
                        time.sleep(0.0002)
                        now = int(time.time() * 1000) - EPOCH_MS
                    self._last_ms, self._seq = now, 0
            else:
                self._last_ms, self._seq = now, 0
            return self._last_ms, self._seq

    def next_id(self, shard: int = 0) -> int:
        """A new id for ``shard``; strictly greater than every id this generator made before."""
        if not 0 <= shard <= MAX_SHARD:
            raise ValueError(f"shard must be in 0..{MAX_SHARD}")
        ms, seq = self._tick()
        return (ms << TS_SHIFT) | (self.node << NODE_SHIFT) | (seq << SEQ_SHIFT) | shard


def parse_id(value: int) -> IdParts:
    """Split an id into its fields."""
    return IdParts(
        ms=(value >> TS_SHIFT) + EPOCH_MS,
        shard=(value >> SHARD_SHIFT) & MAX_SHARD,
        node=(value >> NODE_SHIFT) & MAX_NODE,
        seq=(value >> SEQ_SHIFT) & MAX_SEQ,
    )


def shard_of(value: int) -> int:
    """The shard carried by an id."""
    return (value >> SHARD_SHIFT) & MAX_SHARD


def parse_id_str(text: str) -> int | None:
    """An id from its API string form, or None when it is not a positive 63-bit integer."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value < (1 << 63) else None


async def lease_node_id(redis: object, fixed: int = -1) -> int:
    """A node number for this process: ``fixed`` if set, else the next one from a Redis counter."""
    if fixed >= 0:
        return fixed & MAX_NODE
    from redis.asyncio import Redis

    assert isinstance(redis, Redis)
    n = int(await redis.incr("picool:ids:node"))
    return n & MAX_NODE
