"""Failed-login throttling in Redis, per normalised email and per client IP.

Thresholds (see :mod:`auth.domain`): failures are counted over a 15-minute sliding window. From an email's
3rd failure on, its answers are slowed by a growing delay (50 ms doubling, at most 1 s). At 5 failures for an
email, or 20 for an IP, the key is locked for 30 s, doubling with each further failure up to 15 min;
while locked every attempt gets 429 ``too_many_attempts`` with Retry-After, before any password check.
The email key is the hash of the normalised address whether or not an account has it, so the answers
say nothing about which accounts exist. A successful login clears its email's counter.
"""

from __future__ import annotations

import asyncio
import hashlib

from redis.asyncio import Redis

from auth import domain
from auth.service._errors import TooManyAttempts
from picool.redis import ScriptRegistry

PREFIX = "picool:auth:throttle:"
SCRIPT = "auth.count_failure"


def _email_key(email: str) -> str:
    try:
        norm = domain.normalise_email(email)
    except domain.AuthRuleError:
        norm = email.strip().lower()[:300]
    return "acct:" + hashlib.sha256(norm.encode()).hexdigest()[:32]


def _ip_key(ip: str) -> str:
    return "ip:" + (ip or "unknown")[:64]


class LoginThrottle:
    """Refuses logins for locked emails and IPs, slows repeated failures, and counts them."""

    def __init__(self, redis: Redis, scripts: ScriptRegistry) -> None:
        self.redis = redis
        self.scripts = scripts

    async def before_attempt(self, email: str, ip: str) -> None:
        """Raise :class:`TooManyAttempts` while the email or IP is locked; else wait the tarpit delay."""
        keys = [_email_key(email), _ip_key(ip)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.pttl(PREFIX + "lock:" + k)
            pipe.get(PREFIX + "fail:" + keys[0])
            res = await pipe.execute()
        lock_ms = max(int(res[0]), int(res[1]))
        if lock_ms > 0:
            raise TooManyAttempts(
                "Too many failed sign-in attempts; try again later.", retry_after_s=-(-lock_ms // 1000)
            )
        # The growing delay follows the email's failures only: an IP's failures are spread over many
        # accounts (a shared NAT), and its lock already bounds the guessing rate.
        delay = domain.tarpit_seconds(int(res[2]) if res[2] is not None else 0)
        if delay:
            await asyncio.sleep(delay)

    async def failed(self, email: str, ip: str) -> None:
        """Count a failed attempt for the email and the IP (locking them when over the allowance)."""
        for key, free in ((_email_key(email), domain.ACCOUNT_FREE_FAILURES), (_ip_key(ip), domain.IP_FREE_FAILURES)):
            await self.scripts.run(
                SCRIPT,
                [PREFIX + "fail:" + key, PREFIX + "lock:" + key],
                [domain.THROTTLE_WINDOW_S, free, domain.LOCK_BASE_S, domain.LOCK_MAX_S],
            )

    async def succeeded(self, email: str) -> None:
        """Forget the email's failures after a correct password."""
        key = _email_key(email)
        await self.redis.delete(PREFIX + "fail:" + key, PREFIX + "lock:" + key)
