"""The performance picture from ``bench/out/*.json``: ``bench/results.md`` (every run, the targets, the
invariants, the conditions each scenario ran under) and ``bench/results.png`` (latency vs concurrency and
vs data size); with ``--readme``, the summary table in README.md's Performance section too (between its
``bench:results`` markers; nothing else in the README is touched).

    uv run python bench/report.py [--readme]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
ROOT = BENCH.parent
ORDER = ["ceiling", "auth", "nearby", "wallet", "flash", "scale"]
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
COMMAND = "uv run bench/run_all"
# The rows of the short table (README): the headline figure of each scenario.
SUMMARY_ROLES = [
    "ceiling", "edge-verify", "verify", "verify-cold", "refresh", "login", "starve", "nearby-cold",
    "nearby-local-cold", "nearby-warm", "nearby-paced", "wallet-local", "wallet-redis", "wallet-miss", "redeem",
    "claims", "scale-nearby-c1", "scale-wallet",
]  # fmt: skip


def load_results() -> list[dict[str, Any]]:
    found = []
    for path in sorted(OUT.glob("*.json")):
        if path.name.startswith(("ab-", "baseline-")):
            continue
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    found.sort(key=lambda d: (ORDER.index(d["scenario"]) if d["scenario"] in ORDER else 99, d["scenario"]))
    return found


def _num(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _throughput(r: dict[str, Any]) -> str:
    if r.get("per_op_us") is not None:
        return f"{r['per_op_us']:.1f} µs/op"
    if r.get("rps") is not None:
        return f"{r['rps']:,.0f}/s"
    if r.get("requests") is not None:
        return f"n={r['requests']}"
    return ""


def _lat(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if v < 1 else f"{v:.1f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = "| scenario | run | clients | throughput | p50 ms | p99 ms | of ceiling | app peak RSS MB "
    out = [head + "| other load (cores) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.0%}" if r.get("ratio") is not None else ""
        out.append(
            f"| {r['scenario']} | {r['name']} | {r.get('concurrency', '') or ''} | {_throughput(r)} | "
            f"{_lat(r.get('p50_ms'))} | {_lat(r.get('p99_ms'))} | {ratio} | "
            f"{_num(r.get('peak_rss_mb') or None, '.0f')} | {_num(r.get('other_load_cores'), '.2f')} |"
        )
    return out


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for d in results:
        for r in d["rows"]:
            role = r.get("role")
            if role not in SUMMARY_ROLES:
                continue
            if role == "ceiling" and d["scenario"] != "ceiling":
                continue
            if role == "ceiling" and r.get("concurrency") != 64:
                continue
            rows.append(r)
    return rows


def machine_line(results: list[dict[str, Any]]) -> str:
    m = next((d["machine"] for d in results if d.get("machine")), {})
    return f"{m.get('nproc')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, Python {m.get('python')}"


def conditions(results: list[dict[str, Any]]) -> list[str]:
    out = [
        "| scenario | started (UTC) | took s | load avg before → after | others' load, max (cores) "
        "| loopback round trip µs, before → after | git | command |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for d in results:
        lb, la = d.get("loadavg_before") or [0], d.get("loadavg_after") or [0]
        phase = d.get("machine_phase") or {}
        rtt = " → ".join(f"{phase[k]['loopback_rtt_us']:.0f}" for k in ("before", "after") if k in phase) or "–"
        out.append(
            f"| {d['scenario']} | {d.get('started_at', '')} | {d.get('elapsed_s', '')} | {lb[0]} → {la[0]} | "
            f"{_num(d.get('other_load_cores_max'), '.2f')} | {rtt} | {d.get('git', '')} | "
            f"`{d.get('command', 'uv run python bench/' + d['scenario'] + '.py')}` |"
        )
    return out


def noise_warning(results: list[dict[str, Any]]) -> list[str]:
    others = max((d.get("other_load_cores_max") or 0 for d in results), default=0)
    if others < 0.3:
        return []
    return [
        f"**Measured on a shared machine**: other processes used up to {others:.1f} of its cores during these "
        "runs, and not evenly, so absolute figures are low and noisy and even same-run ratios move by tens of "
        "percent between runs. Re-run `" + COMMAND + "` on a quiet machine for figures to quote; "
        "`bench/ab.py` (interleaved rounds) is the fair way to compare two versions meanwhile.",
        "",
    ]


def targets(results: list[dict[str, Any]]) -> list[str]:
    out = ["| target | | measured |", "|---|---|---|"]
    for d in results:
        for t in d.get("targets", []):
            out.append(f"| {t['name']} | {'met' if t['met'] else '**missed**'} | {t['detail']} |")
    return out


def checks(results: list[dict[str, Any]]) -> list[str]:
    total = sum(len(d.get("checks", [])) for d in results)
    failed = [(d["scenario"], c) for d in results for c in d.get("checks", []) if not c["ok"]]
    out = [f"{total - len(failed)} of {total} invariant checks passed."]
    out += [f"- **{s}: {c['name']}** — {c['detail']}" for s, c in failed]
    return out


def ab_section() -> list[str]:
    out = []
    for path in sorted(OUT.glob("ab-*.json")):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        med = d.get("median_rps") or {}
        if len(med) != 2:
            continue
        (la, a), (lb, b) = med.items()
        p99 = d.get("median_p99_ms") or {}
        out.append(
            f"| `{d.get('command', '')}` | {la}: {a:.0f}/s, p99 {p99.get(la, 0):.0f} ms "
            f"| {lb}: {b:.0f}/s, p99 {p99.get(lb, 0):.0f} ms | x{b / a:.2f} | {d.get('started_at', '')} |"
        )
    if out:
        out = ["| command | A (median of rounds) | B | B/A | when |", "|---|---|---|---:|---|", *out]
    return out


def chart(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for d in results for r in d["rows"] if r.get("series")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    by_conc: dict[str, list[dict[str, Any]]] = {}
    by_size: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["series"] in ("ping", "nearby-warm") and r.get("concurrency"):
            by_conc.setdefault(r["series"], []).append(r)
        elif r.get("data_size"):
            by_size.setdefault(r["series"], []).append(r)
    for name, series in sorted(by_conc.items()):
        rs = sorted((r for r in series if r.get("p50_ms") is not None and r.get("p99_ms") is not None),
                    key=lambda r: r["concurrency"])  # fmt: skip
        xs = [r["concurrency"] for r in rs]
        (line,) = ax1.plot(xs, [r["p50_ms"] for r in rs], marker="o", label=f"{name} p50")
        ax1.plot(xs, [r["p99_ms"] for r in rs], marker="x", linestyle="--", color=line.get_color(), label=f"{name} p99")
    ax1.set(xscale="log", yscale="log", xlabel="concurrent clients (closed loop)", ylabel="latency (ms)",
            title="Latency vs concurrency")  # fmt: skip
    if by_conc:
        ax1.legend(fontsize=8)
    ax1.grid(True, which="both", alpha=0.3)
    for name, rs in sorted(by_size.items()):
        best: dict[int, dict[str, Any]] = {}
        for r in rs:
            best[r["data_size"]] = r
        pts = sorted((r for r in best.values() if r.get("p50_ms") is not None), key=lambda r: r["data_size"])
        if not pts:
            continue
        xs = [r["data_size"] for r in pts]
        (line,) = ax2.plot(xs, [r["p50_ms"] for r in pts], marker="o", label=f"{name} p50")
        if all(r.get("p99_ms") is not None for r in pts):
            ax2.plot(xs, [r["p99_ms"] for r in pts], marker="x", linestyle="--", color=line.get_color(),
                     label=f"{name} p99")  # fmt: skip
    ax2.set(xscale="log", yscale="log", xlabel="data size (tasks indexed / coupons stored)", ylabel="latency (ms)",
            title="Latency vs data size")  # fmt: skip
    if by_size:
        ax2.legend(fontsize=8)
    ax2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(results: list[dict[str, Any]], png: bool) -> str:
    all_rows = [r for d in results for r in d["rows"]]
    notes = [f"- {d['scenario']}: {n}" for d in results for n in d.get("notes", [])]
    parts = [
        "# Picool benchmarks: results",
        "",
        f"Written by `bench/report.py` from `bench/out/*.json`. Reproduce: `{COMMAND}` (each scenario alone: "
        "`uv run python bench/<scenario>.py`). Machine: " + machine_line(results) + ".",
        "",
        "Everything runs on this one machine over loopback: the embedded PostgreSQL, Redis and Kafka (tuning `dev`, "
        "as `picool dev` runs them), the app started as `picool serve` starts it (one uvicorn worker, uvloop), and "
        "the load generator (closed-loop keep-alive HTTP/1.1 clients in 2 processes unless a row says otherwise). "
        '"of ceiling" divides a row\'s throughput by `GET /api/v1/ping` on the same app in the same run. '
        '"other load" is the CPU that processes other than the benchmark\'s own used meanwhile (a shared machine '
        "shows it here): compare ratios, not absolute figures, between runs with different other load.",
        "",
        "## Conditions",
        "",
        *noise_warning(results),
        *conditions(results),
        "",
        "The loopback round trip (a TCP ping-pong between two threads, `harness.results.machine_phase`) is taken "
        "before and after each scenario: it shows the phase this VM is in. It has moved between about 25 and "
        "150 µs from hour to hour while plain CPU speed held; a paced load, a wake-up at every hop of every "
        "request, slows with it.",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
        "## Summary",
        "",
        *table(summary_rows(results)),
        "",
        "![latency vs concurrency and vs data size](results.png)" if png else "",
        "",
        "## Before / after (interleaved A/B rounds, `bench/ab.py`)",
        "",
        *(ab_section() or ["(none in bench/out)"]),
        "",
        "## Invariants",
        "",
        *checks(results),
        "",
        "## Notes",
        "",
        *notes,
        "",
        "## Every run",
        "",
        *table(all_rows),
        "",
    ]
    return "\n".join(parts)


def readme_section(results: list[dict[str, Any]]) -> str:
    when = max((d.get("started_at", "") for d in results), default="")
    others = max((d.get("other_load_cores_max") or 0 for d in results), default=0)
    return "\n".join([
        START,
        f"Latest run: {when[:10]} on {machine_line(results)}; other processes used up to {others:.1f} cores "
        "meanwhile. Reproduce with one command (about 15 minutes): `" + COMMAND + "`; every run, the targets, the "
        "invariants and the conditions are in [bench/results.md](bench/results.md).",
        "",
        *table(summary_rows(results)),
        END,
    ])  # fmt: skip


def update_readme(section: str) -> bool:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} markers; not touched", file=sys.stderr)
        return False
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(head + section + tail)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", action="store_true", help="also refresh README.md's Performance table")
    args = parser.parse_args()
    results = load_results()
    if not results:
        print("no results in bench/out; run the scenarios first", file=sys.stderr)
        return 1
    png = chart(results, BENCH / "results.png")
    (BENCH / "results.md").write_text(write_markdown(results, png))
    print(f"wrote {BENCH / 'results.md'}" + (f" and {BENCH / 'results.png'}" if png else ""))
    if args.readme and update_readme(readme_section(results)):
        print("refreshed README.md's Performance table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
