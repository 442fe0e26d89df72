"""``picool migrate`` and ``picool admin``: the commands that change a stack's database, and
:func:`run_admin`, which the subsystems' own admin commands use."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import click

from picool.cli._group import _echo, _load_settings, _stack_for, main
from picool.settings import Settings

T = TypeVar("T")
SUBSYSTEM_MODULES = ("auth.app", "run.app", "coupon.app")


@main.command()
@click.option("--data-dir", default=".picool", show_default=True, type=click.Path(file_okay=False))
def migrate(data_dir: str) -> None:
    """Apply the database migrations."""
    settings = _load_settings(data_dir=data_dir)
    from picool import migrate as m

    with _stack_for(settings, kafka=False) as s:
        m.upgrade(s.database_url)
    _echo("migrations applied.")


class _AdminGroup(click.Group):
    """``picool admin``: the subsystems' commands join it when it is first used, not when this module is
    imported (a subsystem's app module imports ``run_admin`` from ``picool.cli``; registering at import
    time found it half-imported whenever it was imported first, and its commands went missing)."""

    _registered = False

    def _register(self) -> None:
        if not self._registered:
            self._registered = True
            register_admin_commands(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._register()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._register()
        return super().list_commands(ctx)


@main.group(cls=_AdminGroup)
@click.option("--data-dir", default=".picool", show_default=True, type=click.Path(file_okay=False))
@click.pass_context
def admin(ctx: click.Context, data_dir: str) -> None:
    """Administrative commands. They reach the stack of `picool dev --data-dir D` or the PICOOL_* servers."""
    ctx.obj = {"data_dir": data_dir}


@contextlib.asynccontextmanager
async def _admin_kernel(settings: Settings) -> AsyncIterator[Any]:
    from picool.kernel import Kernel

    kernel = Kernel(settings)
    await kernel.start_minimal()
    try:
        yield kernel
    finally:
        await kernel.close_minimal()


def run_admin(fn: Callable[[Any], Awaitable[T]], *, kafka: bool = False) -> T:
    """Run ``fn(kernel)`` against the stack the current ``picool admin`` invocation names."""
    ctx = click.get_current_context()
    data_dir = (ctx.find_root().obj or {}).get("data_dir") or ctx.obj.get("data_dir", ".picool")
    settings = _load_settings(data_dir=data_dir, workers_enabled=False)
    with _stack_for(settings, kafka=kafka, quiet=True) as s:
        from picool import migrate as m

        m.upgrade(s.database_url)

        async def go() -> T:
            async with _admin_kernel(s) as kernel:
                return await fn(kernel)

        return asyncio.run(go())


def register_admin_commands(group: click.Group | None = None) -> None:
    """Add the subsystems' ``admin_commands()`` to ``picool admin`` (done on its first use)."""
    group = group or admin
    for modname in SUBSYSTEM_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:  # pragma: no cover - a subsystem not installed
            continue
        for cmd in getattr(mod, "admin_commands", lambda: [])():
            group.add_command(cmd)
