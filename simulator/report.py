"""What a simulation found: the figures, the invariants it checked, a summary table and a map of the runs."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OUTCOME_COLOURS = {
    "completed": "#1d9a4a",
    "too_fast": "#d62728",
    "gap_in_track": "#9467bd",
    "too_short": "#ff7f0e",
    "not_at_destination": "#e3a21a",
    "time_limit_exceeded": "#8c564b",
    "too_few_points": "#7f7f7f",
}


@dataclass
class Invariant:
    """One property the run must have had, whether it held, and the figures behind it."""

    name: str
    ok: bool
    detail: str


@dataclass
class Track:
    """One runner's track for the map."""

    kind: str
    outcome: str
    points: list[tuple[float, float]]


@dataclass
class Report:
    """Everything the summary shows (and ``simulate-summary.json`` holds)."""

    url: str
    runners: int
    merchants: int
    tasks: int
    center: tuple[float, float]
    run_seconds: float
    kinds: Counter[str] = field(default_factory=Counter)
    phases_s: dict[str, float] = field(default_factory=dict)
    runs_accepted: int = 0
    runs_completed: int = 0
    runs_rejected: Counter[str] = field(default_factory=Counter)
    no_task: int = 0
    runner_errors: Counter[str] = field(default_factory=Counter)
    outcomes_by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    rewards_expected: int = 0
    rewards_delivered: int = 0
    flash: dict[str, Any] = field(default_factory=dict)
    flash_claims: Counter[str] = field(default_factory=Counter)
    redemption_visits: int = 0
    redemptions_ok: int = 0
    redemption_refusals: Counter[str] = field(default_factory=Counter)
    redemption_replays: int = 0
    discount_cents: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    rate_limited: int = 0
    transport_retries: int = 0
    invariants: list[Invariant] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list, repr=False)
    destinations: list[tuple[float, float, float]] = field(default_factory=list, repr=False)
    shops: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Every invariant held."""
        return bool(self.invariants) and all(i.ok for i in self.invariants)

    def check(self, name: str, ok: bool, detail: str) -> None:
        """Record an invariant."""
        self.invariants.append(Invariant(name, bool(ok), detail))

    def as_json(self) -> dict[str, Any]:
        """The machine-readable summary (no tracks)."""

        def plain(value: Any) -> Any:
            # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs.
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if isinstance(value, Invariant):
                return {"name": value.name, "ok": value.ok, "detail": value.detail}
            return value

        skip = {"tracks", "destinations", "shops"}
        body = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        body["ok"] = self.ok
        return body

    def write_json(self, path: Path) -> None:
        """``simulate-summary.json``."""
        path.write_text(json.dumps(self.as_json(), indent=2, sort_keys=True) + "\n")

    def print(self, console: Console) -> None:
        """The summary table and the invariants."""
        t = Table(title=f"Picool simulation — {self.url}", show_lines=False, title_justify="left")
        t.add_column("what")
        t.add_column("figure", justify="right")
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items()))
        t.add_row("runners", f"{self.runners} ({kinds})")
        t.add_row("merchants / tasks", f"{self.merchants} / {self.tasks}")
        t.add_row("runs accepted", str(self.runs_accepted))
        t.add_row("runs completed", f"[green]{self.runs_completed}[/]")
        for reason, n in sorted(self.runs_rejected.items()):
            t.add_row(f"  rejected: {reason.replace('_', ' ')}", f"[red]{n}[/]")
        if self.no_task:
            t.add_row("runners who found no task with a slot", str(self.no_task))
        for err, n in sorted(self.runner_errors.items()):
            t.add_row(f"  runner error: {err}", str(n))
        for kind, outs in sorted(self.outcomes_by_kind.items()):
            t.add_row(f"  {kind}", ", ".join(f"{o} {n}" for o, n in sorted(outs.items())))
        t.add_row("rewards delivered / completed runs", f"{self.rewards_delivered} / {self.rewards_expected}")
        if self.flash.get("skipped"):
            t.add_row("flash session", f"skipped: {self.flash['skipped']}")
        elif self.flash:
            t.add_row("flash stock / claimants", f"{self.flash.get('stock')} / {self.flash.get('claimants')}")
            t.add_row("flash claims", ", ".join(f"{k} {n}" for k, n in sorted(self.flash_claims.items())))
        t.add_row("redemptions (visits to a till)", f"{self.redemptions_ok} of {self.redemption_visits}")
        for code, n in sorted(self.redemption_refusals.items()):
            t.add_row(f"  refused at the till: {code.replace('_', ' ')}", str(n))
        t.add_row("  idempotent retries answered alike", str(self.redemption_replays))
        t.add_row("  discounts given", f"{self.discount_cents // 100}.{self.discount_cents % 100:02d}")
        t.add_row(
            "HTTP requests",
            f"{self.requests} ({self.rate_limited} x 429, {len(self.server_errors)} x 5xx, "
            f"{self.transport_retries} resent after a network error)",
        )
        t.add_row("time", ", ".join(f"{k} {v:.0f}s" for k, v in self.phases_s.items()))
        console.print(t)
        inv = Table(title="Invariants", title_justify="left")
        inv.add_column("")
        inv.add_column("invariant")
        inv.add_column("figures")
        for i in self.invariants:
            inv.add_row("[green]ok[/]" if i.ok else "[red]FAILED[/]", i.name, i.detail)
        console.print(inv)
        for line in self.server_errors[:5]:
            console.print(f"[red]5xx[/] {line}")


def draw_map(report: Report, path: Path) -> None:
    """A PNG of every run (coloured by outcome), the task destinations and the shops, in metres
    around the centre (so distances look right at any latitude)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the file
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    lat0, lon0 = report.center
    kx = math.pi / 180 * 6_371_008.8 * math.cos(math.radians(lat0))
    ky = math.pi / 180 * 6_371_008.8

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (lon - lon0) * kx, (lat - lat0) * ky

    fig, ax = plt.subplots(figsize=(10, 10), dpi=110)
    counts: Counter[str] = Counter()
    for tr in report.tracks:
        if len(tr.points) < 2:
            continue
        counts[tr.outcome] += 1
        xs, ys = zip(*(xy(lat, lon) for lat, lon in tr.points), strict=True)
        colour = OUTCOME_COLOURS.get(tr.outcome, "#aaaaaa")
        ax.plot(xs, ys, color=colour, linewidth=0.8, alpha=0.75, linestyle="--" if tr.kind != "honest" else "-")
        ax.plot(xs[-1:], ys[-1:], marker="o", markersize=2.5, color=colour)
    for lat, lon, radius in report.destinations:
        x, y = xy(lat, lon)
        ax.add_patch(Circle((x, y), radius, fill=False, edgecolor="black", linewidth=0.8))
        ax.plot([x], [y], marker="*", color="black", markersize=9)
    for lat, lon in report.shops:
        x, y = xy(lat, lon)
        ax.plot([x], [y], marker="s", color="#1f5fbf", markersize=6)
    handles = [
        Line2D([], [], color=OUTCOME_COLOURS.get(o, "#aaaaaa"), label=f"{o.replace('_', ' ')} ({n})")
        for o, n in counts.most_common()
    ]
    handles += [
        Line2D([], [], color="black", marker="*", linestyle="", label="task destination (arrival circle)"),
        Line2D([], [], color="#1f5fbf", marker="s", linestyle="", label="shop"),
        Line2D([], [], color="grey", linestyle="--", label="cheater or quitter"),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlabel(f"metres east of {lon0:.5f}")
    ax.set_ylabel(f"metres north of {lat0:.5f}")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.set_title(
        f"Picool simulation: {report.runners} runners, {report.runs_completed} runs completed, "
        f"{sum(report.runs_rejected.values())} rejected"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
