"""The claim API: template and flash claims, flash sessions and the claim deny list."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Protocol

from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import Scope

from coupon import schemas
from coupon import service as coupon_service
from coupon.controllers._guards import actor_of, roles
from coupon.controllers._request import (
    IDEMPOTENCY_KEY_CHARS,
    IDEMPOTENCY_KEY_MAX,
    IdempotencyKey,
    field_id,
    path_id,
    utcnow,
)
from coupon.controllers._shapes import coupon_out, denial_out, flash_out
from picool import web
from picool.fastlane import Answer, FastEndpoint, FastRoute, header_values
from picool.kernel import Kernel
from picool.tokens import Identity


class ClaimService(Protocol):
    """The shape of the two claim use cases (:func:`coupon_service.claim_template`, ``claim_flash``)."""

    def __call__(
        self,
        kernel: Kernel,
        actor: coupon_service.Actor,
        target_id: int,
        /,
        *,
        idempotency_key: str | None,
        now: datetime,
    ) -> Awaitable[coupon_service.CouponRecord]: ...


async def _claim(
    kernel: Kernel,
    scope: Scope,
    claim: ClaimService,
    target_id: str,
    what: str,
    *,
    idempotency_key: str | None,
) -> schemas.Coupon:
    """One claim as both claim endpoints answer it, in either lane: 401 without a valid token, 403 for
    other roles than ``runner``, 404 for a path id naming no ``what``, then whatever ``claim`` decides."""
    # The checks keep the order the two handlers had on their own: role, then the path id.
    identity = web.require_role(web.identity_in(scope), "runner")
    now = utcnow()
    record = await claim(
        kernel,
        actor_of(identity),
        path_id(target_id, what),
        idempotency_key=idempotency_key,
        now=now,
    )
    return coupon_out(record, now)


# The fast lane (picool.fastlane) serves the two claim routes without litestar's per-request machinery;
# the litestar handlers below document them and answer what the fast lane leaves to them: browser
# (CORS) requests and an Idempotency-Key that is not one printable-ASCII value of 1-128 characters
# (litestar's parameter validation words that 400).
_KEY_OK = re.compile(f"[{IDEMPOTENCY_KEY_CHARS}]{{1,{IDEMPOTENCY_KEY_MAX}}}".encode())


def _fast_claim(claim: ClaimService, what: str) -> FastEndpoint:
    async def endpoint(scope: Scope, match: re.Match[str]) -> Answer | None:
        keys = header_values(scope, b"idempotency-key")
        if len(keys) > 1 or (keys and _KEY_OK.fullmatch(keys[0]) is None):
            return None
        kernel: Kernel = scope["app"].state.kernel
        key = keys[0].decode("ascii") if keys else None
        return Answer(201, await _claim(kernel, scope, claim, match["id"], what, idempotency_key=key))

    return endpoint


FAST_ROUTES = [
    FastRoute(
        "POST",
        re.compile(r"/api/v1/coupon/templates/(?P<id>[^/]+)/claims"),
        "/api/v1/coupon/templates/{template_id}/claims",
        _fast_claim(coupon_service.claim_template, "coupon template"),
    ),
    FastRoute(
        "POST",
        re.compile(r"/api/v1/coupon/flash-sessions/(?P<id>[^/]+)/claims"),
        "/api/v1/coupon/flash-sessions/{session_id}/claims",
        _fast_claim(coupon_service.claim_flash, "flash session"),
    ),
]


class ClaimController(Controller):
    """Claims (template and flash), flash sessions and the claim deny list."""

    path = "/api/v1/coupon"
    tags = ("coupon",)
    security = ({"bearer": []},)

    # The two claim endpoints are the hottest in the system: most of their requests are served by the
    # fast lane (FAST_ROUTES above). Here too they take the kernel and the identity from the request
    # itself rather than through dependency injection, and check the role in the handler rather than in
    # a guard (litestar copies the handler for every guard call). Same answers: 401 without a valid
    # token, 403 for other roles.
    @post("/templates/{template_id:str}/claims", status_code=201)
    async def claim_template(
        self, template_id: FromPath[str], request: Request[Any, Any, Any], idempotency_key: IdempotencyKey = None
    ) -> schemas.Coupon:
        """Claim one coupon of a ``claim`` template (runners). A repeated ``Idempotency-Key`` returns the
        first claim."""
        kernel: Kernel = request.app.state.kernel
        claim = coupon_service.claim_template
        return await _claim(
            kernel, request.scope, claim, template_id, "coupon template", idempotency_key=idempotency_key
        )

    @post("/flash-sessions", guards=[roles("operator")], status_code=201)
    async def create_flash_session(
        self, data: JSONBody[schemas.FlashSessionCreate], identity: Identity, kernel: Kernel
    ) -> schemas.FlashSession:
        """Create a flash session of a platform ``claim`` template; its stock leaves the template's pool."""
        template_id = field_id(data.template_id, "template_id: must be a template id")
        new = coupon_service.NewFlashSession(
            template_id=template_id, starts_at=data.starts_at, ends_at=data.ends_at, stock=data.stock
        )
        record = await coupon_service.create_session(kernel, actor_of(identity), new, utcnow())
        return flash_out(record, record.stock)

    @get("/flash-sessions", security=[])
    async def flash_sessions(
        self, kernel: Kernel, date: Annotated[str | None, QueryParameter(max_length=32)] = None
    ) -> schemas.FlashSessionList:
        """The flash sessions overlapping a UTC day (default today), open or not yet; no sign-in needed."""
        day = coupon_service.parse_day(date, utcnow())
        found = await coupon_service.sessions_of_day(kernel, day)
        return schemas.FlashSessionList(items=[flash_out(s, left) for s, left in found])

    @post("/flash-sessions/{session_id:str}/claims", status_code=201)
    async def claim_flash(
        self, session_id: FromPath[str], request: Request[Any, Any, Any], idempotency_key: IdempotencyKey = None
    ) -> schemas.Coupon:
        """Grab one coupon of a flash session (runners). A repeated ``Idempotency-Key`` returns the first
        claim."""
        kernel: Kernel = request.app.state.kernel
        claim = coupon_service.claim_flash
        return await _claim(kernel, request.scope, claim, session_id, "flash session", idempotency_key=idempotency_key)

    @post("/claim-denylist", guards=[roles("operator")], status_code=201)
    async def deny(
        self, data: JSONBody[schemas.DenylistCreate], identity: Identity, kernel: Kernel
    ) -> schemas.DenylistEntry:
        """Bar an account from claiming coupons (checked before every claim)."""
        user_id = field_id(data.user_id, "user_id: must be an account id")
        row = await coupon_service.deny_claims(kernel, actor_of(identity), user_id, data.reason.strip())
        return denial_out(row)

    @get("/claim-denylist", guards=[roles("operator")])
    async def denylist(self, identity: Identity, kernel: Kernel) -> schemas.DenylistList:
        """The accounts barred from claiming, newest first."""
        rows = await coupon_service.denied(kernel, actor_of(identity))
        return schemas.DenylistList(items=[denial_out(r) for r in rows])

    @delete("/claim-denylist/{user_id:str}", guards=[roles("operator")], status_code=204)
    async def allow(self, user_id: FromPath[str], identity: Identity, kernel: Kernel) -> None:
        """Lift a bar (204 whether or not there was one)."""
        await coupon_service.allow_claims(kernel, actor_of(identity), path_id(user_id, "account"))
