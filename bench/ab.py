"""Before/after on a noisy machine: two versions of the app, interleaved round by round on the same servers,
data and load, so that the load other people put on the machine falls on both alike.

A version is ``label=REV[+nohiredis][+asyncio]``: a git revision (exported with ``git archive`` into a temp
dir, nothing in the work tree changes) or ``.`` for the work tree; ``+nohiredis`` hides hiredis from
redis-py (its pure-Python parser), ``+asyncio`` serves on the plain asyncio loop instead of uvloop.

    uv run python bench/ab.py nearby-warm before=8a0c981 after=.
    uv run python bench/ab.py ping-token py=.+nohiredis c=. --rounds 4
    uv run python bench/ab.py flash before=HEAD after=. --rate 600   # offered 600/s: compare p99 and CPU

With ``--rate`` the load is offered on a fixed schedule (the same for both versions) instead of as fast as
the app answers: what differs then is the latency and the app's CPU per request, not the throughput.

Scenarios: ``ping`` | ``ping-token`` | ``nearby-warm`` | ``nearby-local-cold`` (``--tasks``, default 100k)
| ``wallet-hit`` | ``flash`` (flash-session claims, one process: consumer included).
Writes ``bench/out/ab-<scenario>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import accounts, load, tasks
from harness.results import Results
from harness.runs import PING
from harness.servers import ROOT, App, Sampler, embedded_servers, install_signal_handlers

PRELUDES = {
    "nohiredis": "import sys; sys.modules['hiredis'] = None",
    "asyncio": "import asyncio, uvloop; uvloop.run = asyncio.run",
}


def _export(rev: str) -> Path:
    if rev == ".":
        return ROOT
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True)
    dest = Path(tempfile.gettempdir()) / f"picool-ab-{sha.stdout.strip()}"
    if not (dest / "picool").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "archive", rev], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
        archive.wait()
    return dest


def _version(spec: str) -> tuple[str, Path, list[str]]:
    label, _, rest = spec.partition("=")
    rev, *flags = rest.split("+")
    code = "; ".join([PRELUDES[f] for f in flags] + ["from picool.cli import main", "main()"])
    return label, _export(rev or "."), [sys.executable, "-c", code]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "scenario", choices=["ping", "ping-token", "nearby-warm", "nearby-local-cold", "wallet-hit", "flash"]
    )
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=None, help="offered requests/s (default: closed loop)")
    args = parser.parse_args()
    install_signal_handlers()
    versions = [_version(args.a), _version(args.b)]
    res = Results(f"ab-{args.scenario}")
    res.extra["command"] = "uv run python bench/ab.py " + " ".join(sys.argv[1:])
    res.extra["versions"] = {label: str(path) for label, path, _ in versions}
    rps: dict[str, list[float]] = {label: [] for label, _, _ in versions}
    p99: dict[str, list[float]] = {label: [] for label, _, _ in versions}
    cpu_ms: dict[str, list[float]] = {label: [] for label, _, _ in versions}
    with embedded_servers() as servers:
        field = None
        if args.scenario.startswith("nearby"):
            field = tasks.TaskField.make(args.tasks)
            tasks.seed_sync(servers, field, 0, args.tasks)
        wallet_setup = None
        env: dict[str, str] = {}
        expect = 200
        if args.scenario == "flash":
            import flash

            env, expect = flash.CLAIM_LIMITS, 201
        with App(servers, name="setup", **env) as app:
            runner = accounts.runners(app.base_url, 1)[0]
            if args.scenario == "wallet-hit":
                import wallet

                wallet_setup = wallet.setup(servers, app, users=64, coupons_each=20)
            if args.scenario == "flash":
                import asyncio

                seeded = asyncio.run(flash._seed(servers, app))
                claim_path = f"/api/v1/coupon/flash-sessions/{seeded.session_id}/claims"
                claims = [load.post(claim_path, b"", {"Authorization": f"Bearer {t}"}) for t in seeded.tokens]
        headers = runner.bearer
        if args.scenario == "flash":
            reqs = claims
        elif args.scenario == "ping":
            reqs = [load.get(PING)]
        elif args.scenario == "ping-token":
            reqs = [load.get(PING, headers)]
        elif args.scenario == "wallet-hit":
            assert wallet_setup is not None
            reqs = wallet_setup.requests()
        else:
            assert field is not None
            n_points = 100 if args.scenario == "nearby-warm" else 30_000
            reqs = tasks.requests(field.queries(n_points, seed=11), headers)
            with App(servers, name="fill") as app:  # Redis holds every task these searches propose
                load.run("fill", app.port, reqs, concurrency=64, duration_s=60, warmup_s=0, cycle=False)
        for rnd in range(args.rounds):
            for label, path, cmd in versions:
                with App(servers, name=label, command=cmd, cwd=path, **env) as app:
                    if args.scenario in {"nearby-warm", "wallet-hit", "flash"}:
                        load.run("warm", app.port, reqs, concurrency=16, duration_s=2, warmup_s=0.2)
                    with Sampler(app.pid) as sampler:
                        r = load.run(label, app.port, reqs, concurrency=args.concurrency, duration_s=args.seconds,
                                     warmup_s=1.0, rate=args.rate)  # fmt: skip
                    bad = {s: n for s, n in r.statuses.items() if s != expect}
                    res.check(f"round {rnd + 1} {label}: all {expect}", not bad and not r.errors,
                              f"{dict(r.statuses)}")  # fmt: skip
                    rps[label].append(r.rps)
                    p99[label].append(r.percentile(99))
                    cpu_ms[label].append(sampler.summary()["our_cores"] * 1000 / max(r.rps, 1e-9))
                    res.row(f"round {rnd + 1} {label}", kind="ab", rps=round(r.rps, 1),
                            p50_ms=round(r.percentile(50), 2), p99_ms=round(r.percentile(99), 2),
                            concurrency=args.concurrency, offered_rps=args.rate,
                            app_cpu_ms_per_request=round(cpu_ms[label][-1], 3), **sampler.summary())  # fmt: skip
    (la, _, _), (lb, _, _) = versions
    ma, mb = statistics.median(rps[la]), statistics.median(rps[lb])
    res.extra["median_rps"] = {la: ma, lb: mb}
    res.extra["median_p99_ms"] = {la: statistics.median(p99[la]), lb: statistics.median(p99[lb])}
    res.extra["median_app_cpu_ms_per_request"] = {la: statistics.median(cpu_ms[la]), lb: statistics.median(cpu_ms[lb])}
    res.note(f"{args.scenario}: median {la} {ma:.0f}/s, {lb} {mb:.0f}/s: {lb}/{la} = x{mb / ma:.2f}")
    res.note(f"{args.scenario}: median p99 {la} {res.extra['median_p99_ms'][la]:.1f} ms, "
             f"{lb} {res.extra['median_p99_ms'][lb]:.1f} ms; app CPU per request {la} "
             f"{statistics.median(cpu_ms[la]):.3f} ms, {lb} {statistics.median(cpu_ms[lb]):.3f} ms")  # fmt: skip
    res.save()
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
