"""A measured HTTP run against an app: the load generator, the sampler watching RSS and machine load, and
the table row; plus the same-run ceiling (``GET /api/v1/ping`` on the same app, same concurrency)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import load
from harness.results import Results, http_row, seconds
from harness.servers import App, Sampler

PING = "/api/v1/ping"


def measure(
    res: Results,
    name: str,
    app: App,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float | None = None,
    warmup_s: float | None = None,
    ceiling_rps: float | None = None,
    cycle: bool = True,
    processes: int | None = None,
    rate: float | None = None,
    **extra: Any,
) -> tuple[load.LoadResult, dict[str, Any]]:
    """Drive ``requests`` at ``app`` and add a row named ``name``."""
    duration = duration_s if duration_s is not None else seconds("duration", 8.0)
    warmup = warmup_s if warmup_s is not None else seconds("warmup", 1.5)
    with Sampler(app.pid) as sampler:
        result = load.run(
            name,
            app.port,
            requests,
            concurrency=concurrency,
            duration_s=duration,
            warmup_s=warmup,
            cycle=cycle,
            processes=processes,
            rate=rate,
        )
    if rate is not None:
        extra = {"offered_rps": round(rate, 1), **extra}
    row = http_row(res, name, result, sampler, ceiling_rps, **extra)
    return result, row


def ceiling(
    res: Results,
    app: App,
    concurrency: int = 64,
    duration_s: float | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> float:
    """The app's throughput on the trivial endpoint at ``concurrency``: the denominator of this run's ratios.
    With ``headers`` (a bearer token) the edge does the same work as for the scenario's own requests."""
    result, _row = measure(
        res,
        f"ceiling: GET {PING}{' (token)' if headers else ''} c={concurrency}",
        app,
        [load.get(PING, headers)],
        concurrency=concurrency,
        duration_s=duration_s if duration_s is not None else seconds("ceiling", 6.0),
        warmup_s=1.0,
        role="ceiling",
        **extra,
    )
    res.check(f"ceiling run c={concurrency}: every response 200", result.ok_ratio() == 1.0, str(dict(result.statuses)))
    return result.rps


def all_ok(res: Results, name: str, result: load.LoadResult, expect: Sequence[int] = (200,)) -> bool:
    """Check that every measured response had one of the ``expect`` statuses and nothing failed."""
    bad = {s: n for s, n in result.statuses.items() if s not in expect}
    ok = not bad and not result.errors and result.count > 0
    detail = f"{result.count} responses, statuses {dict(result.statuses)}"
    if result.errors:
        detail += f", errors {dict(result.errors)}"
    if bad:
        sample = next((result.samples[s] for s in bad if s in result.samples), b"")
        detail += f", e.g. {sample[:300]!r}"
    return res.check(f"{name}: all responses {'/'.join(map(str, expect))}", ok, detail)
