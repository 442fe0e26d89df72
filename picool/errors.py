"""Domain errors and the one place that turns them into RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

log = logging.getLogger("picool.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """A business error with a stable snake_case ``code`` and the HTTP status that fits it."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.instance_code = code or self.code
        self.errors = errors
        self.headers = headers or {}


class InvalidRequest(DomainError):
    """The request is malformed or fails validation (400)."""

    status = 400
    code = "invalid_request"
    title = "Invalid request"


class Unauthorized(DomainError):
    """Missing or invalid credentials (401)."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str = "", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="picool"'})
        super().__init__(detail, **kw)


class Forbidden(DomainError):
    """Authenticated, but the role or ownership does not allow it (403)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(DomainError):
    """The resource does not exist or is not visible to the caller (404)."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    """The request conflicts with the resource's current state (409)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class TooManyRequests(DomainError):
    """A rate limit was hit (429)."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after_s: int = 1, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        headers.setdefault("Retry-After", str(max(1, int(retry_after_s))))
        super().__init__(detail, headers=headers, **kw)


class ServiceUnavailable(DomainError):
    """A dependency is down (503)."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    request: Request[Any, Any, Any] | None = None,
) -> Response[dict[str, Any]]:
    """Build one ``application/problem+json`` response."""
    rid = request.scope.get("state", {}).get("request_id") if request is not None else None
    body = problem_content(status, code, title, detail, errors=errors, request_id=rid)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_content(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The document of one ``application/problem+json`` answer (:func:`problem`, and the fast lane's)."""
    body: dict[str, Any] = {
        "type": f"https://picool.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    if request_id:
        body["request_id"] = request_id
    return body


def _domain_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, DomainError)
    return problem(
        exc.status,
        exc.instance_code,
        exc.title,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        request=request,
    )


def _validation_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ValidationException)
    errors: list[dict[str, Any]] = []
    extra = exc.extra
    if isinstance(extra, list):
        for item in extra:
            if isinstance(item, dict):
                error = {k: v for k, v in item.items() if k in {"key", "message", "source"}}
                if error.get("source") == "header":  # litestar names the handler's argument, not the header
                    error["key"] = _header_name(request, str(error.get("key", ""))) or error.get("key")
                errors.append(error)
    detail = exc.detail or "Validation failed"
    if errors:
        parts = [f"{e.get('key') or 'body'}: {e.get('message')}" for e in errors]
        detail = "; ".join(parts)
    return problem(400, "invalid_request", "Invalid request", detail, errors=errors or None, request=request)


def _header_name(request: Request[Any, Any, Any], argument: str) -> str | None:
    """The header a handler's ``argument`` is read from (``idempotency_key`` -> ``Idempotency-Key``)."""
    try:
        field = request.route_handler.parsed_fn_signature.parameters.get(argument)
    except (KeyError, AttributeError):  # no route handler in the scope: keep litestar's name
        return None
    kwarg = getattr(field, "kwarg_definition", None)
    # Parameter(header="X-A") names it in ``header``; HeaderParameter(name="X-A") in ``name``.
    for header in (getattr(kwarg, "header", None), getattr(kwarg, "name", None)):
        if isinstance(header, str) and header:
            return header
    return None


_STATUS_CODES = {
    400: ("invalid_request", "Invalid request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    408: ("request_timeout", "Request timeout"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
    502: ("bad_gateway", "Bad gateway"),
    503: ("service_unavailable", "Service unavailable"),
    504: ("gateway_timeout", "Gateway timeout"),
}


def _http_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status >= 500:
        log.error("server error", exc_info=exc)
    code, title = _STATUS_CODES.get(status, ("error", "Error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
    if status >= 500 and status not in (502, 503, 504):
        detail = "Internal server error"
    return problem(status, code, title, detail, headers=dict(exc.headers or {}), request=request)


def internal_error_content(request_id: str | None = None) -> dict[str, Any]:
    """The problem document of an unexpected error (litestar's handler and the fast lane's): it says
    nothing of the error itself, which is logged."""
    return problem_content(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal server error",
        "An unexpected error occurred; it has been logged.",
        request_id=request_id,
    )


def _internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    rid = request.scope.get("state", {}).get("request_id")
    return Response(
        content=internal_error_content(rid), status_code=HTTP_500_INTERNAL_SERVER_ERROR, media_type=PROBLEM_JSON
    )


def _recursion_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # litestar decodes a JSON body before validating it; msgspec refuses absurd nesting with a
    # RecursionError, which is the client's bad input, not our failure.
    if "deserializ" in str(exc):
        return problem(400, "invalid_request", "Invalid request", "The body is nested too deeply.", request=request)
    return _internal_handler(request, exc)


def exception_handlers() -> ExceptionHandlersMap:
    """The exception handlers every Picool app installs."""
    return {
        DomainError: _domain_handler,
        ValidationException: _validation_handler,
        NotAuthorizedException: _http_handler,
        PermissionDeniedException: _http_handler,
        NotFoundException: _http_handler,
        HTTPException: _http_handler,
        RecursionError: _recursion_handler,
        Exception: _internal_handler,
    }


__all__ = [
    "PROBLEM_JSON",
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidRequest",
    "MediaType",
    "NotFound",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "exception_handlers",
    "internal_error_content",
    "problem",
    "problem_content",
]
