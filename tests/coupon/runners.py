"""Many signed-in runners, fast: accounts inserted with one shared password hash (argon2 once, not per
runner), tokens issued by the auth subsystem's own token service (a real refresh family and a real
ES256 access token the verifier checks against the JWKS, exactly what a login returns)."""

from __future__ import annotations

import uuid

from auth import domain as auth_domain
from auth import service as auth_service
from auth.models import User
from auth.service import _passwords
from picool.kernel import Kernel
from tests.conftest import Actor

PASSWORD = "correct horse battery"
_HASH: dict[str, str] = {}


async def make_runners(kernel: Kernel, n: int, *, prefix: str = "grab") -> list[Actor]:
    """``n`` runner accounts with access tokens (through the auth kernel's services)."""
    if "h" not in _HASH:
        _HASH["h"] = await _passwords.hash_password(PASSWORD)
    svc = auth_service.services_of(kernel)
    out: list[Actor] = []
    async with kernel.sessionmaker() as session, session.begin():
        users = []
        for _ in range(n):
            email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
            user = User(
                id=kernel.ids.next_id(0),
                email=email,
                password_hash=_HASH["h"],
                display_name="Runner",
                role=auth_domain.ROLE_RUNNER,
                frozen=False,
            )
            session.add(user)
            users.append(user)
        await session.flush()
        for user in users:
            tokens = await svc.tokens.start_family(
                session, user, client_id="runner-app", scope=auth_domain.DEFAULT_USER_SCOPE, session_id=None
            )
            out.append(
                Actor(str(user.id), user.email, PASSWORD, "runner", tokens.access_token, tokens.refresh_token or "")
            )
    return out
