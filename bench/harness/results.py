"""A scenario's results: table rows, invariant checks and the conditions of the run, saved as JSON in
``bench/out/<scenario>.json`` for ``bench/report.py``."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

OUT = Path(__file__).resolve().parents[1] / "out"


def machine() -> dict[str, Any]:
    """What this machine is: cores, memory, CPU model, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def machine_phase(round_trips: int = 5000) -> dict[str, float]:
    """How fast this VM is right now, in two numbers that move independently of each other here:
    ``loopback_rtt_us``, a TCP round trip on loopback between two threads (a wake-up on each side: what a
    request pays at every hop between processes), and ``python_loop_ms``, a million empty loop turns (plain
    CPU). On this VM the first has varied 5x between phases while the second stayed put; a paced load, one
    wake-up per hop per request, slows with the first (about a second in all)."""
    import socket
    import threading

    started = time.perf_counter()
    for _ in range(1_000_000):
        pass
    loop_ms = (time.perf_counter() - started) * 1000
    with socket.create_server(("127.0.0.1", 0)) as server:

        def echo() -> None:
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(64):
                    conn.sendall(data)

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        with socket.create_connection(server.getsockname()) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            for _ in range(round_trips):
                client.sendall(b"x")
                client.recv(64)
            rtt_us = (time.perf_counter() - started) / round_trips * 1e6
        thread.join(5)
    return {"loopback_rtt_us": round(rtt_us, 1), "python_loop_ms": round(loop_ms, 1)}


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def seconds(name: str, default: float) -> float:
    """A duration knob from the environment (``BENCH_<NAME>``), for quick runs while developing."""
    raw = os.environ.get(f"BENCH_{name.upper()}")
    return float(raw) if raw else default


@dataclass
class Results:
    """Everything one scenario reports."""

    scenario: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    other_load: list[float] = field(default_factory=list)
    saved: bool = False
    phase_before: dict[str, float] = field(default_factory=machine_phase)

    def __post_init__(self) -> None:
        # A scenario stopped early (its time limit, Ctrl-C) still leaves what it measured, marked as partial.
        atexit.register(self._save_partial)

    def _save_partial(self) -> None:
        if not self.saved and (self.rows or self.checks):
            self.notes.append("interrupted before the end: partial results")
            self.save()

    def row(self, name: str, **values: Any) -> dict[str, Any]:
        """Add a table row (throughput, p50, p99, ratio, peak RSS, ...) and print it."""
        r = {"scenario": self.scenario, "name": name, **values}
        if "other_load_cores" in values and values["other_load_cores"] is not None:
            self.other_load.append(float(values["other_load_cores"]))
        self.rows.append(r)
        print("  " + _fmt_row(r), flush=True)
        return r

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record an invariant checked after a run."""
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        print(f"  check {'OK  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    def target(self, name: str, met: bool, detail: str = "") -> bool:
        """Record whether a performance target of the issue was met (a miss is reported, not a failure)."""
        self.targets.append({"name": name, "met": bool(met), "detail": detail})
        print(f"  target {'MET ' if met else 'MISS'} {name}{': ' + detail if detail else ''}", flush=True)
        return met

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def save(self) -> Path:
        """Write ``bench/out/<scenario>.json``."""
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{self.scenario}.json"
        phase_after = machine_phase()
        print(f"  machine phase: before {_phase(self.phase_before)}; after {_phase(phase_after)}", flush=True)
        data = {
            "scenario": self.scenario,
            "started_at": dt.datetime.fromtimestamp(self.started, dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - self.started, 1),
            "git": git_rev(),
            "machine": machine(),
            "machine_phase": {"before": self.phase_before, "after": phase_after},
            "loadavg_before": [round(x, 2) for x in self.load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "other_load_cores_max": round(max(self.other_load), 2) if self.other_load else None,
            "rows": self.rows,
            "checks": self.checks,
            "targets": self.targets,
            "notes": self.notes,
            **self.extra,
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        self.saved = True
        failed = [c["name"] for c in self.checks if not c["ok"]]
        print(f"  wrote {path} ({len(self.rows)} rows, {len(self.checks)} checks, {len(failed)} failed)", flush=True)
        return path

    @property
    def failed(self) -> bool:
        return any(not c["ok"] for c in self.checks)


def _phase(p: dict[str, float]) -> str:
    return f"loopback round trip {p['loopback_rtt_us']:.0f} us, 1M loop turns {p['python_loop_ms']:.0f} ms"


def _fmt_row(r: dict[str, Any]) -> str:
    parts = [f"{r['name']:<40}"]
    if r.get("rps") is not None:
        parts.append(f"{r['rps']:>9.1f}/s")
    if r.get("per_op_us") is not None:
        parts.append(f"{r['per_op_us']:>9.1f} us/op")
    if r.get("p50_ms") is not None:
        parts.append(f"p50 {r['p50_ms']:>7.2f} ms")
    if r.get("p99_ms") is not None:
        parts.append(f"p99 {r['p99_ms']:>7.2f} ms")
    if r.get("ratio") is not None:
        parts.append(f"x{r['ratio']:.2f} of ceiling")
    if r.get("peak_rss_mb") is not None:
        parts.append(f"rss {r['peak_rss_mb']:.0f} MB")
    if r.get("other_load_cores") is not None:
        parts.append(f"other load {r['other_load_cores']:.2f} cores")
    machine = r.get("machine")
    if isinstance(machine, dict) and machine.get("steal") is not None:
        parts.append(f"stolen {machine['steal']:.0%} of the machine")
    return "  ".join(parts)


def http_row(
    res: Results, name: str, load: Any, sampler: Any, ceiling_rps: float | None = None, **extra: Any
) -> dict[str, Any]:
    """A table row from a load run and the sampler that watched it."""
    s = load.summary()
    return res.row(
        name,
        kind="http",
        concurrency=load.concurrency,
        rps=s["rps"],
        p50_ms=s["p50_ms"],
        p90_ms=s["p90_ms"],
        p99_ms=s["p99_ms"],
        max_ms=s["max_ms"],
        requests=s["requests"],
        statuses=s["statuses"],
        errors=s["errors"],
        ceiling_rps=round(ceiling_rps, 1) if ceiling_rps else None,
        ratio=round(s["rps"] / ceiling_rps, 3) if ceiling_rps else None,
        **sampler.summary(),
        **extra,
    )
