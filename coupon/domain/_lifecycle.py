"""The coupon lifecycle: stored statuses, the moves between them, and what a coupon shows at a moment."""

import enum
from datetime import datetime


class CouponStatus(enum.StrEnum):
    """The stored status of a user coupon."""

    UNUSED = "unused"
    USED = "used"
    EXPIRED = "expired"
    FROZEN = "frozen"


class TransitionError(Exception):
    """A coupon cannot move between two statuses (or cannot be redeemed now). ``code``
    is stable: ``already_used``, ``expired``, ``frozen``, ``not_yet_valid`` or
    ``invalid_transition``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_ALLOWED: frozenset[tuple[CouponStatus, CouponStatus]] = frozenset(
    {
        (CouponStatus.UNUSED, CouponStatus.USED),  # redemption
        (CouponStatus.UNUSED, CouponStatus.EXPIRED),  # expiry sweep
        (CouponStatus.UNUSED, CouponStatus.FROZEN),  # risk control
        (CouponStatus.FROZEN, CouponStatus.UNUSED),  # unfreeze
        (CouponStatus.USED, CouponStatus.UNUSED),  # reversal (refund)
    }
)

# Why a move is refused depends only on where the coupon is now.
_REFUSAL_CODES: dict[CouponStatus, str] = {
    CouponStatus.USED: "already_used",
    CouponStatus.EXPIRED: "expired",
    CouponStatus.FROZEN: "frozen",
    CouponStatus.UNUSED: "invalid_transition",
}


def can_transition(current: CouponStatus, target: CouponStatus) -> bool:
    """Whether a coupon may move from ``current`` to ``target``: unused→used,
    unused→expired, unused→frozen, frozen→unused and used→unused (reversal); nothing
    else, and never to the same status."""
    return (CouponStatus(current), CouponStatus(target)) in _ALLOWED


def transition(current: CouponStatus, target: CouponStatus) -> CouponStatus:
    """Return ``target`` if the move is allowed, else raise ``TransitionError`` whose
    code says why: ``already_used`` from used, ``expired`` from expired, ``frozen`` from
    frozen, ``invalid_transition`` for unused→unused."""
    current, target = CouponStatus(current), CouponStatus(target)
    if (current, target) not in _ALLOWED:
        raise TransitionError(_REFUSAL_CODES[current], f"cannot move a coupon from {current} to {target}")
    return target


def effective_status(stored: CouponStatus, valid_to: datetime, now: datetime) -> CouponStatus:
    """The status to show: an ``unused`` coupon whose window has closed (``now >=
    valid_to``) is ``expired`` even before the expiry sweep has written it; any other
    status as stored."""
    stored = CouponStatus(stored)
    if stored is CouponStatus.UNUSED and now >= valid_to:
        return CouponStatus.EXPIRED
    return stored


def ensure_redeemable(stored: CouponStatus, valid_from: datetime, valid_to: datetime, now: datetime) -> None:
    """Return if a coupon may be redeemed at ``now``; otherwise raise
    ``TransitionError`` with code ``already_used``, ``expired``, ``frozen`` or
    ``not_yet_valid`` (``now < valid_from``)."""
    status = effective_status(stored, valid_to, now)
    transition(status, CouponStatus.USED)
    if now < valid_from:
        raise TransitionError("not_yet_valid", "the coupon is not valid yet")
