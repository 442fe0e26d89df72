"""``picool simulate`` end to end: a small crowd against the real app on a loopback port, the operator
made with ``picool admin`` as the README says, and the summary's figures and invariants checked."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from picool.settings import Settings
from tests.live_server import live_server, server_env


@pytest.fixture(scope="module")
def stack_url(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a loopback port with the default rate limits (the simulator must live with them)."""
    with live_server(stack_settings, tmp_path_factory.mktemp("simulated-server")) as url:
        yield url


def test_a_small_simulation_passes_every_invariant(stack_url: str, stack_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "picool.cli", "simulate", "--url", stack_url, "--runners", "12", "--run-seconds", "20",
         "--center", "48.8566,2.3522", "--seed", "7", "--out", str(out), "--data-dir", str(tmp_path / "no-dev")],
        env=server_env(stack_settings), capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = json.loads((out / "simulate-summary.json").read_text())
    print(done.stdout[-4000:], json.dumps(summary, indent=1)[:6000], sep="\n")  # shown if an assert below fails
    failed = [i for i in summary["invariants"] if not i["ok"]]
    assert summary["ok"] is True and not failed, (failed, done.stdout[-4000:])
    names = {i["name"]: i["ok"] for i in summary["invariants"]}
    assert len(names) >= 10, names
    assert {"no cheater was rewarded", "no server errors", "flash: never oversold, sold out when wanted"} <= set(names)

    # The crowd: 12 runners, one cheater (10 %), one quitter (5 %, at least one); every runner ran.
    assert summary["runners"] == 12 and summary["kinds"].get("driver", 0) + summary["kinds"].get("teleporter", 0) == 1
    assert summary["runs_accepted"] == 12 and summary["no_task"] == 0 and not summary["runner_errors"]
    rejected = sum(summary["runs_rejected"].values())
    assert summary["runs_completed"] + rejected == 12
    assert summary["runs_rejected"].get("too_fast", 0) >= 1  # the cheater
    assert summary["outcomes_by_kind"]["honest"] == {"completed": summary["kinds"]["honest"]}
    assert summary["rewards_delivered"] == summary["rewards_expected"] == summary["runs_completed"]
    # The flash sale: the operator came from `picool admin create-operator`; a quarter of the crowd won.
    assert summary["flash"]["stock"] == 3 and summary["flash"]["claimants"] == 12
    assert summary["flash_claims"]["ok"] == 3 and summary["flash_claims"]["sold_out"] == 9
    assert summary["redemptions_ok"] + sum(summary["redemption_refusals"].values()) == summary["redemption_visits"]
    assert summary["statuses"].get("500") is None

    assert "Invariants" in done.stdout and "all invariants held" in done.stdout
    png = (out / "simulate-map.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_the_simulator_says_when_there_is_no_stack(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "picool.cli", "simulate", "--url", "http://127.0.0.1:9", "--runners", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Start one with `picool dev` first" in done.stderr + done.stdout


def test_a_bad_centre_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "picool.cli", "simulate", "--center", "north", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--center" in done.stderr
