"""The coupon HTTP API (``/api/v1/coupon/...``): parse, check the role, call the service, shape the answer.

Role checks are guards, so a caller without a token gets 401 and a caller with the wrong role gets
403 before the body is even read; bad bodies then get 400 ``invalid_request``. Path ids that are
not ids answer 404, like ids that name nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from litestar import Controller, Request, delete, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from coupon import domain as coupon_domain
from coupon import schemas
from coupon import service as coupon_service
from picool import web
from picool.errors import Forbidden, InvalidRequest, NotFound
from picool.ids import parse_id_str
from picool.kernel import Kernel
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


def path_id(text: str, what: str) -> int:
    """A path id as an int; 404 (nothing can have this id) otherwise."""
    value = parse_id_str(text)
    if value is None:
        raise NotFound(f"There is no {what} with this id.")
    return value


def body_id(text: str, problem: str) -> int:
    """An id given in a request body as an int; 400 ``invalid_request`` saying ``problem`` otherwise."""
    value = parse_id_str(text)
    if value is None:
        raise InvalidRequest(problem)
    return value


def page_cursor(cursor: str | None) -> int | None:
    """The id a ``?cursor=`` names (None for the first page); 400 when it is not a ``next_cursor``."""
    if cursor is None:
        return None
    return body_id(cursor, "cursor: must be a next_cursor from a previous page")


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


def template_out(t: coupon_service.TemplateRecord) -> schemas.Template:
    """The API shape of a template."""
    return schemas.Template(
        id=str(t.id),
        merchant_id=_str(t.merchant_id),
        name=t.name,
        description=t.description,
        rule=t.rule,
        validity=t.validity,
        total_count=t.total_count,
        per_user_limit=t.per_user_limit,
        distribution=t.distribution,
        status=t.status,
        created_at=t.created_at,
        rule_text=coupon_domain.describe_rule(t.parsed_rule()),
    )


def coupon_out(c: coupon_service.CouponRecord, now: datetime) -> schemas.Coupon:
    """The API shape of a coupon, with the status it shows at ``now``."""
    return schemas.Coupon(
        id=str(c.id),
        code=c.code,
        template_id=str(c.template_id),
        merchant_id=_str(c.merchant_id),
        user_id=str(c.user_id),
        status=c.effective_status(now),
        source=schemas.Source(kind=c.source_kind, ref=c.source_ref),
        received_at=c.received_at,
        valid_from=c.valid_from,
        valid_to=c.valid_to,
        used_at=c.used_at,
    )


def redemption_out(r: coupon_service.RedemptionResult) -> schemas.Redemption:
    """The API shape of a redemption answer."""
    return schemas.Redemption(
        transaction_id=str(r.transaction_id),
        coupon_id=str(r.coupon_id),
        discount_cents=r.discount_cents,
        payable_cents=r.payable_cents,
        redeemed_at=r.redeemed_at,
    )


def _items(items: list[schemas.OrderItem] | None) -> list[coupon_domain.OrderItem] | None:
    if items is None:
        return None
    return [coupon_domain.OrderItem(i.sku, i.category, i.price_cents, i.qty) for i in items]


def _now() -> datetime:
    return datetime.now(UTC)


class CouponController(Controller):
    """Templates, wallet, quotes, redemptions and operator actions."""

    path = "/api/v1/coupon"
    tags = ("coupon",)
    security = ({"bearer": []},)

    @post("/templates", guards=[roles("merchant", "operator")], status_code=201)
    async def create_template(
        self, data: JSONBody[schemas.TemplateCreate], identity: Identity, kernel: Kernel
    ) -> schemas.Template:
        """Create a coupon batch: a merchant's own, or (operator) a platform batch every merchant accepts."""
        new = coupon_service.NewTemplate(
            name=data.name,
            description=data.description or "",
            rule=data.rule,
            validity=data.validity,
            total_count=data.total_count,
            per_user_limit=data.per_user_limit,
            distribution=data.distribution,
        )
        record = await coupon_service.create_template(kernel, actor_of(identity), new)
        return template_out(record)

    @get("/templates", guards=[roles("merchant", "operator")])
    async def list_templates(
        self,
        identity: Identity,
        kernel: Kernel,
        cursor: Annotated[str | None, QueryParameter(max_length=20)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
    ) -> schemas.TemplateList:
        """The batches the caller manages, newest first: a merchant's own, an operator's platform batches."""
        before = page_cursor(cursor)
        items, next_cursor = await coupon_service.list_templates(kernel, actor_of(identity), before, limit)
        return schemas.TemplateList(items=[template_out(t) for t in items], next_cursor=_str(next_cursor))

    @get("/templates/{template_id:str}", guards=[authenticated])
    async def get_template(self, template_id: FromPath[str], kernel: Kernel) -> schemas.Template:
        """A coupon batch, for any signed-in caller (runners, merchants, operators, services)."""
        record = await coupon_service.require_template(kernel, path_id(template_id, "coupon template"))
        return template_out(record)

    @get("/templates/{template_id:str}/stats", guards=[roles("merchant", "operator")])
    async def template_stats(
        self, template_id: FromPath[str], identity: Identity, kernel: Kernel
    ) -> schemas.TemplateStats:
        """Exact counters of a batch, for its merchant or an operator."""
        stats = await coupon_service.template_stats(kernel, actor_of(identity), path_id(template_id, "coupon template"))
        return schemas.TemplateStats(
            template_id=str(stats.template_id),
            total=stats.total,
            assigned=stats.assigned,
            used=stats.used,
            remaining=stats.remaining,
        )

    @get("/me/coupons", guards=[roles("runner")])
    async def my_coupons(
        self,
        identity: Identity,
        kernel: Kernel,
        status: Annotated[str | None, QueryParameter(max_length=16)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=20)] = None,
    ) -> schemas.CouponList:
        """The caller's coupons, newest first, optionally only those showing ``status`` now."""
        actor = actor_of(identity)
        before = page_cursor(cursor)
        now = _now()
        items, next_cursor = await coupon_service.wallet_page(kernel, actor.user_id, status, now, before)
        return schemas.CouponList(items=[coupon_out(c, now) for c in items], next_cursor=_str(next_cursor))

    @get("/coupons/{coupon_id:str}", guards=[roles("runner", "operator")])
    async def get_coupon(self, coupon_id: FromPath[str], identity: Identity, kernel: Kernel) -> schemas.Coupon:
        """One coupon, for its owner or an operator."""
        record = await coupon_service.get_coupon(kernel, actor_of(identity), path_id(coupon_id, "coupon"))
        return coupon_out(record, _now())

    @post("/quotes", guards=[roles("runner")], status_code=200)
    async def quotes(
        self, data: JSONBody[schemas.QuoteRequest], identity: Identity, kernel: Kernel
    ) -> schemas.QuoteList:
        """The caller's coupons usable on this order at this merchant, best saving first."""
        actor = actor_of(identity)
        merchant_id = body_id(data.merchant_id, "merchant_id: must be a merchant id")
        items = _items(data.items) or []
        now = _now()
        amount, found = await coupon_service.quote(kernel, actor.user_id, merchant_id, items, now)
        return schemas.QuoteList(
            order_amount_cents=amount,
            items=[
                schemas.QuoteItem(
                    coupon=coupon_out(q.coupon, now),
                    discount_cents=q.discount_cents,
                    payable_cents=q.payable_cents,
                    description=q.description,
                )
                for q in found
            ],
        )

    @post("/redemptions", guards=[roles("merchant")], status_code=200)
    async def redeem(
        self, data: JSONBody[schemas.RedemptionCreate], identity: Identity, kernel: Kernel
    ) -> schemas.Redemption:
        """Redeem a code at the caller's till (idempotent on ``idempotency_key``)."""
        req = coupon_service.RedeemRequest(
            code=data.code,
            order_amount_cents=data.order_amount_cents,
            idempotency_key=data.idempotency_key,
            items=_items(data.items),
        )
        result = await coupon_service.redeem(kernel, actor_of(identity), req, _now())
        return redemption_out(result)

    @post("/redemptions/preview", guards=[roles("merchant")], status_code=200)
    async def preview_redemption(
        self, data: JSONBody[schemas.RedemptionPreviewRequest], identity: Identity, kernel: Kernel
    ) -> schemas.RedemptionPreview:
        """What redeeming this code for this order would take off, with every check of a redemption;
        nothing is redeemed (the till shows it before the cashier confirms)."""
        found = await coupon_service.preview_redemption(
            kernel, actor_of(identity), data.code, data.order_amount_cents, items=_items(data.items), now=_now()
        )
        return schemas.RedemptionPreview(
            code=found.coupon.code,
            coupon_id=str(found.coupon.id),
            template_id=str(found.template.id),
            template_name=found.template.name,
            rule_text=coupon_domain.describe_rule(found.template.parsed_rule()),
            order_amount_cents=found.order_amount_cents,
            discount_cents=found.discount_cents,
            payable_cents=found.payable_cents,
            valid_to=found.coupon.valid_to,
        )

    @post("/redemptions/{transaction_id:str}/reversal", guards=[roles("merchant")], status_code=200)
    async def reverse(self, transaction_id: FromPath[str], identity: Identity, kernel: Kernel) -> schemas.Coupon:
        """Reverse a redemption (refund): the coupon is unused again while still valid."""
        now = _now()
        record = await coupon_service.reverse(kernel, actor_of(identity), path_id(transaction_id, "redemption"), now)
        return coupon_out(record, now)

    @post("/coupons/{coupon_id:str}/freeze", guards=[roles("operator")], status_code=200)
    async def freeze(
        self,
        coupon_id: FromPath[str],
        identity: Identity,
        kernel: Kernel,
        data: JSONBody[schemas.StatusChange | None] = None,
    ) -> schemas.Coupon:
        """Freeze a coupon (risk control)."""
        return await self._set_frozen(coupon_id, identity, kernel, data, frozen=True)

    @post("/coupons/{coupon_id:str}/unfreeze", guards=[roles("operator")], status_code=200)
    async def unfreeze(
        self,
        coupon_id: FromPath[str],
        identity: Identity,
        kernel: Kernel,
        data: JSONBody[schemas.StatusChange | None] = None,
    ) -> schemas.Coupon:
        """Unfreeze a coupon."""
        return await self._set_frozen(coupon_id, identity, kernel, data, frozen=False)

    async def _set_frozen(
        self,
        coupon_id: FromPath[str],
        identity: Identity,
        kernel: Kernel,
        data: schemas.StatusChange | None,
        *,
        frozen: bool,
    ) -> schemas.Coupon:
        now = _now()
        record = await coupon_service.set_frozen(
            kernel,
            actor_of(identity),
            path_id(coupon_id, "coupon"),
            frozen=frozen,
            reason=data.reason if data else "",
            now=now,
        )
        return coupon_out(record, now)


# --------------------------------------------------------------------------- claims and flash sessions

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(name="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", required=False),
]


def flash_out(s: coupon_service.FlashSessionRecord, remaining: int) -> schemas.FlashSession:
    """The API shape of a flash session."""
    return schemas.FlashSession(
        id=str(s.id),
        template_id=str(s.template_id),
        starts_at=s.starts_at,
        ends_at=s.ends_at,
        stock=s.stock,
        remaining=remaining,
    )


def _client_ip(request: Request[Any, Any, Any], kernel: Kernel) -> str:
    return web.client_ip(request.scope, coupon_service.claim_guards(kernel).trusted_proxies)


class ClaimService(Protocol):
    """The shape of the two claim use cases (:func:`coupon_service.claim_template`, ``claim_flash``)."""

    def __call__(
        self,
        kernel: Kernel,
        actor: coupon_service.Actor,
        target_id: int,
        /,
        *,
        ip: str,
        idempotency_key: str | None,
        now: datetime,
    ) -> Awaitable[coupon_service.CouponRecord]: ...


async def _claim(
    request: Request[Any, Any, Any],
    claim: ClaimService,
    target_id: str,
    what: str,
    idempotency_key: str | None,
) -> schemas.Coupon:
    """One claim as both claim endpoints answer it: 401 without a valid token, 403 for other roles than
    ``runner``, 404 for a path id naming no ``what``, then whatever ``claim`` decides."""
    # The checks keep the order the two handlers had on their own: role, then the path id.
    identity = web.require_role(web.identity_of(request), "runner")
    kernel: Kernel = request.app.state.kernel
    now = _now()
    record = await claim(
        kernel,
        actor_of(identity),
        path_id(target_id, what),
        ip=_client_ip(request, kernel),
        idempotency_key=idempotency_key,
        now=now,
    )
    return coupon_out(record, now)


class ClaimController(Controller):
    """Claims (template and flash), flash sessions and the claim deny list."""

    path = "/api/v1/coupon"
    tags = ("coupon",)
    security = ({"bearer": []},)

    # The two claim endpoints are the hottest in the system: they take the kernel and the identity from
    # the request itself rather than through dependency injection, and check the role in the handler
    # rather than in a guard (litestar copies the handler for every guard call). Same answers: 401
    # without a valid token, 403 for other roles.
    @post("/templates/{template_id:str}/claims", status_code=201)
    async def claim_template(
        self, template_id: FromPath[str], request: Request[Any, Any, Any], idempotency_key: IdempotencyKey = None
    ) -> schemas.Coupon:
        """Claim one coupon of a ``claim`` template (runners). A repeated ``Idempotency-Key`` returns the
        first claim."""
        return await _claim(request, coupon_service.claim_template, template_id, "coupon template", idempotency_key)

    @post("/flash-sessions", guards=[roles("operator")], status_code=201)
    async def create_flash_session(
        self, data: JSONBody[schemas.FlashSessionCreate], identity: Identity, kernel: Kernel
    ) -> schemas.FlashSession:
        """Create a flash session of a platform ``claim`` template; its stock leaves the template's pool."""
        template_id = body_id(data.template_id, "template_id: must be a template id")
        new = coupon_service.NewFlashSession(
            template_id=template_id, starts_at=data.starts_at, ends_at=data.ends_at, stock=data.stock
        )
        record = await coupon_service.create_session(kernel, actor_of(identity), new, _now())
        return flash_out(record, record.stock)

    @get("/flash-sessions", security=[])
    async def flash_sessions(
        self, kernel: Kernel, date: Annotated[str | None, QueryParameter(max_length=32)] = None
    ) -> schemas.FlashSessionList:
        """The flash sessions overlapping a UTC day (default today), open or not yet; no sign-in needed."""
        day = coupon_service.parse_day(date, _now())
        found = await coupon_service.sessions_of_day(kernel, day)
        return schemas.FlashSessionList(items=[flash_out(s, left) for s, left in found])

    @post("/flash-sessions/{session_id:str}/claims", status_code=201)
    async def claim_flash(
        self, session_id: FromPath[str], request: Request[Any, Any, Any], idempotency_key: IdempotencyKey = None
    ) -> schemas.Coupon:
        """Grab one coupon of a flash session (runners). A repeated ``Idempotency-Key`` returns the first
        claim."""
        return await _claim(request, coupon_service.claim_flash, session_id, "flash session", idempotency_key)

    @post("/claim-denylist", guards=[roles("operator")], status_code=201)
    async def deny(
        self, data: JSONBody[schemas.DenylistCreate], identity: Identity, kernel: Kernel
    ) -> schemas.DenylistEntry:
        """Bar an account from claiming coupons (checked before every claim)."""
        user_id = body_id(data.user_id, "user_id: must be an account id")
        row = await coupon_service.deny_claims(kernel, actor_of(identity), user_id, data.reason.strip())
        return _denial_out(row)

    @get("/claim-denylist", guards=[roles("operator")])
    async def denylist(self, identity: Identity, kernel: Kernel) -> schemas.DenylistList:
        """The accounts barred from claiming, newest first."""
        rows = await coupon_service.denied(kernel, actor_of(identity))
        return schemas.DenylistList(items=[_denial_out(r) for r in rows])

    @delete("/claim-denylist/{user_id:str}", guards=[roles("operator")], status_code=204)
    async def allow(self, user_id: FromPath[str], identity: Identity, kernel: Kernel) -> None:
        """Lift a bar (204 whether or not there was one)."""
        await coupon_service.allow_claims(kernel, actor_of(identity), path_id(user_id, "account"))


def _denial_out(row: Any) -> schemas.DenylistEntry:
    return schemas.DenylistEntry(
        user_id=str(row.user_id), reason=row.reason, created_by=str(row.created_by), created_at=row.created_at
    )
