"""The composition root: builds the one ASGI app with the chosen subsystems mounted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

import auth.app as auth_app
import coupon.app as coupon_app
import run.app as run_app
from gateway import health
from picool import errors, web
from picool.kernel import Kernel
from picool.logs import configure_logging
from picool.settings import Settings
from picool.subsystem import Subsystem

SUBSYSTEMS = {"auth": auth_app.create, "run": run_app.create, "coupon": coupon_app.create}


def create_app(settings: Settings | None = None, subsystems: Sequence[str] | None = None) -> Litestar:
    """The Picool app for ``settings`` (default: the environment) serving ``subsystems`` (default: all)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_json)
    names = list(subsystems or settings.csv(settings.extra.get("subsystems", "")) or SUBSYSTEMS)
    unknown = [n for n in names if n not in SUBSYSTEMS]
    if unknown:
        raise ValueError(f"unknown subsystem(s): {', '.join(unknown)}")
    kernel = Kernel(settings)
    mounted: list[Subsystem] = [SUBSYSTEMS[n](kernel) for n in names]
    kernel.subsystems = mounted

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        kernel.app = app
        await kernel.start()
        try:
            yield
        finally:
            await kernel.stop()

    handlers: list[Any] = [health.healthz, health.readyz]
    for sub in mounted:
        handlers += sub.route_handlers

    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        state=AppConfig().state,
        dependencies={
            "db_session": Provide(web.provide_db_session),
            "identity": Provide(web.provide_identity),
            "kernel": Provide(web.provide_kernel, sync_to_thread=False),
        },
        middleware=[DefineMiddleware(web.RequestIdMiddleware), DefineMiddleware(web.EdgeAuthMiddleware)],
        exception_handlers=errors.exception_handlers(),
        openapi_config=OpenAPIConfig(
            title="Picool",
            version="1.0.0",
            path="/schema",
            description="Running tasks, coupons and single sign-on.",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                }
            ),
        ),
        debug=False,
        logging_config=None,
    )
    app.state.kernel = kernel
    app.state.settings = settings
    return app


def create_app_from_env() -> Litestar:
    """Factory for ``uvicorn --factory`` (used by ``picool serve --workers N``)."""
    return create_app()
