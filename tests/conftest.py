"""Test harness: real servers (embedded unless PICOOL_*_URL are set), one app per session, clean state per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from picool import migrate
from picool.kernel import Kernel
from picool.settings import Settings
from picool.stack import EmbeddedStack
from picool.testing import reset_state, running


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at real servers, with migrations applied."""
    base = Settings.from_env(env="test", log_format="text", log_level=os.environ.get("PICOOL_LOG_LEVEL", "WARNING"))
    stack: EmbeddedStack | None = None
    if base.uses_embedded:
        stack = EmbeddedStack(
            Path(tmp_path_factory.mktemp("stack")),
            postgres=not base.database_url,
            redis=not base.redis_url,
            kafka=not base.kafka_bootstrap,
            tuning="test",
            log=lambda m: None,
        )
        stack.start()
        base = base.with_(
            database_url=base.database_url or stack.database_url,
            redis_url=base.redis_url or stack.redis_url,
            kafka_bootstrap=base.kafka_bootstrap or stack.kafka_bootstrap,
        )
    settings = base.with_(
        kafka_topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        kafka_partitions=4,
        outbox_poll_ms=50,
        public_url="http://testserver.local",
        data_dir=str(tmp_path_factory.mktemp("data")),
    )
    migrate.upgrade(settings.database_url)
    try:
        yield settings
    finally:
        if stack is not None:
            stack.stop()


@pytest.fixture(scope="session")
async def app(stack_settings: Settings) -> AsyncIterator[Litestar]:
    """The one app of the session (every subsystem mounted, workers running)."""
    from gateway.app import create_app

    yield create_app(stack_settings)


@pytest.fixture(scope="session")
async def session_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the session app, in the test's own event loop (its lifespan runs for the session)."""
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local", timeout=30) as client:
            yield client


@pytest.fixture(scope="session")
def kernel(app: Litestar) -> Kernel:
    """The session app's kernel."""
    k: Kernel = app.state.kernel
    return k


@pytest.fixture
async def client(session_client: httpx.AsyncClient, kernel: Kernel) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the session app, with clean state for this test."""
    await reset_state(kernel)
    session_client.cookies.clear()
    yield session_client


@dataclass
class Actor:
    """A signed-in account for tests: its ids, access token and ready-made headers."""

    user_id: str
    email: str
    password: str
    role: str
    access_token: str
    refresh_token: str = ""
    merchant_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer ...``."""
        return {"Authorization": f"Bearer {self.access_token}"}


class Accounts:
    """Makes runners, merchants and operators through the public auth API (operators via the service)."""

    def __init__(self, client: httpx.AsyncClient, kernel: Kernel) -> None:
        self.client = client
        self.kernel = kernel

    async def login(self, email: str, password: str, client_id: str = "runner-app") -> dict[str, Any]:
        resp = await self.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password, "client_id": client_id}
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def runner(self, name: str | None = None) -> Actor:
        email = f"{name or 'runner'}-{uuid.uuid4().hex[:8]}@example.com"
        password = "correct horse battery"
        resp = await self.client.post(
            "/api/v1/auth/register", json={"email": email, "password": password, "display_name": name or "Runner"}
        )
        assert resp.status_code == 201, resp.text
        tokens = await self.login(email, password)
        return Actor(resp.json()["user_id"], email, password, "runner", tokens["access_token"], tokens["refresh_token"])

    async def merchant(self, name: str | None = None, lat: float = 31.2304, lon: float = 121.4737) -> Actor:
        email = f"{name or 'shop'}-{uuid.uuid4().hex[:8]}@example.com"
        password = "correct horse battery"
        resp = await self.client.post(
            "/api/v1/auth/merchants",
            json={
                "name": name or "Noodle Shop",
                "email": email,
                "password": password,
                "location": {"lat": lat, "lon": lon},
                "address": "1 Test Road",
                "category": "food",
            },
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        tokens = await self.login(email, password, "merchant-portal")
        return Actor(
            body["user_id"], email, password, "merchant", tokens["access_token"], tokens["refresh_token"],
            merchant_id=body["merchant_id"],
        )  # fmt: skip

    async def operator(self) -> Actor:
        from auth import service as auth_service

        email = f"op-{uuid.uuid4().hex[:8]}@example.com"
        password = "correct horse battery"
        async with self.kernel.sessionmaker() as session, session.begin():
            user_id = await auth_service.create_operator(session, email, password)
        tokens = await self.login(email, password, "merchant-portal")
        return Actor(user_id, email, password, "operator", tokens["access_token"], tokens["refresh_token"])


@pytest.fixture
def accounts(client: httpx.AsyncClient, kernel: Kernel) -> Accounts:
    """Factory of signed-in runners, merchants and operators (through the real auth API)."""
    return Accounts(client, kernel)
