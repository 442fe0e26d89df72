"""The run subsystem as the gateway mounts it, and its admin commands."""

from __future__ import annotations

import click

from picool.cli import run_admin
from picool.kernel import Kernel
from picool.subsystem import Subsystem
from picool.workers import Periodic
from run import controllers, service

# Schedulers: how often windows are checked and overdue runs expired. Reads expire overdue runs too,
# so the interval only bounds how long an abandoned run keeps its slot.
WINDOW_SWEEP_S = 5.0
EXPIRY_SWEEP_S = 5.0


def services(kernel: Kernel) -> tuple[service.TaskService, service.RunService]:
    """The run use cases for ``kernel``'s process (also parked in ``kernel.services``)."""
    existing = kernel.services.get(controllers.TASKS_SERVICE)
    if existing is not None:
        return existing, kernel.services[controllers.RUNS_SERVICE]
    ctx = service.RunContext.create(kernel)
    tasks, runs = service.TaskService(ctx), service.RunService(ctx)
    kernel.services[controllers.TASKS_SERVICE] = tasks
    kernel.services[controllers.RUNS_SERVICE] = runs
    return tasks, runs


def create(kernel: Kernel) -> Subsystem:
    """Build the run subsystem for kernel's process."""
    tasks, runs = services(kernel)
    return Subsystem(
        name="run",
        route_handlers=[controllers.TaskController, controllers.RunController, controllers.MeController],
        periodics=[
            Periodic("run.windows", WINDOW_SWEEP_S, tasks.sweep_windows, redis=kernel.redis),
            Periodic("run.expiry", EXPIRY_SWEEP_S, runs.sweep_expired, redis=kernel.redis),
        ],
    )


@click.command("reindex-tasks")
def reindex_tasks() -> None:
    """Rebuild the nearby-task index (Redis GEO) from PostgreSQL."""

    async def go(kernel: Kernel) -> int:
        tasks, _ = services(kernel)
        return await tasks.reindex()

    listed = run_admin(go)
    click.echo(f"reindexed: {listed} tasks listed")


def admin_commands() -> list[click.Command]:
    """``picool admin`` commands of the run subsystem."""
    return [reindex_tasks]
