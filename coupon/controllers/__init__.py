"""The coupon HTTP API (``/api/v1/coupon/...``): parse, check the role, call the service, shape the answer.

Role checks are guards, so a caller without a token gets 401 and a caller with the wrong role gets
403 before the body is even read; bad bodies then get 400 ``invalid_request``. Path ids that are
not ids answer 404, like ids that name nothing.
"""

from __future__ import annotations

from coupon.controllers._claims import FAST_ROUTES, ClaimController, ClaimService
from coupon.controllers._coupons import CouponController
from coupon.controllers._guards import Guard, actor_of, authenticated, roles
from coupon.controllers._request import IdempotencyKey, field_id, page_cursor, path_id, utcnow
from coupon.controllers._shapes import (
    coupon_out,
    denial_out,
    flash_out,
    id_str,
    order_items,
    redemption_out,
    template_out,
)

__all__ = [
    "FAST_ROUTES",
    "ClaimController",
    "ClaimService",
    "CouponController",
    "Guard",
    "IdempotencyKey",
    "actor_of",
    "authenticated",
    "coupon_out",
    "denial_out",
    "field_id",
    "flash_out",
    "id_str",
    "order_items",
    "page_cursor",
    "path_id",
    "redemption_out",
    "roles",
    "template_out",
    "utcnow",
]
