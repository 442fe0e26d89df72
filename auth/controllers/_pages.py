"""The server-rendered login page (GET/POST /login) with a CSRF token bound to a cookie."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import jinja2
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from auth import domain, service
from auth.controllers._common import (
    CSRF_COOKIE,
    NO_STORE,
    SSO_COOKIE,
    DbSession,
    KernelDep,
    client_ip,
    single_valued_form,
    sso_cookie,
)
from picool.errors import TooManyRequests

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("auth", "templates"), autoescape=jinja2.select_autoescape(default=True)
)
# The page never loads anything from elsewhere and may not be framed (clickjacking).
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def render(
    template: str, *, status: int = 200, cookies: list[Cookie] | None = None, headers: dict[str, str] | None = None,
    **ctx: Any,
) -> Response[str]:  # fmt: skip
    """An HTML page from ``auth/templates`` with the page's security headers."""
    html = _env.get_template(template).render(**ctx)
    return Response(
        html, status_code=status, media_type=MediaType.HTML, headers={**PAGE_HEADERS, **(headers or {})},
        cookies=cookies or [],
    )  # fmt: skip


def _csrf_token(secret_key: str, cookie: str) -> str:
    # The form field is a MAC of the cookie: a cross-site form can neither read the cookie nor forge the MAC.
    return hmac.new(secret_key.encode(), b"login-csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def _csrf_cookie(kernel: KernelDep, value: str) -> Cookie:
    return Cookie(
        key=CSRF_COOKIE, value=value, path="/login", httponly=True, samesite="lax", secure=not kernel.settings.is_dev
    )


def _form_page(
    kernel: KernelDep, request: Request[Any, Any, Any], *, next_url: str, status: int = 200, **ctx: Any
) -> Response[str]:
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    cookies = []
    if not (16 <= len(cookie) <= 100):
        cookie = secrets.token_urlsafe(32)
        cookies.append(_csrf_cookie(kernel, cookie))
    return render(
        "login.html",
        status=status,
        cookies=cookies,
        csrf=_csrf_token(kernel.settings.secret_key, cookie),
        next_url=next_url,
        **ctx,
    )


@get("/login", media_type=MediaType.HTML, tags=["auth"], include_in_schema=False)
async def login_page(request: Request[Any, Any, Any], db_session: DbSession, kernel: KernelDep) -> Response[Any]:
    """The sign-in form; with a live SSO session it goes straight on to ``next`` (or says who is signed in)."""
    svc = service.services_of(kernel)
    raw_next = request.query_params.get("next")
    next_url = domain.safe_next(raw_next, "/login")
    sso = await svc.sessions.get(request.cookies.get(SSO_COOKIE))
    user = await service.get_user(db_session, sso.user_id) if sso is not None else None
    if user is not None and not user.frozen:
        if raw_next and next_url != "/login":
            return Redirect(next_url, status_code=303, headers=NO_STORE)
        return render("signed_in.html", display_name=user.display_name, email=user.email)
    return _form_page(kernel, request, next_url=next_url)


@post("/login", media_type=MediaType.HTML, tags=["auth"], include_in_schema=False, status_code=200)
async def login_submit(request: Request[Any, Any, Any], db_session: DbSession, kernel: KernelDep) -> Response[Any]:
    """Check the CSRF token and the password; on success set the SSO cookie and go on to ``next``."""
    svc = service.services_of(kernel)
    form, _dup = await single_valued_form(request)
    next_url = domain.safe_next(form.get("next"), "/login")
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    sent = form.get("csrf", "")
    expected = _csrf_token(kernel.settings.secret_key, cookie)
    if not cookie or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _form_page(
            kernel, request, next_url=next_url, status=403, error="Your sign-in form expired. Please try again."
        )
    email = form.get("email", "")
    try:
        signed = await service.sign_in(
            db_session,
            svc.throttle,
            svc.sessions,
            email=email,
            password=form.get("password", ""),
            ip=client_ip(request, kernel.settings),
        )
    except TooManyRequests as exc:
        return _form_page(
            kernel, request, next_url=next_url, status=429, email=email,
            error="Too many failed attempts. Please wait and try again.", headers=exc.headers,
        )  # fmt: skip
    except service.InvalidCredentials:
        return _form_page(kernel, request, next_url=next_url, status=401, email=email, error="Wrong email or password.")
    except service.AccountFrozen:
        return _form_page(kernel, request, next_url=next_url, status=403, email=email, error="This account is frozen.")
    return Redirect(next_url, status_code=303, headers=NO_STORE, cookies=[sso_cookie(kernel.settings, signed.cookie)])
