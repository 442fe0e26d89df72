"""Browser tests of the merchant portal: Debian's Chromium driven by Playwright against the real app
served on a loopback port. A failing test leaves a screenshot in ``tests/portal/screenshots/``."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from picool.settings import Settings
from tests.live_server import create_operator, live_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
PASSWORD = "correct horse battery"
# Nothing listens on port 9: tiles are configured but unreachable, and the map must still work.
UNREACHABLE_TILES = "http://127.0.0.1:9/{z}/{x}/{y}.png"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item, so the page fixture knows whether the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def portal_url(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a loopback port; its public URL is that port, so the portal's own callback is a
    registered redirect URI without configuring one (auth adds ``<public URL>/portal/callback``)."""
    with live_server(
        stack_settings,
        tmp_path_factory.mktemp("portal-server"),
        PICOOL_PORTAL_TILE_URL=UNREACHABLE_TILES,
        PICOOL_PORTAL_TILE_ATTRIBUTION="Test tiles",
        PICOOL_PORTAL_MAP_CENTER="31.2304,121.4737",
        # Short-lived access tokens make the portal rotate its refresh token within seconds.
        PICOOL_ACCESS_TOKEN_TTL_S="30",
        # Every test signs in from 127.0.0.1; the per-IP login limit is tested elsewhere.
        PICOOL_RATE_LIMITS="default:ip=100000/60,user=100000/60;auth:ip=100000/60",
    ) as url:
        yield url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from the distribution (never a downloaded build)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install chromium` (.ci/run does)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        try:
            yield b
        finally:
            await b.close()


@dataclass
class PageErrors:
    """Uncaught exceptions and console errors of a page. The browser also logs every 4xx answer as a
    console error; those are the API saying no (which the tests provoke) and are left out, as are the
    unreachable tiles. A 5xx or a script error always counts."""

    items: list[str] = field(default_factory=list)

    def console(self, msg: ConsoleMessage) -> None:
        text = f"{msg.text} at {(msg.location or {}).get('url', '')}"
        refused = re.search(r"Failed to load resource: the server responded with a status of 4\d\d", text)
        if msg.type == "error" and not refused and "127.0.0.1:9/" not in text:
            self.items.append(f"console: {text}")


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies, no sessionStorage) and page; a screenshot if the test fails;
    the test fails on any uncaught script error."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = await context.new_page()
    errors = PageErrors()
    pg.on("pageerror", lambda exc: errors.items.append(f"pageerror: {exc}"))
    pg.on("console", errors.console)
    pg.errors = errors  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            SCREENSHOTS.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            await pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        await context.close()
    assert not errors.items, errors.items


@dataclass
class Account:
    """An account made through the public API."""

    email: str
    password: str
    user_id: str
    merchant_id: str | None = None

    def login(self, url: str, client_id: str = "merchant-portal") -> dict[str, str]:
        """Bearer headers from the password login API (for arranging data outside the browser)."""
        resp = httpx.post(
            f"{url}/api/v1/auth/login", json={"email": self.email, "password": self.password, "client_id": client_id}
        )
        assert resp.status_code == 200, resp.text
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def new_merchant(url: str, name: str = "Noodle Shop") -> Account:
    """A merchant and its owner account."""
    email = f"shop-{uuid.uuid4().hex[:8]}@example.com"
    resp = httpx.post(
        f"{url}/api/v1/auth/merchants",
        json={"name": name, "email": email, "password": PASSWORD, "location": {"lat": 31.2304, "lon": 121.4737}},
    )
    assert resp.status_code == 201, resp.text
    return Account(email, PASSWORD, resp.json()["user_id"], resp.json()["merchant_id"])


def new_runner(url: str) -> Account:
    """A runner account."""
    email = f"runner-{uuid.uuid4().hex[:8]}@example.com"
    resp = httpx.post(
        f"{url}/api/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Runner"}
    )
    assert resp.status_code == 201, resp.text
    return Account(email, PASSWORD, resp.json()["user_id"])


def new_operator(settings: Settings) -> Account:
    """An operator, created with ``picool admin create-operator``."""
    email = f"op-{uuid.uuid4().hex[:8]}@example.com"
    create_operator(settings, email, PASSWORD)
    return Account(email, PASSWORD, "")


async def sign_in(page: Page, url: str, account: Account) -> None:
    """Through the portal's real SSO flow: the portal's button, /oauth2/authorize, the login page, the
    callback's code exchange; ends on the signed-in portal."""
    await page.goto(f"{url}/portal/")
    await page.get_by_role("button", name="Sign in with Picool").click()
    await page.wait_for_url(re.compile(r"/login\?"))
    await page.fill("#email", account.email)
    await page.fill("#password", account.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r"/portal/#"))
    await page.wait_for_selector("#sign-out", state="visible")


def api(url: str, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
    """A JSON API call that must succeed."""
    resp = httpx.request(method, f"{url}{path}", headers=headers, timeout=20, **kw)
    assert resp.status_code < 300, resp.text
    return resp.json() if resp.content else None
