"""The load generator: closed-loop HTTP/1.1 keep-alive clients in several processes, per-request timings.

Each worker process runs a uvloop event loop with its share of the connections; every connection sends
one request, waits for the whole response, records (start, latency, status) and sends the next, driven
by callbacks rather than a coroutine per request (the generator shares the machine it measures). Requests
are prebuilt bytes (no formatting on the hot path); a run cycles through them (or stops when they are
used up, for scenarios whose requests must each be sent once). Timings count only requests that started
inside the measured window (after the warm-up); the run is bounded in time, and every worker stops by
itself.

:func:`generator_ceiling` measures what the generator itself can do against a canned in-process server,
so a result near that figure says the generator, not the app, was the limit.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with litestar[standard]
    uvloop = None  # type: ignore[assignment]

_CTX = mp.get_context("fork")
_CONNECT_TIMEOUT_S = 5.0
_DRAIN_S = 5.0


def get(path: str, headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> bytes:
    """A prebuilt keep-alive GET request."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(
    path: str, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"
) -> bytes:
    """A prebuilt keep-alive POST request with ``body``."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """What one run measured (latencies in seconds, of requests started in the measured window)."""

    label: str
    concurrency: int
    processes: int
    duration_s: float
    latencies: array.array  # type: ignore[type-arg]
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[int, bytes] = field(default_factory=dict)
    exhausted: bool = False
    sent: list[int] = field(default_factory=list)  # per worker process: how many of its requests it sent

    @property
    def count(self) -> int:
        """Requests completed that started in the measured window."""
        return len(self.latencies)

    @property
    def rps(self) -> float:
        """Completed requests per second over the measured window."""
        return self.count / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile latency in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = min(len(data) - 1, max(0, round(p / 100 * len(data) + 0.5) - 1))
        return data[k] * 1000

    def ok_ratio(self) -> float:
        """Share of measured responses with a 2xx status."""
        total = sum(self.statuses.values())
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return ok / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON form of the run (no per-request data)."""
        lat = sorted(self.latencies)
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "duration_s": round(self.duration_s, 3),
            "requests": self.count,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p90_ms": round(self.percentile(90), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(lat[-1] * 1000, 3) if lat else None,
            "mean_ms": round(sum(lat) / len(lat) * 1000, 3) if lat else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "exhausted": self.exhausted,
        }

    def line(self) -> str:
        """One printable line."""
        s = self.summary()
        st = " ".join(f"{k}:{v}" for k, v in s["statuses"].items())
        err = f" errors={s['errors']}" if s["errors"] else ""
        return (
            f"{self.label:<34} c={self.concurrency:<4} {s['rps']:>9.1f} req/s  p50={s['p50_ms']:>8.2f} ms  "
            f"p99={s['p99_ms']:>8.2f} ms  n={s['requests']} [{st}]{err}"
            + (" (requests used up)" if self.exhausted else "")
        )


def merged(label: str, parts: Sequence[LoadResult]) -> LoadResult:
    """Several runs of one stream as one result: their measured windows put end to end (as when the runs
    alternate with runs of another stream, so a machine whose speed drifts weighs on both alike)."""
    if not parts:
        raise ValueError("nothing to merge")
    out = LoadResult(label, parts[0].concurrency, max(p.processes for p in parts), 0.0, array.array("d"))
    for part in parts:
        out.duration_s += part.duration_s
        out.latencies.extend(part.latencies)
        out.statuses.update(part.statuses)
        out.errors.update(part.errors)
        for status, body in part.samples.items():
            out.samples.setdefault(status, body)
        out.exhausted = out.exhausted or part.exhausted
        out.sent += part.sent
    return out


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.head_end = -1
        self.need = -1
        self.chunked = False
        self.status = 0
        self.closed = False
        self.callback: Callable[[int, bytes, Exception | None], None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback(0, b"", ConnectionError("connection closed"))

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.head_end = -1
        self.need = -1
        self.chunked = False
        self.transport.write(data)
        return self.waiter

    def send_then(self, data: bytes, callback: Callable[[int, bytes, Exception | None], None]) -> None:
        """:meth:`send` without a future: ``callback(status, body, None)`` on the answer, or
        ``callback(0, b"", error)`` if the connection goes first (the paced clients' cheap path)."""
        assert self.transport is not None
        self.waiter = None
        self.callback = callback
        self.head_end = -1
        self.need = -1
        self.chunked = False
        self.transport.write(data)

    def abandon(self) -> None:
        """Drop the request in flight (its answer is not wanted) and close the connection."""
        self.callback = None
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.head_end < 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head_end = i + 4
            head = bytes(self.buf[:i]).lower()
            self.status = int(head[9:12])
            j = head.find(b"\r\ncontent-length:")
            if j >= 0:
                k = head.find(b"\r\n", j + 2)
                n = int(head[j + 17 : k if k >= 0 else len(head)].strip())
                self.need = self.head_end + n
            elif b"transfer-encoding: chunked" in head:
                self.chunked = True
            else:
                self.need = self.head_end
        if self.chunked:
            end = self.buf.find(b"0\r\n\r\n", self.head_end)
            if end < 0:
                return
            self.need = end + 5
        if len(self.buf) < self.need:
            return
        body = bytes(self.buf[self.head_end : self.need])
        del self.buf[: self.need]
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback(self.status, body, None)
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, body))


class Chain(Protocol):
    """A client whose next request depends on the last answer (e.g. a rotating refresh token)."""

    def first(self) -> bytes: ...

    def next(self, status: int, body: bytes) -> bytes | None: ...


@dataclass
class Stream:
    """One kind of load in a run: its requests (or per-client chains) and how many connections send them."""

    label: str
    requests: Sequence[bytes] = ()
    concurrency: int = 64
    processes: int | None = None
    cycle: bool = True
    chain: Callable[[int], Chain] | None = None  # client index -> its chain (then ``requests`` is unused)
    # Paced (open-loop) load: this many requests a second in all, each connection sending on a fixed schedule;
    # latency counts from the scheduled start, so a late answer delays (and is charged to) the next ones.
    rate: float | None = None


@dataclass
class _Plan:
    host: str
    port: int
    requests: Sequence[bytes]
    connections: int
    first_client: int
    start_at: float
    warmup_s: float
    duration_s: float
    cycle: bool
    timeout_s: float
    chain: Callable[[int], Chain] | None
    interval_s: float | None = None  # paced: the time between one connection's scheduled sends


async def _worker_main(plan: _Plan) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    lat = array.array("d")
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    samples: dict[int, bytes] = {}
    measure_from = plan.start_at + plan.warmup_s
    stop_at = measure_from + plan.duration_s
    n_req = len(plan.requests)
    state: dict[str, Any] = {"next": 0, "exhausted": False, "last": 0.0}

    async def connect() -> _Conn:
        _t, proto = await asyncio.wait_for(
            loop.create_connection(_Conn, plan.host, plan.port), timeout=_CONNECT_TIMEOUT_S
        )
        return proto

    conns: list[_Conn] = []
    for _ in range(plan.connections):
        try:
            conns.append(await connect())
        except (OSError, TimeoutError) as exc:
            errors[f"connect:{type(exc).__name__}"] += 1
    await asyncio.sleep(max(0.0, plan.start_at - time.monotonic()))

    def next_shared() -> bytes | None:
        i = state["next"]
        if i >= n_req:
            if not plan.cycle:
                state["exhausted"] = True
                return None
            i = 0
        state["next"] = i + 1
        return plan.requests[i]

    def first_due(index: int) -> float:
        # a paced connection's first send: the connections' schedules spread evenly over one interval
        interval = plan.interval_s
        return plan.start_at + (interval * ((index * 0.618034) % 1.0) if interval else 0.0)

    async def chained(conn: _Conn, index: int) -> None:
        """One connection of a chain stream: each request is the chain's answer to the last response."""
        assert plan.chain is not None
        chain = plan.chain(index)
        req: bytes | None = chain.first()
        interval = plan.interval_s
        due = first_due(index)
        while req is not None:
            if interval is not None:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            if time.monotonic() >= stop_at:
                return
            if conn.closed:
                try:
                    conn = await connect()
                except (OSError, TimeoutError) as exc:
                    errors[f"connect:{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            t0 = time.monotonic()
            if interval is not None:
                t0 = min(t0, due)  # charge the time it waited behind a late answer
                due += interval
            try:
                status, body = await asyncio.wait_for(conn.send(req), timeout=plan.timeout_s)
            except (ConnectionError, TimeoutError, OSError) as exc:
                if t0 >= measure_from:
                    errors[type(exc).__name__] += 1
                if conn.transport is not None:
                    conn.transport.close()
                conn.closed = True
                return  # a chain's state is unknown after a lost answer
            record(t0, time.monotonic(), status, body)
            req = chain.next(status, body)

    def record(t0: float, t1: float, status: int, body: bytes) -> None:
        if t0 >= measure_from and t0 < stop_at:
            lat.append(t1 - t0)
            state["last"] = max(state["last"], t1)
            statuses[status] += 1
            if status not in samples:
                samples[status] = body[:65536]

    # Plain streams: each connection is driven by callbacks, with no task, future or timeout timer per
    # request, only the pacing timer (chains, rarer and stateful, keep a coroutine each). A coroutine per
    # request cost the generator about 0.25 ms of CPU per paced request, a fifth of a core at 900 requests
    # a second, on the machine it measures.
    finished = loop.create_future()
    left = [len(conns)]
    reopening: set[asyncio.Task[None]] = set()

    def on_finish() -> None:
        left[0] -= 1
        if left[0] == 0 and not finished.done():
            finished.set_result(None)

    def driven(conn: _Conn, index: int) -> Callable[[float], None]:
        """Start one connection's client; returns its timeout check (called with the time now)."""
        interval = plan.interval_s
        st: dict[str, Any] = {"conn": conn, "req": next_shared(), "due": first_due(index), "t0": 0.0, "sent": 0.0}
        st.update(busy=False, done=False)

        def finish() -> None:
            if not st["done"]:
                st["done"] = True
                on_finish()

        def fire() -> None:
            if st["req"] is None or st["done"]:
                finish()
                return
            now = time.monotonic()
            if interval is not None and st["due"] > now + 0.002:  # a timer may fire a little early (ms clock)
                loop.call_later(st["due"] - now, fire)
                return
            if now >= stop_at:
                finish()
                return
            if st["conn"].closed:
                task = loop.create_task(reopen())
                reopening.add(task)
                task.add_done_callback(reopening.discard)
                return
            t0 = now
            if interval is not None:
                t0 = min(t0, st["due"])  # charge the time it waited behind a late answer
                st["due"] += interval
            st.update(t0=t0, sent=now, busy=True)
            st["conn"].send_then(st["req"], answered)

        def answered(status: int, body: bytes, exc: Exception | None) -> None:
            st["busy"] = False
            t1 = time.monotonic()
            if exc is not None:
                if st["t0"] >= measure_from:
                    errors[type(exc).__name__] += 1
                st["conn"].abandon()
            else:
                record(st["t0"], t1, status, body)
            st["req"] = next_shared()
            if interval is not None and st["due"] > t1:
                if st["due"] >= stop_at:
                    finish()
                else:
                    loop.call_later(st["due"] - t1, fire)
            else:
                fire()

        async def reopen() -> None:
            while not st["done"] and time.monotonic() < stop_at:
                try:
                    st["conn"] = await connect()
                except (OSError, TimeoutError) as exc:
                    errors[f"connect:{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
                fire()
                return
            finish()

        def expire(now: float) -> None:
            if st["busy"] and now - st["sent"] > plan.timeout_s:
                st["conn"].abandon()
                answered(0, b"", TimeoutError())

        fire()
        return expire

    budget = plan.warmup_s + plan.duration_s + _DRAIN_S + 2
    if plan.chain is None:
        checks = [driven(c, plan.first_client + k) for k, c in enumerate(conns)]
        if not checks:
            finished.set_result(None)
        deadline = time.monotonic() + budget
        while not finished.done() and time.monotonic() < deadline:
            await asyncio.wait([finished], timeout=min(0.25, plan.timeout_s / 4))
            now = time.monotonic()
            for check in checks:
                check(now)
        for task in reopening:
            task.cancel()
    else:
        tasks = [asyncio.create_task(chained(c, plan.first_client + k)) for k, c in enumerate(conns)]
        _done, pending = await asyncio.wait(tasks, timeout=budget)
        for t in pending:
            t.cancel()
        for t in _done:
            if t.exception() is not None:
                errors[f"client:{t.exception()!r}"[:120]] += 1
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return {
        "lat": lat.tobytes(),
        "statuses": dict(statuses),
        "errors": dict(errors),
        "samples": samples,
        "exhausted": state["exhausted"],
        "last": state["last"],
        "sent": state["next"],
    }


def _worker(plan: _Plan, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if uvloop is not None:
        uvloop.install()
    try:
        out = asyncio.run(_worker_main(plan))
    except BaseException as exc:
        out = {"fatal": repr(exc)}
    conn.send(out)
    conn.close()


def run_many(
    port: int,
    streams: Sequence[Stream],
    *,
    duration_s: float,
    warmup_s: float = 2.0,
    timeout_s: float = 10.0,
    host: str = "127.0.0.1",
) -> list[LoadResult]:
    """Run several streams at once against one port (same start, same window); one result per stream.

    Each stream's ``concurrency`` keep-alive connections are spread over its worker processes; each process
    gets an interleaved share of the stream's requests (or builds one chain per connection)."""
    total_c = sum(s.concurrency for s in streams)
    start_at = time.monotonic() + 0.5 + 0.02 * total_c
    workers: list[tuple[int, Any, Any]] = []
    results: list[LoadResult] = []
    last = [0.0] * len(streams)
    try:
        for si, st in enumerate(streams):
            if not st.requests and st.chain is None:
                raise ValueError(f"{st.label}: no requests to send")
            procs_n = max(1, min(st.processes or default_processes(st.concurrency, st.rate), st.concurrency))
            results.append(LoadResult(st.label, st.concurrency, procs_n, duration_s, array.array("d")))
            first = 0
            for w in range(procs_n):
                share = st.concurrency // procs_n + (1 if w < st.concurrency % procs_n else 0)
                part = st.requests[w::procs_n] if len(st.requests) >= procs_n else st.requests
                plan = _Plan(host, port, part, share, first, start_at, warmup_s, duration_s, st.cycle, timeout_s,
                             st.chain, st.concurrency / st.rate if st.rate else None)  # fmt: skip
                first += share
                parent_end, child_end = _CTX.Pipe(duplex=False)
                p = _CTX.Process(target=_worker, args=(plan, child_end), daemon=True)
                p.start()
                child_end.close()
                workers.append((si, p, parent_end))
        deadline = start_at + warmup_s + duration_s + _DRAIN_S + 15
        for si, _p, pipe in workers:
            result = results[si]
            remaining = max(0.1, deadline - time.monotonic())
            if not pipe.poll(remaining):
                result.errors["worker_timeout"] += 1
                continue
            out = pipe.recv()
            if "fatal" in out:
                raise RuntimeError(f"load worker failed: {out['fatal']}")
            result.latencies.frombytes(out["lat"])
            result.statuses.update({int(k): v for k, v in out["statuses"].items()})
            result.errors.update(out["errors"])
            for k, v in out["samples"].items():
                result.samples.setdefault(int(k), v)
            result.exhausted = result.exhausted or out["exhausted"]
            last[si] = max(last[si], out["last"])
            result.sent.append(out["sent"])
        for si, result in enumerate(results):
            if result.exhausted and last[si]:
                # Requests ran out before the window closed: the window is as long as the work lasted.
                result.duration_s = max(0.001, min(duration_s, last[si] - (start_at + warmup_s)))
        return results
    finally:
        for _si, p, pipe in workers:
            pipe.close()
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def run(
    label: str,
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 2.0,
    processes: int | None = None,
    cycle: bool = True,
    timeout_s: float = 10.0,
    host: str = "127.0.0.1",
    rate: float | None = None,
) -> LoadResult:
    """One stream of ``requests`` over ``concurrency`` connections (see :func:`run_many`); paced at ``rate``
    requests a second in all when given, else each connection sends as soon as it has its answer."""
    stream = Stream(label, requests, concurrency, processes, cycle, rate=rate)
    return run_many(port, [stream], duration_s=duration_s, warmup_s=warmup_s, timeout_s=timeout_s, host=host)[0]


PACED_PER_PROCESS = 5000  # paced requests a second one generator process sends (it can do ~20,000)


def default_processes(concurrency: int, rate: float | None = None) -> int:
    """Worker processes for a run: two on a machine with few cores (enough to out-run one app worker); a
    paced stream as few as its rate needs (one up to ``PACED_PER_PROCESS`` a second). Each process wakes
    for its own connections, so two half-busy processes cost the machine more CPU than one: 170 against
    125 us per request at 900 paced requests a second here."""
    cores = os.cpu_count() or 2
    most = max(1, min(concurrency, 2 if cores <= 4 else 4))
    if rate is not None:
        return max(1, min(most, math.ceil(rate / PACED_PER_PROCESS)))
    return most


# -- the generator's own ceiling ---------------------------------------------------------------------------

_CANNED = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n" + b'{"pong":true}'


class _CannedServer(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(_CANNED * n)


def _serve_canned(port: int, ready: Any, stop_after_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if uvloop is not None:
        uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_CannedServer, "127.0.0.1", port, backlog=1024)
        ready.set()
        await asyncio.sleep(stop_after_s)
        server.close()

    asyncio.run(main())


def generator_ceiling(concurrency: int = 64, duration_s: float = 3.0, processes: int | None = None) -> LoadResult:
    """The generator's throughput against a trivial asyncio server answering a canned response."""
    from picool.stack import free_port

    port = free_port()
    ready = _CTX.Event()
    server = _CTX.Process(target=_serve_canned, args=(port, ready, duration_s + 30), daemon=True)
    server.start()
    try:
        if not ready.wait(10):
            raise RuntimeError("canned server did not start")
        return run(
            "generator ceiling (canned server)",
            port,
            [get("/api/v1/ping")],
            concurrency=concurrency,
            duration_s=duration_s,
            warmup_s=0.5,
            processes=processes,
        )
    finally:
        server.kill()
        server.join(timeout=5)
