"""Who may call: the role guards of the coupon API and the service-level actor of a verified caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from coupon import service as coupon_service
from picool import web
from picool.errors import Forbidden
from picool.ids import parse_id_str
from picool.tokens import Identity

# Guards are coroutines: litestar runs a plain-function guard in a worker thread (a thread hop on every
# request: ~10 % of a cached wallet read's CPU under bench/wallet.py load, py-spy).
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def roles(*allowed: str) -> Guard:
    """A guard letting through callers with one of ``allowed`` roles (401 without a valid token, 403 else)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        identity = web.identity_of(connection)  # type: ignore[arg-type]
        web.require_role(identity, *allowed)

    return guard


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard letting through any caller with a valid token (401 otherwise)."""
    web.identity_of(connection)  # type: ignore[arg-type]


def actor_of(identity: Identity) -> coupon_service.Actor:
    """The service-level actor of a verified caller; 403 when its ids are not Picool ids."""
    user_id = parse_id_str(identity.user_id)
    merchant_id = parse_id_str(identity.merchant_id) if identity.merchant_id else None
    if user_id is None or (identity.merchant_id and merchant_id is None):
        raise Forbidden("This token does not name a Picool account.")
    return coupon_service.Actor(user_id=user_id, role=identity.role, merchant_id=merchant_id)
