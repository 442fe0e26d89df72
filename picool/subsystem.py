"""What a subsystem package (auth, run, coupon) hands the gateway: routes, workers and hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picool.fastlane import FastRoute
    from picool.kafka import ConsumerWorker
    from picool.kernel import Kernel
    from picool.ratelimit import RouteLimits
    from picool.workers import Periodic

Hook = Callable[["Kernel"], Awaitable[None]]


@dataclass
class Subsystem:
    """One subsystem as mounted in an app.

    ``route_handlers`` are litestar routers/controllers; ``consumers`` and ``periodics`` run in the
    background while the app runs; ``on_startup`` hooks run after the kernel is connected;
    ``route_limits`` are rate limits of some of its routes, which the edge checks with the route group's;
    ``fast_routes`` are hot routes the gateway serves before litestar (:mod:`picool.fastlane`).
    """

    name: str
    route_handlers: list[Any] = field(default_factory=list)
    consumers: list[ConsumerWorker] = field(default_factory=list)
    periodics: list[Periodic] = field(default_factory=list)
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    route_limits: list[RouteLimits] = field(default_factory=list)
    fast_routes: list[FastRoute] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
