"""The ``picool`` command: dev, serve, migrate and admin."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

import click

from picool.settings import Settings, SettingsError
from picool.stack import EmbeddedStack, StackError, read_running_stack

T = TypeVar("T")
SUBSYSTEM_MODULES = ("auth.app", "run.app", "coupon.app")
URL_FIELDS = ("database_url", "redis_url", "kafka_bootstrap")


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _terminate_as_exit(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `finally` (stopping the servers) runs.
    raise SystemExit(0)


def _load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


@contextlib.contextmanager
def _stack_for(settings: Settings, *, kafka: bool, quiet: bool = False) -> Iterator[Settings]:
    """Settings whose URLs reach real servers: the environment's, a running ``picool dev``'s, or embedded
    servers started for the duration of the block."""
    if not settings.uses_embedded:
        yield settings
        return
    running = read_running_stack(settings.data_path)
    if running is not None:
        yield settings.with_(**{f: settings.__getattribute__(f) or running.get(f, "") for f in URL_FIELDS})
        return
    stack = EmbeddedStack(
        settings.data_path,
        postgres=not settings.database_url,
        redis=not settings.redis_url,
        kafka=kafka and not settings.kafka_bootstrap,
        log=(lambda m: None) if quiet else _echo,
    )
    try:
        stack.start()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield settings.with_(
            database_url=settings.database_url or stack.database_url,
            redis_url=settings.redis_url or stack.redis_url,
            kafka_bootstrap=settings.kafka_bootstrap or stack.kafka_bootstrap or "127.0.0.1:9",
        )
    finally:
        stack.stop()


@click.group()
@click.version_option(package_name="picool")
def main() -> None:
    """Picool: running tasks, coupons and single sign-on."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default=".picool", show_default=True, type=click.Path(file_okay=False))
@click.option("--fresh", is_flag=True, help="Wipe the data directory first.")
def dev(host: str, port: int, data_dir: str, fresh: bool) -> None:
    """Run the whole backend on embedded PostgreSQL, Redis and Kafka (or the PICOOL_*_URL servers)."""
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    t0 = time.monotonic()
    settings = _load_settings(host=host, port=port, data_dir=data_dir)
    if settings.env not in {"dev", "test"}:
        raise click.UsageError("`picool dev` is for development; use `picool serve` with PICOOL_ENV=prod")
    path = settings.data_path
    if fresh and path.exists():
        running = read_running_stack(path)
        if running is not None:
            raise click.ClickException(f"a picool dev (pid {running['pid']}) is using {path}; stop it first")
        shutil.rmtree(path)
        _echo(f"wiped {path}")
    path.mkdir(parents=True, exist_ok=True)
    if read_running_stack(path) is not None:
        raise click.ClickException(f"another picool dev is already running on {path}")
    _echo("Picool dev: starting servers ...")
    stack = EmbeddedStack(
        path,
        postgres=not settings.database_url,
        redis=not settings.redis_url,
        kafka=not settings.kafka_bootstrap,
        log=_echo,
    )
    code = 0
    try:
        try:
            stack.start()
        except StackError as exc:
            raise click.ClickException(str(exc)) from exc
        settings = settings.with_(
            database_url=settings.database_url or stack.database_url,
            redis_url=settings.redis_url or stack.redis_url,
            kafka_bootstrap=settings.kafka_bootstrap or stack.kafka_bootstrap,
        )
        stack.write_stack_file({"api": settings.base_url})
        _echo("  applying migrations ...")
        from picool import migrate

        migrate.upgrade(settings.database_url)
        code = _serve(settings, banner=lambda: _banner(settings, stack, t0))
    finally:
        with contextlib.suppress(OSError):
            (path / "stack.json").unlink()
        _echo("stopping servers ...")
        stack.stop()
        _echo("stopped.")
    if code:
        sys.exit(code)


def _banner(settings: Settings, stack: EmbeddedStack, t0: float) -> None:
    base = settings.base_url
    lines = [
        "",
        f"Picool is ready in {time.monotonic() - t0:.1f}s",
        f"  API        {base}/api/v1/",
        f"  OpenAPI    {base}/schema/openapi.json   (browse: {base}/schema/swagger)",
        f"  Health     {base}/healthz   {base}/readyz",
        f"  Login page {base}/login",
        f"  Portal     {base}/portal/   (merchants and operators)",
        f"  PostgreSQL {settings.database_url}",
        f"  Redis      {settings.redis_url}",
        f"  Kafka      {settings.kafka_bootstrap}",
        f"  Data dir   {settings.data_path}",
        "Press Ctrl-C to stop.",
        "",
    ]
    _echo("\n".join(lines))


def _serve(settings: Settings, banner: Callable[[], None] | None = None, subsystems: list[str] | None = None) -> int:
    import uvicorn
    import uvloop

    from gateway.app import create_app

    app = create_app(settings, subsystems)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        loop="uvloop",
        http="httptools",
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.05)
            if server.started and banner is not None:
                banner()

        task = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            task.cancel()

    # uvicorn.Config(loop="uvloop") only applies when uvicorn runs the loop itself; we run it, so pick uvloop
    # here (the plain asyncio loop costs the app about a third of its throughput).
    uvloop.run(run())
    return 0 if server.started else 3


@main.command()
@click.argument("subsystem", required=False, type=click.Choice(["all", "gateway", "auth", "run", "coupon"]))
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes (uvicorn).")
@click.option("--upstream", multiple=True, help="name=URL of a subsystem served elsewhere (gateway only).")
def serve(subsystem: str | None, host: str | None, port: int | None, workers: int, upstream: tuple[str, ...]) -> None:
    """Run only the app against the servers the PICOOL_* variables name (production)."""
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    settings = _load_settings(host=host, port=port)
    if settings.uses_embedded:
        running = read_running_stack(settings.data_path)
        if running is None:
            raise click.UsageError(
                "picool serve needs PICOOL_DATABASE_URL, PICOOL_REDIS_URL and PICOOL_KAFKA_BOOTSTRAP "
                "(or a running `picool dev` on --data-dir)"
            )
        settings = settings.with_(**{f: getattr(settings, f) or running.get(f, "") for f in URL_FIELDS})
    env = dict(os.environ)
    names: list[str] | None = None
    if subsystem and subsystem not in {"all", "gateway"}:
        names = [subsystem]
    extra = dict(settings.extra)
    for item in upstream:
        name, _, url = item.partition("=")
        if name not in {"auth", "run", "coupon"} or not url:
            raise click.UsageError(f"--upstream takes auth|run|coupon=URL, got {item!r}")
        extra[f"upstream_{name}"] = url
        env[f"PICOOL_UPSTREAM_{name.upper()}"] = url
    if subsystem == "gateway" and upstream:
        extra["gateway_proxy"] = "1"
        env["PICOOL_GATEWAY_PROXY"] = "1"
    settings = settings.with_(extra=extra)
    if workers > 1:
        import uvicorn

        for f in URL_FIELDS:
            env[f"PICOOL_{f.upper()}"] = getattr(settings, f)
        if names:
            env["PICOOL_SUBSYSTEMS"] = ",".join(names)
        os.environ.update(env)
        uvicorn.run(
            "gateway.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http="httptools",
        )
        return
    sys.exit(_serve(settings, subsystems=names))


@main.command()
@click.option("--data-dir", default=".picool", show_default=True, type=click.Path(file_okay=False))
def migrate(data_dir: str) -> None:
    """Apply the database migrations."""
    settings = _load_settings(data_dir=data_dir)
    from picool import migrate as m

    with _stack_for(settings, kafka=False) as s:
        m.upgrade(s.database_url)
    _echo("migrations applied.")


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


@main.group()
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


def _register_admin_commands() -> None:
    for modname in SUBSYSTEM_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:  # pragma: no cover - a subsystem not installed
            continue
        for cmd in getattr(mod, "admin_commands", lambda: [])():
            admin.add_command(cmd)


_register_admin_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
