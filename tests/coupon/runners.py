"""Many signed-in runners, fast, and an app that lets their storm through.

Accounts are inserted with one shared password hash (argon2 once, not per runner); tokens are issued by
the auth subsystem's own token service: a real refresh family and a real ES256 access token that the
verifier checks against the JWKS, exactly what a login returns."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx

from auth import domain as auth_domain
from auth import service as auth_service
from auth.models import User
from auth.service import _passwords
from picool.kernel import Kernel
from picool.settings import Settings
from picool.testing import running
from tests.conftest import Actor
from tests.live_server import server_env

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


ROOMY_LIMITS = "default:ip=1000000/60,user=1000000/60;auth:ip=60/60"


def storm_env(settings: Settings, topics: str, **extra: str) -> dict[str, str]:
    """The environment of a child ``picool serve``/``work`` that takes a claim storm from this test's one
    address: the session's servers and token issuer, Kafka topics of its own (``topics`` + a random
    suffix, so the session app's consumers never see its claims), rate limits out of the storm's way."""
    return server_env(
        settings,
        PICOOL_KAFKA_TOPIC_PREFIX=f"{topics}{uuid.uuid4().hex[:6]}.",
        PICOOL_KAFKA_PARTITIONS="2",
        PICOOL_PUBLIC_URL=settings.public_url,  # the issuer of the test session's tokens
        PICOOL_RATE_LIMITS=ROOMY_LIMITS,
        PICOOL_CLAIM_RATE_IP="",
        PICOOL_CLAIM_RATE_USER="",
        **extra,
    )


@contextlib.asynccontextmanager
async def roomy_client(settings: Settings, node_id: int) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app of its own whose rate limits (edge and claims) let a whole storm from one test
    address through. It runs no workers: its claims reach Kafka, and the session app's claim consumer
    and reconciler persist them (they share the topics)."""
    from gateway.app import create_app

    app = create_app(
        settings.with_(
            rate_limits=ROOMY_LIMITS, claim_rate_ip="", claim_rate_user="", workers_enabled=False, node_id=node_id
        )
    )
    async with running(app, wait_consumers=False):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local", timeout=60) as c:
            yield c
