"""The Redis side of claims: pool keys, the Lua scripts that decide claims, the pending ledger, the deny list.

A *pool* is one template's claimable stock with everything that decides a claim on it. All of a
template's keys share the hash tag ``{tpl:<id>}``, so every script touches one Redis Cluster slot and a
template's keys live (and, in a disaster, die) together on one node:

===========================================  =====================================================
``coupon:{tpl:T}:meta``                       hash: ``limit`` (per user), ``start_ms``/``end_ms`` (the
                                              template claim window), ``stock`` (template claims' own
                                              stock), ``total``
``coupon:{tpl:T}:s:<session>``                hash of one flash session: ``start_ms``, ``end_ms``,
                                              ``stock`` (remaining), ``initial``
``coupon:{tpl:T}:users``                      hash: user id → coupons of T taken (template + flash)
``coupon:{tpl:T}:claims``                     hash: coupon id → claim record (the ledger)
``coupon:{tpl:T}:pending``                    zset: coupon ids accepted but not yet in PostgreSQL
``coupon:{tpl:T}:idem``                       hash: ``<user>:<Idempotency-Key>`` → coupon id
``coupon:{tpl:T}:rebuild``                    short lock while a lost pool is rebuilt from PostgreSQL
===========================================  =====================================================

``coupon:pools`` (a set of template ids, no tag) tells the reconciler which pools to scan, and
``coupon:claim-denylist`` (a set of user ids) is the shared copy of the claim deny list; every process
keeps it in memory and re-reads it about once a second, so the claim path checks it without a round
trip and the key is never hot.
"""

from __future__ import annotations

from coupon.store._claim_store import ClaimStore
from coupon.store._keys import DENY_KEY, NEVER_MS, POOLS_KEY, SCRIPT_PACKAGE, PoolKeys, tag
from coupon.store._records import ClaimOutcome, ClaimRecord, ClaimResult, PoolSpec, SessionSpec

__all__ = [
    "DENY_KEY",
    "NEVER_MS",
    "POOLS_KEY",
    "SCRIPT_PACKAGE",
    "ClaimOutcome",
    "ClaimRecord",
    "ClaimResult",
    "ClaimStore",
    "PoolKeys",
    "PoolSpec",
    "SessionSpec",
    "tag",
]
