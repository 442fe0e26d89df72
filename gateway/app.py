"""The composition root: builds the one ASGI app with the chosen subsystems mounted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

import auth.app as auth_app
import coupon.app as coupon_app

# The merchant portal is the gateway's own web client (static pages over the public API), not a
# subsystem, so the composition root mounts it next to the subsystems' app modules.
import portal.app as portal_app
import run.app as run_app
from gateway import edge, health, proxy
from gateway import metrics as gateway_metrics
from picool import errors, web
from picool.fastlane import FastLane
from picool.gc_tuning import tune_for_serving
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
    upstreams: list[proxy.Upstream] = []
    if settings.extra.get("gateway_proxy"):
        # Split deployment: subsystems with an upstream URL are forwarded, the rest served here.
        for name in list(names):
            url = settings.extra.get(f"upstream_{name}")
            if url:
                upstreams.append(
                    proxy.Upstream(
                        name, url, read_timeout_s=settings.upstream_timeout_s, retries=settings.upstream_retries
                    )
                )
                names.remove(name)
    mounted: list[Subsystem] = [SUBSYSTEMS[n](kernel) for n in names]
    kernel.subsystems = mounted

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        kernel.app = app
        await kernel.start()
        try:
            yield
        finally:
            for up in upstreams:
                await up.close()
            await kernel.stop()

    handlers: list[Any] = [health.healthz, health.readyz, health.ping, gateway_metrics.metrics_endpoint]
    for sub in mounted:
        handlers += sub.route_handlers
    for up in upstreams:
        handlers += proxy.proxy_handlers(up)
    handlers += portal_app.route_handlers(settings)

    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        state=AppConfig().state,
        dependencies={
            "db_session": Provide(web.provide_db_session),
            "identity": Provide(web.provide_identity),
            "kernel": Provide(web.provide_kernel, sync_to_thread=False),
        },
        cors_config=CORSConfig(
            allow_origins=settings.csv(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"],
            expose_headers=["X-Request-ID", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"],
            allow_credentials=True,
            max_age=600,
        ),
        request_max_body_size=settings.max_body_bytes,
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
    # The edge wraps Litestar's whole ASGI handler, not a route's, so unmatched paths (404/405) get
    # request ids, security headers, rate limits and metrics too. The fast lane (the hottest routes,
    # served without litestar's per-request machinery) sits inside the edge, in front of litestar.
    fast = FastLane(app.asgi_handler, [r for sub in mounted for r in sub.fast_routes])
    app.asgi_handler = web.RequestIdMiddleware(web.EdgeAuthMiddleware(edge.EdgeMiddleware(fast)))
    app.state.kernel = kernel
    app.state.settings = settings
    return app


def create_app_from_env() -> Litestar:
    """Factory for ``uvicorn --factory`` (used by ``picool serve --workers N``): each worker process builds
    its app, then sets its garbage collector for serving (see :mod:`picool.gc_tuning`)."""
    app = create_app()
    tune_for_serving()
    return app


def create_management_app(kernel: Kernel) -> Litestar:
    """``/healthz``, ``/readyz`` and ``/metrics`` of ``kernel``'s process and nothing else: what a process
    that serves no API (``picool work --metrics-port``) shows its orchestrator and Prometheus."""
    app = Litestar(
        route_handlers=[health.healthz, health.readyz, gateway_metrics.metrics_endpoint],
        openapi_config=None,
        debug=False,
        logging_config=None,
    )
    app.state.kernel = kernel
    return app
