"""The claim pipeline's two layouts, A/B: one process (``picool serve``, the claim consumer and the
reconciler inside it) against the split (``picool serve --no-consumers`` + ``picool work``), on the same
servers, session and runners, interleaved round by round so that this machine's drifting speed falls on
both alike.

Per round and layout: the ceiling (``GET /api/v1/ping`` with the runners' tokens) and the claims, both at
64 clients in a closed loop, and the app's CPU per claim (the worker's too, for the split). Each layout
has Kafka topics and consumer groups of its own (so a process only ever consumes its own layout's
claims); both claim from one flash session. Afterwards the invariants of ``bench/flash.py``: nothing
pending, Redis ledger = PostgreSQL rows = ``assigned``, no oversell, no duplicate.

    uv run python bench/flash_layouts.py [--rounds 3] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from flash import CLAIM_LIMITS, ProcessCpu, _measured, _seed, _settle_and_check
from harness import load
from harness.results import Results, http_row
from harness.runs import PING, all_ok
from harness.servers import App, Sampler, Worker, embedded_servers, install_signal_handlers

CONCURRENCY = 64
WARMUP_S = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 6))
    seconds = max(2.0, min(args.seconds, 20.0))
    install_signal_handlers()
    res = Results("ab-flash-layouts")
    res.extra["command"] = f"uv run python bench/flash_layouts.py --rounds {rounds} --seconds {seconds:g}"
    with (
        embedded_servers() as servers,
        App(servers, name="single", PICOOL_KAFKA_TOPIC_PREFIX="single.", **CLAIM_LIMITS) as single,
        App(
            servers, name="split", serve_args=("--no-consumers",), PICOOL_KAFKA_TOPIC_PREFIX="split.", **CLAIM_LIMITS
        ) as split,  # fmt: skip
        Worker(split) as worker,
    ):
        seeded = asyncio.run(_seed(servers, single))
        path = f"/api/v1/coupon/flash-sessions/{seeded.session_id}/claims"
        pings = [load.get(PING, {"Authorization": f"Bearer {t}"}) for t in seeded.tokens]
        claims = [load.post(path, b"", {"Authorization": f"Bearer {t}"}) for t in seeded.tokens]
        layouts = {"single": (single, None), "split": (split, worker)}
        for app, _w in layouts.values():
            load.run("warm-up", app.port, claims, concurrency=256, duration_s=3.0, warmup_s=0.5)
        ratios: dict[str, list[float]] = {k: [] for k in layouts}
        rates: dict[str, list[float]] = {k: [] for k in layouts}
        cpu_ms: dict[str, list[float]] = {k: [] for k in layouts}
        p99s: dict[str, list[float]] = {k: [] for k in layouts}
        work_ms: list[float] = []
        for r in range(rounds):
            order = list(layouts) if r % 2 == 0 else list(reversed(layouts))
            for label in order:
                app, wk = layouts[label]
                with Sampler(app.pid) as sampler:
                    ceiling = load.run(f"{label}: ping", app.port, pings, concurrency=CONCURRENCY,
                                       duration_s=seconds, warmup_s=WARMUP_S)  # fmt: skip
                all_ok(res, f"{label} round {r + 1}: ping", ceiling)
                with (
                    Sampler(app.pid) as sampler,
                    ProcessCpu(app.pid) as cpu,
                    ProcessCpu(wk.pid if wk is not None else app.pid) as wcpu,
                ):
                    started = time.monotonic()
                    result = load.run(f"{label}: claims", app.port, claims, concurrency=CONCURRENCY,
                                      duration_s=seconds, warmup_s=WARMUP_S)  # fmt: skip
                all_ok(res, f"{label} round {r + 1}: claims", result, expect=(201,))
                window = _measured(CONCURRENCY, seconds, WARMUP_S, started)
                per_claim = cpu.cores(*window) * 1000 / max(result.rps, 1e-9)
                extra: dict[str, float] = {"app_cpu_ms_per_request": round(per_claim, 3)}
                if wk is not None:
                    extra["worker_cpu_ms_per_request"] = round(wcpu.cores(*window) * 1000 / max(result.rps, 1e-9), 3)
                    work_ms.append(extra["worker_cpu_ms_per_request"])
                row = http_row(res, f"{label} round {r + 1}: claims c={CONCURRENCY}", result, sampler,
                               ceiling_rps=ceiling.rps, role=label, **extra)  # fmt: skip
                ratios[label].append(row["ratio"])
                rates[label].append(result.rps)
                cpu_ms[label].append(per_claim)
                p99s[label].append(result.percentile(99))
        asyncio.run(_settle_and_check(res, servers, seeded, None))
        for label, (app, _wk) in layouts.items():
            res.check(f"{label}: no errors logged", app.errors_logged() == 0, f"{app.errors_logged()} ERROR lines")
        res.check("worker: no errors logged", worker.errors_logged() == 0, f"{worker.errors_logged()} ERROR lines")
    med = {k: statistics.median(v) for k, v in ratios.items()}
    res.extra["median_rps"] = {k: statistics.median(v) for k, v in rates.items()}
    res.extra["median_p99_ms"] = {k: statistics.median(v) for k, v in p99s.items()}
    res.extra["median_ratio"] = med
    res.extra["median_cpu_ms"] = {k: statistics.median(v) for k, v in cpu_ms.items()}
    res.note(
        "claims / ceiling at 64 clients, median of rounds: "
        + ", ".join(f"{k} x{v:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios[k])})" for k, v in med.items())
    )
    res.note(
        "app CPU per claim, median: "
        + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in cpu_ms.items())
        + (f"; the split's worker {statistics.median(work_ms):.2f} ms more" if work_ms else "")
    )
    res.save()
    return 1 if any(not c["ok"] for c in res.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
