"""Ceiling: the trivial endpoint on the same server settings, the denominator of every ratio.

- the load generator's own ceiling against a canned in-process server (so a figure near it means the
  generator, not the app, was the limit);
- ``GET /api/v1/ping`` (behind the whole edge: request id, access log, rate limiter, metrics) at 1, 16, 64
  and 128 clients: latency vs concurrency;
- the same with a bearer token (the edge verifies it: ES256 + the denylist), and ``/healthz`` (exempt from
  the rate limiter), which split the ceiling into its parts.

    uv run python bench/ceiling.py            # ~1 min; BENCH_DURATION=3 for a quick look
"""

from __future__ import annotations

import sys

from harness import accounts, load
from harness.results import Results, seconds
from harness.runs import PING, all_ok, measure
from harness.servers import App, embedded_servers, install_signal_handlers


def main() -> int:
    install_signal_handlers()
    res = Results("ceiling")
    res.extra["command"] = "uv run python bench/ceiling.py"
    print("ceiling: generator's own ceiling ...", flush=True)
    gen = load.generator_ceiling(64, seconds("gen", 4.0))
    s = gen.summary()
    res.row("load generator vs canned server", kind="generator", role="generator", concurrency=64,
            rps=s["rps"], p50_ms=s["p50_ms"], p99_ms=s["p99_ms"], processes=gen.processes)  # fmt: skip
    with embedded_servers() as servers, App(servers) as app:
        runner = accounts.runners(app.base_url, 1)[0]
        by_c: dict[int, float] = {}
        for c in (1, 16, 64, 128):
            result, _ = measure(res, f"ping c={c}", app, [load.get(PING)], concurrency=c,
                                duration_s=None if c == 64 else min(seconds("duration", 8.0), 5.0),
                                role="ceiling" if c == 64 else "ceiling-sweep", series="ping")  # fmt: skip
            all_ok(res, f"ping c={c}", result)
            by_c[c] = result.rps
        res.extra["ceiling_rps"] = {str(k): v for k, v in by_c.items()}
        base = by_c[64]
        r, _ = measure(res, "ping + bearer token (edge verifies) c=64", app,
                       [load.get(PING, runner.bearer)], concurrency=64, ceiling_rps=base)  # fmt: skip
        all_ok(res, "ping with token", r)
        r, _ = measure(
            res, "healthz (no rate limiter) c=64", app, [load.get("/healthz")], concurrency=64, ceiling_rps=base
        )
        all_ok(res, "healthz", r)
        res.check("generator is not the bottleneck (gen ceiling >= 3x app ceiling)", gen.rps >= 3 * base,
                  f"generator {gen.rps:.0f}/s vs app {base:.0f}/s")  # fmt: skip
        res.check("app logged no errors", app.errors_logged() == 0, f"{app.errors_logged()} ERROR lines")
    res.save()
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
