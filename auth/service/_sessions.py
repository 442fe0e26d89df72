"""Server-side state in Redis: SSO sessions (behind the session cookie) and authorization codes."""

from __future__ import annotations

import hashlib
import secrets
import time

import msgspec
from redis.asyncio import Redis

from picool.redis import ScriptRegistry

PREFIX = "picool:auth:"
SSO_TTL_S = 7 * 86400  # an SSO session lasts a week from sign-in; logout or freezing ends it earlier
CODE_REPLAY_WINDOW_S = 600  # a used code is remembered this long so a replay can be recognised
REDEEM_SCRIPT = "auth.redeem_code"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SsoSession(msgspec.Struct, frozen=True):
    """A signed-in browser or app: ``sid`` names it in tokens, ``user_id`` is who signed in."""

    sid: str
    user_id: int
    auth_time: int


class CodeGrant(msgspec.Struct, frozen=True):
    """What an authorization code stands for; ``family_id`` is chosen when the code is made, so that a
    replay can revoke the tokens the first redemption issued even while that redemption is in flight."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    user_id: int
    scope: str
    sid: str | None
    family_id: str
    expires_at: float


class SessionStore:
    """SSO sessions keyed by the SHA-256 of the cookie value (the cookie itself is never stored)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, user_id: int) -> tuple[str, SsoSession]:
        """A new session for ``user_id``: ``(cookie_value, session)``."""
        cookie = secrets.token_urlsafe(32)
        sess = SsoSession(sid=secrets.token_urlsafe(16), user_id=user_id, auth_time=int(time.time()))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(PREFIX + "sso:" + _digest(cookie), msgspec.json.encode(sess), ex=SSO_TTL_S)
            pipe.set(PREFIX + "sid:" + sess.sid, _digest(cookie), ex=SSO_TTL_S)
            await pipe.execute()
        return cookie, sess

    async def get(self, cookie: str | None) -> SsoSession | None:
        """The live session behind ``cookie``, or None."""
        if not cookie or len(cookie) > 200:
            return None
        raw = await self.redis.get(PREFIX + "sso:" + _digest(cookie))
        if raw is None:
            return None
        return msgspec.json.decode(raw, type=SsoSession)

    async def end(self, sid: str) -> None:
        """End the session named ``sid`` (no-op when it is gone)."""
        digest = await self.redis.get(PREFIX + "sid:" + sid)
        keys = [PREFIX + "sid:" + sid]
        if digest is not None:
            keys.append(PREFIX + "sso:" + (digest.decode() if isinstance(digest, bytes) else str(digest)))
        await self.redis.delete(*keys)


class CodeStore:
    """Authorization codes: 256 random bits, stored by hash, single-use, with replay detection."""

    def __init__(self, redis: Redis, scripts: ScriptRegistry) -> None:
        self.redis = redis
        self.scripts = scripts

    async def issue(self, grant: CodeGrant) -> str:
        """Store ``grant`` and return the code that redeems it."""
        code = secrets.token_urlsafe(32)
        key = PREFIX + "code:" + _digest(code)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"grant": msgspec.json.encode(grant), "uses": 0})
            pipe.expire(key, CODE_REPLAY_WINDOW_S)
            await pipe.execute()
        return code

    async def redeem(self, code: str) -> tuple[int, CodeGrant] | None:
        """``(presentations so far including this one, grant)``, or None for an unknown code."""
        if not code or len(code) > 200:
            return None
        res = await self.scripts.run(REDEEM_SCRIPT, [PREFIX + "code:" + _digest(code)], [CODE_REPLAY_WINDOW_S])
        if res is None:
            return None
        uses, raw = res
        return int(uses), msgspec.json.decode(raw, type=CodeGrant)
