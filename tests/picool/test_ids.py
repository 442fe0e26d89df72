"""Ids: unique and ordered under concurrency, from several processes."""

from __future__ import annotations

import multiprocessing as mp
import threading

from hypothesis import given
from hypothesis import strategies as st

from picool.ids import MAX_SHARD, IdGenerator, parse_id, parse_id_str, shard_of


def _make(node: int, count: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    gen = IdGenerator(node)
    queue.put([gen.next_id(shard=i % 16) for i in range(count)])


def test_unique_and_ordered_across_processes() -> None:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_make, args=(node, 20_000, queue)) for node in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    all_ids = [i for r in results for i in r]
    assert len(all_ids) == len(set(all_ids)) == 80_000
    for r in results:
        assert r == sorted(r)  # strictly increasing within a process
        assert len(set(r)) == len(r)
    # k-sorted across processes: sorting by id sorts by the millisecond they were made in
    by_id = sorted(all_ids)
    ms = [parse_id(i).ms for i in by_id]
    assert ms == sorted(ms)
    assert all(0 < i < 2**63 for i in all_ids)


def test_unique_across_threads() -> None:
    gen = IdGenerator(7)
    out: list[list[int]] = [[] for _ in range(8)]

    def work(k: int) -> None:
        out[k] = [gen.next_id(3) for _ in range(5000)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for part in out for i in part]
    assert len(set(flat)) == len(flat)


@given(st.integers(min_value=0, max_value=MAX_SHARD), st.integers(min_value=0, max_value=255))
def test_id_carries_shard_and_node(shard: int, node: int) -> None:
    value = IdGenerator(node).next_id(shard)
    parts = parse_id(value)
    assert parts.shard == shard == shard_of(value)
    assert parts.node == node
    assert parse_id_str(str(value)) == value


def test_parse_id_str_rejects_garbage() -> None:
    for bad in ["", "abc", "-1", "0", "1" * 25, "9" * 19, "１２３"]:
        assert parse_id_str(bad) is None
