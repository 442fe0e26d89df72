"""A fast lane for the hottest endpoints: a request it can answer skips litestar's routing, parameter
layer and response objects; every other request goes on to litestar unchanged.

The flash-sale claim is the one endpoint that thousands call in the same second, and litestar's own work
(routing, signature model, kwargs, ``Response``, the exception middleware) was about a fifth of its
CPU. A subsystem lists :class:`FastRoute`\\ s; the gateway puts :class:`FastLane` inside the edge (rate
limits, security headers, timeouts, metrics and the access log apply as before) and in front of litestar.

The litestar handler of the same route stays: it documents the route (OpenAPI) and answers whatever the
fast lane declines. An endpoint declines (returns None) what it does not check itself, so those requests
get litestar's answers; the lane itself declines browser requests (an ``Origin`` header: litestar's CORS
middleware answers them). A :class:`~picool.errors.DomainError` becomes the same
``application/problem+json`` answer as litestar's exception handler gives; anything else is logged and
answered 500, as there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Receive, Scope, Send
from prometheus_client.metrics import Counter as CounterChild

from picool import metrics
from picool.errors import PROBLEM_JSON, DomainError, internal_error_content, problem_content

log = logging.getLogger("picool.fastlane")

_ENCODE = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Answer:
    """What a fast endpoint answers: a status and a JSON document (any msgspec-encodable value)."""

    status: int
    content: Any


FastEndpoint = Callable[[Scope, "re.Match[str]"], Awaitable[Answer | None]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    """``method`` requests whose whole path matches ``pattern`` go to ``endpoint`` (with the match).
    ``path_template`` is the route's name as litestar gives it (the metrics label), so both lanes count
    under one route."""

    method: str
    pattern: re.Pattern[str]
    path_template: str
    endpoint: FastEndpoint


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of the request header ``name`` (lower case), in order."""
    return [v for k, v in scope["headers"] if k == name]


class FastLane:
    """ASGI middleware: serve ``routes`` here when their endpoint answers, else pass to ``app``."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute]) -> None:
        self.app = app
        # Per method: each route with its two counters (labels bound once, not per request).
        lanes = metrics.FAST_LANE
        self._routes: Mapping[str, tuple[tuple[FastRoute, CounterChild, CounterChild], ...]] = {
            m: tuple(
                (r, lanes.labels(r.path_template, "fast"), lanes.labels(r.path_template, "declined"))
                for r in routes
                if r.method == m
            )
            for m in {r.method for r in routes}
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        for route, fast, declined in self._routes.get(scope["method"], ()):
            match = route.pattern.fullmatch(scope["path"])
            if match is None:
                continue
            if not header_values(scope, b"origin") and await self._serve(route, match, scope, send):
                fast.inc()
                return
            declined.inc()
            break
        await self.app(scope, receive, send)

    async def _serve(self, route: FastRoute, match: re.Match[str], scope: HTTPScope, send: Send) -> bool:
        headers: list[tuple[bytes, bytes]] = []
        media = b"application/json"
        rid = scope.get("state", {}).get("request_id")
        try:
            answer = await route.endpoint(scope, match)
            if answer is None:
                return False
        except DomainError as exc:
            content = problem_content(
                exc.status, exc.instance_code, exc.title, exc.detail, errors=exc.errors, request_id=rid
            )
            answer = Answer(exc.status, content)
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
            media = PROBLEM_JSON.encode()
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            answer = Answer(500, internal_error_content(rid))
            media = PROBLEM_JSON.encode()
        scope["path_template"] = route.path_template
        body = _ENCODE(answer.content)
        headers += [(b"content-type", media), (b"content-length", str(len(body)).encode())]
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": answer.status, "headers": headers}
        await send(start)
        done: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
        await send(done)
        return True
