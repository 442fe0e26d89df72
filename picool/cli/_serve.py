"""``picool dev`` (the whole backend on embedded servers) and ``picool serve`` (the app alone)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator

import click

from picool.cli._group import URL_FIELDS, _echo, _load_settings, _terminate_as_exit, main
from picool.gc_tuning import tune_for_serving
from picool.settings import Settings
from picool.stack import EmbeddedStack, StackError, read_running_stack


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

    tune_for_serving()  # the app is built: freeze it, collect rarely (see picool.gc_tuning)
    # uvicorn.Config(loop="uvloop") only applies when uvicorn runs the loop itself; we run it, so pick uvloop
    # here (the plain asyncio loop costs the app about a third of its throughput).
    uvloop.run(run())
    return 0 if server.started else 3


def _production_settings(**overrides: object) -> Settings:
    """The settings of ``serve`` and ``work``: the environment's servers, or a running ``picool dev``'s."""
    settings = _load_settings(**overrides)
    if settings.uses_embedded:
        running = read_running_stack(settings.data_path)
        if running is None:
            raise click.UsageError(
                "this command needs PICOOL_DATABASE_URL, PICOOL_REDIS_URL and PICOOL_KAFKA_BOOTSTRAP "
                "(or a running `picool dev` on --data-dir)"
            )
        settings = settings.with_(**{f: getattr(settings, f) or running.get(f, "") for f in URL_FIELDS})
    return settings


@main.command()
@click.argument("subsystem", required=False, type=click.Choice(["all", "gateway", "auth", "run", "coupon"]))
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes (uvicorn).")
@click.option("--upstream", multiple=True, help="name=URL of a subsystem served elsewhere (gateway only).")
@click.option(
    "--no-consumers",
    is_flag=True,
    help="Serve HTTP only: leave the Kafka consumers and periodic jobs to `picool work` processes.",
)
def serve(
    subsystem: str | None,
    *,
    host: str | None,
    port: int | None,
    workers: int,
    upstream: tuple[str, ...],
    no_consumers: bool,
) -> None:
    """Run only the app against the servers the PICOOL_* variables name (production)."""
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    settings = _production_settings(host=host, port=port, consumers_enabled=False if no_consumers else None)
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
        if no_consumers:
            env["PICOOL_CONSUMERS_ENABLED"] = "false"
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
@click.argument("subsystem", required=False, type=click.Choice(["all", "auth", "run", "coupon"]))
@click.option("--ready-timeout", default=60.0, show_default=True, type=float,
              help="Seconds to wait for the consumers to join their groups before saying so.")  # fmt: skip
@click.option("--metrics-port", default=None, type=int,
              help="Serve /healthz, /readyz and /metrics (consumer lag, outbox backlog) on this port.")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def work(subsystem: str | None, *, ready_timeout: float, metrics_port: int | None, metrics_host: str) -> None:
    """Run only the background work against the PICOOL_* servers: the Kafka consumers (claims to
    PostgreSQL, rewards), the periodic jobs (claim reconciler, expiry sweeps) and the outbox relay; no API.

    The other half of `picool serve --no-consumers`: the serving processes answer requests and nothing
    else, and as many `picool work` processes as the load needs share the consumer groups. SIGTERM or
    Ctrl-C stops it in order (consumers drain what they hold and commit).
    """
    settings = _production_settings(workers_enabled=True, consumers_enabled=True)
    names = [subsystem] if subsystem and subsystem != "all" else None
    metrics = (metrics_host, metrics_port) if metrics_port is not None else None
    sys.exit(_work(settings, names, ready_timeout, metrics))


def _work(
    settings: Settings, subsystems: list[str] | None, ready_timeout: float, metrics: tuple[str, int] | None
) -> int:
    import uvicorn
    import uvloop

    from gateway.app import create_app, create_management_app

    class SignalFreeServer(uvicorn.Server):
        """uvicorn, leaving SIGINT/SIGTERM to this command (which stops it itself, after the consumers)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    # The whole app is built (never served): its lifespan starts the kernel, and in-process calls between
    # subsystems (a service token from auth, say) go through its ASGI handler as in `picool serve`.
    app = create_app(settings, subsystems)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with app.lifespan():
            kernel = app.state.kernel
            server: uvicorn.Server | None = None
            served: asyncio.Task[None] | None = None
            if metrics is not None:
                config = uvicorn.Config(
                    create_management_app(kernel), host=metrics[0], port=metrics[1], lifespan="off",
                    log_config=None, access_log=False, loop="none", http="httptools",
                )  # fmt: skip
                server = SignalFreeServer(config)
                served = asyncio.create_task(server.serve())
            consumers = ", ".join(c.name for c in kernel.consumers) or "none"
            ready = asyncio.ensure_future(kernel.wait_consumers_ready(ready_timeout))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)  # a stop need not wait
            if not ready.done():
                ready.cancel()
            elif ready.exception() is not None:
                _echo(f"Picool work: consumers not assigned partitions after {ready_timeout:g}s; still trying")
            else:
                _echo(f"Picool work: ready (consumers: {consumers}); Ctrl-C or SIGTERM stops it")
            await stopped
            _echo("Picool work: stopping (consumers drain and commit) ...")
            if server is not None and served is not None:
                server.should_exit = True
                await served
        _echo("Picool work: stopped.")

    tune_for_serving()
    uvloop.run(run())
    return 0
