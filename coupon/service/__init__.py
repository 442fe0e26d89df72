"""Coupon use cases. Each takes the kernel (sessions, ids, caches) and opens its own unit of work, so
the same functions serve HTTP handlers, the task-reward consumer and the schedulers.

The issuing path (:func:`issue_coupon`) takes the caller's session instead, so a consumer can put
it in one transaction with its idempotency record; the claim pipeline's consumer uses its batched
sibling (:func:`issue_premade`). Claims themselves (:func:`claim_template`, :func:`claim_flash`) never
touch PostgreSQL: Redis decides them and :func:`persist_claims` writes them afterwards.
"""

from coupon.service._claims import ClaimDenied, claim_event, claim_flash, claim_template, claimed_coupon, publish_claim
from coupon.service._claims import guards as claim_guards
from coupon.service._coupons import find_by_code, find_by_id
from coupon.service._denylist import allow_claims, denied, deny_claims, sync_denylist
from coupon.service._flash import (
    FlashSessionRecord,
    NewFlashSession,
    create_session,
    parse_day,
    require_session,
    sessions_of_day,
)
from coupon.service._issue import IssueOutcome, IssueRequest, IssueResult, issue_coupon, new_identifiers
from coupon.service._lifecycle import expire_due, get_coupon, set_frozen
from coupon.service._persist import CONSUMER as CLAIMS_CONSUMER
from coupon.service._persist import GRACE_MS as CLAIMS_GRACE_MS
from coupon.service._persist import ReconcileReport, handle_claims, persist_claims, reconcile, stored_ids
from coupon.service._pools import claim_store, create_pool, ensure_pool
from coupon.service._premade import Issued, PremadeCoupon, check_premade, issue_premade
from coupon.service._quotes import CouponQuote, order_amount, quote
from coupon.service._records import Actor, CouponRecord, TemplateRecord, WalletPage, system_actor
from coupon.service._redeem import RedeemRequest, RedemptionResult, redeem
from coupon.service._redeem_checks import RedemptionPreview, UnknownCode, preview_redemption
from coupon.service._reversal import reverse
from coupon.service._sender import ClaimSender, batch_message, claim_sender, claimed_event
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
from coupon.service._wallet import (
    PAGE_SIZE,
    all_unused,
    invalidate_new_coupons,
    invalidate_wallets,
    load_page,
    wallet_cache,
    wallet_page,
)

__all__ = [
    "CLAIMS_CONSUMER",
    "CLAIMS_GRACE_MS",
    "PAGE_SIZE",
    "Actor",
    "ClaimDenied",
    "ClaimSender",
    "CouponQuote",
    "CouponRecord",
    "FlashSessionRecord",
    "IssueOutcome",
    "IssueRequest",
    "IssueResult",
    "Issued",
    "NewFlashSession",
    "NewTemplate",
    "PremadeCoupon",
    "ReconcileReport",
    "RedeemRequest",
    "RedemptionPreview",
    "RedemptionResult",
    "Stats",
    "TemplateRecord",
    "UnknownCode",
    "WalletPage",
    "all_unused",
    "allow_claims",
    "batch_message",
    "check_premade",
    "claim_event",
    "claim_flash",
    "claim_guards",
    "claim_sender",
    "claim_store",
    "claim_template",
    "claimed_coupon",
    "claimed_event",
    "create_pool",
    "create_session",
    "create_template",
    "denied",
    "deny_claims",
    "ensure_pool",
    "expire_due",
    "find_by_code",
    "find_by_id",
    "get_coupon",
    "get_template",
    "handle_claims",
    "invalidate_new_coupons",
    "invalidate_template",
    "invalidate_wallets",
    "issue_coupon",
    "issue_premade",
    "list_templates",
    "load_page",
    "load_template",
    "new_identifiers",
    "order_amount",
    "parse_day",
    "persist_claims",
    "preview_redemption",
    "publish_claim",
    "quote",
    "reconcile",
    "redeem",
    "require_session",
    "require_template",
    "reverse",
    "sessions_of_day",
    "set_frozen",
    "stored_ids",
    "sync_denylist",
    "system_actor",
    "template_cache",
    "template_stats",
    "wallet_cache",
    "wallet_page",
]
