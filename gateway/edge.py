"""Edge hygiene for every request: security headers, a request timeout, rate limits and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from picool import metrics
from picool.kernel import Kernel
from picool.ratelimit import Decision, Limit, RateLimiter, RouteLimits
from picool.settings import Settings
from picool.tokens import Identity
from picool.web import client_ip

log = logging.getLogger("picool.edge")

EXEMPT = ("/healthz", "/readyz", "/metrics")
# Route groups, first match wins. Login-like endpoints get their own (tighter) group.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "auth",
        ("/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/merchants", "/oauth2/token", "/login"),
    ),
    ("default", ("/",)),
]


def _problem(status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None) -> list[Message]:
    body = json.dumps({"type": f"https://picool.dev/problems/{code}", "title": title, "status": status,
                       "detail": detail, "code": code}).encode()  # fmt: skip
    raw = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return [
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]


@dataclass(frozen=True)
class GroupLimits:
    """The per-IP and per-user limits of one route group."""

    ip: Limit | None
    user: Limit | None


def parse_rate_limits(spec: str) -> dict[str, GroupLimits]:
    """Parse ``PICOOL_RATE_LIMITS`` (``group:ip=N/S,user=N/S;...``)."""
    out: dict[str, GroupLimits] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        group, _, rest = part.partition(":")
        limits: dict[str, Limit] = {}
        for item in filter(None, (i.strip() for i in rest.split(","))):
            by, _, value = item.partition("=")
            if by not in {"ip", "user"}:
                raise ValueError(f"PICOOL_RATE_LIMITS: unknown key {by!r} in {part!r} (use ip= or user=)")
            limits[by] = Limit.parse(value)
        out[group.strip()] = GroupLimits(limits.get("ip"), limits.get("user"))
    return out


# GROUPS as group_of reads them: per group, its exact paths and the prefixes of their sub-paths (every
# request asks, so the prefixes are made once).
_MATCHERS = [
    (name, frozenset(prefixes), tuple(p.rstrip("/") + "/" for p in prefixes), "/" in prefixes)
    for name, prefixes in GROUPS
]


def group_of(path: str) -> str:
    """The rate-limit group of ``path``."""
    for name, exact, under, everything in _MATCHERS:
        if everything or path in exact or path.startswith(under):
            return name
    return "default"


class EdgeMiddleware:
    """Outermost-but-one layer (inside the request-id middleware, after the token check).

    - rate limits per IP and per user for the request's route group, and those a subsystem put on the
      route (:class:`picool.ratelimit.RouteLimits`), all in one Redis round trip → 429 problem with
      ``Retry-After`` and ``RateLimit-*`` headers (the headers are on admitted responses too);
    - security headers on every response;
    - a request timeout → 504 problem if the handler has not started answering in time;
    - request count and latency per route template.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limits: dict[str, GroupLimits] | None = None
        self._limiter: RateLimiter | None = None
        self._route_limits: list[RouteLimits] = []
        self._trusted: frozenset[str] = frozenset()
        self._settings: Settings | None = None

    def _setup(self, scope: Scope) -> None:
        kernel: Kernel = scope["app"].state.kernel
        self._settings = kernel.settings
        self._limits = parse_rate_limits(kernel.settings.rate_limits)
        self._limiter = RateLimiter(kernel.redis)
        self._route_limits = [r for sub in kernel.subsystems for r in sub.route_limits]
        self._trusted = frozenset(kernel.settings.csv(kernel.settings.trusted_proxies))

    async def _check_limits(self, scope: Scope) -> tuple[Decision | None, str]:
        """The request's limits in one round trip: the refusing decision and the problem detail, else the
        tightest admitting decision (for the headers) or None when no limit applies."""
        assert self._limits is not None and self._limiter is not None
        path: str = scope["path"]
        group = group_of(path)
        limits = self._limits.get(group) or self._limits.get("default")
        ident = scope.get("state", {}).get("identity")
        user_id = ident.user_id if isinstance(ident, Identity) else None
        ip: str | None = None
        # (metrics label, by, key, limit, the route's limits or None for the group's)
        checks: list[tuple[str, str, str, Limit, RouteLimits | None]] = []
        if limits is not None:
            if limits.ip is not None:
                ip = client_ip(scope, self._trusted)
                checks.append((group, "ip", f"{{ip:{ip}}}:{group}", limits.ip, None))
            if limits.user is not None and user_id is not None:
                checks.append((group, "user", f"{{user:{user_id}}}:{group}", limits.user, None))
        method = str(scope.get("method", ""))
        for limited in self._route_limits:
            if not limited.applies(method, path):
                continue
            if limited.per_ip is not None:
                ip = ip or client_ip(scope, self._trusted)
                checks.append((limited.name, "ip", f"{{ip:{ip}}}:{limited.name}", limited.per_ip, limited))
            if limited.per_user is not None and user_id is not None:
                checks.append((limited.name, "user", f"{{user:{user_id}}}:{limited.name}", limited.per_user, limited))
        if not checks:
            return None, ""
        try:
            # One round trip, one script call per subject (the keys of one address, or of one account, share
            # a hash tag); each limit counts the request whatever the others decide.
            decisions = await self._limiter.hit_many([(key, limit) for _label, _by, key, limit, _route in checks])
        except Exception:
            log.warning("rate limiter unavailable; admitting", exc_info=True)
            return None, ""
        tightest: Decision | None = None
        for (label, by, _key, _limit, route), decision in zip(checks, decisions, strict=True):
            if not decision.allowed:
                metrics.RATE_LIMITED.labels(label, by).inc()
                if route is None:
                    return decision, f"Rate limit exceeded; retry in {decision.retry_after_s}s."
                if route.on_refused is not None:
                    route.on_refused(path, by)
                return decision, route.refusal(by, decision)
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        return tightest, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        if self._settings is None:
            self._setup(scope)
        assert self._settings is not None
        settings = self._settings
        start = time.perf_counter()
        status = 500
        started = False
        decision: Decision | None = None
        refusal = ""
        exempt = scope["path"] in EXEMPT or scope["method"] == "OPTIONS"
        if not exempt:
            decision, refusal = await self._check_limits(scope)
        extra = dict(decision.headers()) if decision is not None else {}
        secure = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if not settings.is_dev:
            secure.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        extra_raw = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in secure if k not in names]
                headers += extra_raw
                if b"content-type" in names:
                    ctype = dict(headers).get(b"content-type", b"")
                    if b"json" in ctype and b"content-security-policy" not in names:
                        headers.append((b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
                message["headers"] = headers
            await send(message)

        try:
            if decision is not None and not decision.allowed:
                for msg in _problem(429, "rate_limited", "Too many requests", refusal):
                    await send_wrapper(msg)
                return
            try:
                async with asyncio.timeout(settings.request_timeout_s):  # no extra task, unlike wait_for
                    await self.app(scope, receive, send_wrapper)
            except TimeoutError:
                log.warning("request timed out: %s %s", scope["method"], scope["path"])
                if not started:
                    for msg in _problem(504, "gateway_timeout", "Gateway timeout",
                                        f"The request took longer than {settings.request_timeout_s}s."):  # fmt: skip
                        await send_wrapper(msg)
        finally:
            # A request no route took (a 404, or one the edge answered itself: 429, 504) is counted under one
            # label, never its raw path: every id in a path would be a series of its own.
            route = scope.get("path_template") or ("unmatched" if status == 404 else "unrouted")
            metrics.child(metrics.REQUESTS, scope["method"], route, str(status)).inc()
            metrics.child(metrics.LATENCY, scope["method"], route).observe(time.perf_counter() - start)
