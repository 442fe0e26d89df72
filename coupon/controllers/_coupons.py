"""Templates, wallet, quotes, redemptions and operator actions: the coupon API other than claims."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from coupon import domain as coupon_domain
from coupon import schemas
from coupon import service as coupon_service
from coupon.controllers._guards import actor_of, authenticated, roles
from coupon.controllers._request import field_id, page_cursor, path_id, utcnow
from coupon.controllers._shapes import coupon_out, id_str, order_items, redemption_out, template_out
from picool.kernel import Kernel
from picool.tokens import Identity


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
        return schemas.TemplateList(items=[template_out(t) for t in items], next_cursor=id_str(next_cursor))

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
        now = utcnow()
        items, next_cursor = await coupon_service.wallet_page(kernel, actor.user_id, status, now, before)
        return schemas.CouponList(items=[coupon_out(c, now) for c in items], next_cursor=id_str(next_cursor))

    @get("/coupons/{coupon_id:str}", guards=[roles("runner", "operator")])
    async def get_coupon(self, coupon_id: FromPath[str], identity: Identity, kernel: Kernel) -> schemas.Coupon:
        """One coupon, for its owner or an operator."""
        record = await coupon_service.get_coupon(kernel, actor_of(identity), path_id(coupon_id, "coupon"))
        return coupon_out(record, utcnow())

    @post("/quotes", guards=[roles("runner")], status_code=200)
    async def quotes(
        self, data: JSONBody[schemas.QuoteRequest], identity: Identity, kernel: Kernel
    ) -> schemas.QuoteList:
        """The caller's coupons usable on this order at this merchant, best saving first."""
        actor = actor_of(identity)
        merchant_id = field_id(data.merchant_id, "merchant_id: must be a merchant id")
        items = order_items(data.items) or []
        now = utcnow()
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
            items=order_items(data.items),
        )
        result = await coupon_service.redeem(kernel, actor_of(identity), req, utcnow())
        return redemption_out(result)

    @post("/redemptions/preview", guards=[roles("merchant")], status_code=200)
    async def preview_redemption(
        self, data: JSONBody[schemas.RedemptionPreviewRequest], identity: Identity, kernel: Kernel
    ) -> schemas.RedemptionPreview:
        """What redeeming this code for this order would take off, with every check of a redemption;
        nothing is redeemed (the till shows it before the cashier confirms)."""
        found = await coupon_service.preview_redemption(
            kernel, actor_of(identity), data.code, data.order_amount_cents, items=order_items(data.items), now=utcnow()
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
        now = utcnow()
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
        now = utcnow()
        record = await coupon_service.set_frozen(
            kernel,
            actor_of(identity),
            path_id(coupon_id, "coupon"),
            frozen=frozen,
            reason=data.reason if data else "",
            now=now,
        )
        return coupon_out(record, now)
