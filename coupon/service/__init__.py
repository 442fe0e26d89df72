"""Coupon use cases. Each takes the kernel (sessions, ids, caches) and opens its own unit of work, so
the same functions serve HTTP handlers, the task-reward consumer and the schedulers.

The issuing path (:func:`issue_coupon`) takes the caller's session instead, so a consumer can put
it in one transaction with its idempotency record; the claim pipeline is meant to reuse it.
"""

from coupon.service._coupons import find_by_code, find_by_id
from coupon.service._issue import IssueOutcome, IssueRequest, IssueResult, issue_coupon, new_identifiers
from coupon.service._lifecycle import expire_due, get_coupon, set_frozen
from coupon.service._quotes import CouponQuote, order_amount, quote
from coupon.service._records import Actor, CouponRecord, TemplateRecord, WalletPage, system_actor
from coupon.service._redeem import (
    RedeemRequest,
    RedemptionPreview,
    RedemptionResult,
    UnknownCode,
    preview_redemption,
    redeem,
    reverse,
)
from coupon.service._templates import (
    NewTemplate,
    Stats,
    create_template,
    get_template,
    invalidate_template,
    list_templates,
    load_template,
    require_template,
    template_cache,
    template_stats,
)
from coupon.service._wallet import PAGE_SIZE, all_unused, invalidate_wallets, load_page, wallet_cache, wallet_page

__all__ = [
    "PAGE_SIZE",
    "Actor",
    "CouponQuote",
    "CouponRecord",
    "IssueOutcome",
    "IssueRequest",
    "IssueResult",
    "NewTemplate",
    "RedeemRequest",
    "RedemptionPreview",
    "RedemptionResult",
    "Stats",
    "TemplateRecord",
    "UnknownCode",
    "WalletPage",
    "all_unused",
    "create_template",
    "expire_due",
    "find_by_code",
    "find_by_id",
    "get_coupon",
    "get_template",
    "invalidate_template",
    "invalidate_wallets",
    "issue_coupon",
    "list_templates",
    "load_page",
    "load_template",
    "new_identifiers",
    "order_amount",
    "preview_redemption",
    "quote",
    "redeem",
    "require_template",
    "reverse",
    "set_frozen",
    "system_actor",
    "template_cache",
    "template_stats",
    "wallet_cache",
    "wallet_page",
]
