"""``picool simulate``: a crowd of merchants and runners driven against a running stack."""

from __future__ import annotations

import sys

import click

from picool.cli._group import main


@main.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running stack's public URL.")
@click.option("--runners", default=200, show_default=True, type=click.IntRange(1, 5000))
@click.option("--center", default="31.2304,121.4737", show_default=True, help="LAT,LON the tasks are spread around.")
@click.option("--merchants", default=None, type=click.IntRange(1, 200), help="Default: runners/20, 2 to 20.")
@click.option(
    "--cheaters", default=0.10, show_default=True, type=click.FloatRange(0, 1), help="Share who drive or teleport."
)
@click.option("--run-seconds", default=60.0, show_default=True, type=click.FloatRange(20, 3600),
              help="How long an honest run lasts (tracks are real time).")  # fmt: skip
@click.option(
    "--out", default=".", show_default=True, type=click.Path(file_okay=False), help="Where the map and summary go."
)
@click.option("--seed", default=None, type=int, help="Repeatable choices (timing still varies).")
@click.option("--operator-email", default=None, help="An operator account for the flash sale...")
@click.option("--operator-password", default=None, help="...else one is made with `picool admin --data-dir D`.")
@click.option("--data-dir", default=".picool", show_default=True, type=click.Path(file_okay=False),
              help="The data dir of `picool dev` (to make the operator).")  # fmt: skip
def simulate(
    *,
    url: str, runners: int, center: str, merchants: int | None, cheaters: float, run_seconds: float, out: str,
    seed: int | None, operator_email: str | None, operator_password: str | None, data_dir: str,
) -> None:  # fmt: skip
    """Drive a running stack through its public API: merchants, runners (some cheat), a flash sale, redemptions;
    then a summary with invariants and a map of the runs. Exit code 1 if an invariant failed."""
    from pathlib import Path

    from simulator import scenario  # imported here: the other commands need neither rich nor matplotlib

    try:
        where = scenario.parse_center(center)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--center") from exc
    options = scenario.Options(
        url=url.rstrip("/"), runners=runners, center=where, merchants=merchants, cheaters=cheaters,
        run_seconds=run_seconds, out=Path(out), seed=seed, operator_email=operator_email,
        operator_password=operator_password, data_dir=data_dir,
    )  # fmt: skip
    sys.exit(scenario.main(options))
