"""Bits the auth controllers share: cookie names, client IP, form parsing, no-store headers."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from auth.service import _sessions
from picool import web
from picool.kernel import Kernel
from picool.settings import Settings
from picool.tokens import Identity

# Handler parameters filled by the app's named dependencies (picool.web).
DbSession = NamedDependency[AsyncSession]
KernelDep = NamedDependency[Kernel]
IdentityDep = NamedDependency[Identity]

SSO_COOKIE = "picool_sso"
CSRF_COOKIE = "picool_csrf"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def client_ip(request: Request[Any, Any, Any], settings: Settings) -> str:
    """The caller's address as the login throttle counts it (X-Forwarded-For only from trusted proxies)."""
    return web.client_ip(request.scope, frozenset(settings.csv(settings.trusted_proxies)))


def sso_cookie(settings: Settings, value: str) -> Cookie:
    """The SSO session cookie: HttpOnly, SameSite=Lax, Secure outside dev."""
    return Cookie(
        key=SSO_COOKIE,
        value=value,
        max_age=_sessions.SSO_TTL_S,
        path="/",
        httponly=True,
        samesite="lax",
        secure=not settings.is_dev,
    )


def clear_sso_cookie(settings: Settings) -> Cookie:
    """A Set-Cookie that removes the SSO cookie."""
    return Cookie(
        key=SSO_COOKIE, value="", max_age=0, path="/", httponly=True, samesite="lax", secure=not settings.is_dev
    )


async def single_valued_form(request: Request[Any, Any, Any]) -> tuple[dict[str, str], bool]:
    """The urlencoded form as a dict, and whether some parameter came more than once (RFC 6749 §3.1)."""
    form = await request.form()
    out: dict[str, str] = {}
    duplicated = False
    for key, value in form.multi_items():
        if not isinstance(value, str):
            continue
        if key in out:
            duplicated = True
        out[key] = value
    return out, duplicated
