"""The merchant portal in a real browser: SSO sign-in (code + PKCE), templates with their rule sentence
and live stats, a task placed on the map with its runs refreshing live, a redemption at the till."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from datetime import datetime
from io import BytesIO
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import Page, expect

from picool.settings import Settings
from tests.portal.conftest import Account, api, new_merchant, new_operator, new_runner, sign_in

TEMPLATE_20_OFF_100 = {
    "name": "20 off 100",
    "rule": {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_000},
    "validity": {"kind": "relative", "days": 30},
    "total_count": 100,
    "per_user_limit": 5,
    "distribution": "task_reward",
}


def _ms(rfc3339: str) -> int:
    return math.floor(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def make_task(url: str, merchant: dict[str, str], template_id: str, **over: Any) -> dict[str, Any]:
    """A task at the portal's default centre that a runner can finish standing at the door."""
    body = {
        "title": "Run to the shop", "destination": {"lat": 31.2304, "lon": 121.4737}, "radius_m": 100,
        "min_distance_m": 0, "time_limit_s": 600, "reward_template_id": template_id, "quota": 10, **over,
    }  # fmt: skip
    task: dict[str, Any] = api(url, "POST", "/api/v1/run/tasks", merchant, json=body)
    return task


def accept(url: str, runner: dict[str, str], task_id: str) -> dict[str, Any]:
    """A runner accepts the task; the run."""
    run: dict[str, Any] = api(url, "POST", f"/api/v1/run/tasks/{task_id}/runs", runner)
    return run


async def finish_at_destination(url: str, runner: dict[str, str], run: dict[str, Any], dest: dict[str, float]) -> None:
    """Twelve fixes at the destination, recorded after the accept (real time), then finish: completed."""
    start = _ms(run["accepted_at"])
    points = [{"ts_ms": start + 100 * (k + 1), "lat": dest["lat"], "lon": dest["lon"]} for k in range(12)]
    api(url, "POST", f"/api/v1/run/runs/{run['id']}/points", runner, json={"points": points})
    await asyncio.sleep(max(0.0, (points[-1]["ts_ms"] - time.time() * 1000) / 1000) + 0.2)
    done = api(url, "POST", f"/api/v1/run/runs/{run['id']}/finish", runner)
    assert done["status"] == "completed", done


async def test_sign_in_is_the_sso_code_flow_and_sign_out_ends_it(page: Page, portal_url: str) -> None:
    merchant = new_merchant(portal_url, "Dumpling House")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    await sign_in(page, portal_url, merchant)
    await expect(page.locator("#who")).to_contain_text("(merchant)")
    await expect(page.locator("#tab-templates")).to_be_visible()

    authorize = next(r for r in requests if "/oauth2/authorize?" in r)
    query = dict(re.findall(r"[?&]([^=&]+)=([^&]*)", authorize))
    assert query["client_id"] == "merchant-portal" and query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == f"{portal_url}/portal/callback".replace(":", "%3A").replace("/", "%2F")
    assert any(r.startswith("POST ") and r.endswith("/oauth2/token") for r in requests)
    assert "code=" not in page.url  # the callback replaced itself: the single-use code is not kept in history

    tokens = json.loads(await page.evaluate("sessionStorage.getItem('picool.portal.tokens')"))
    assert tokens["access_token"].count(".") == 2 and tokens["refresh_token"]
    assert await page.evaluate("localStorage.length") == 0  # tokens never outlive the tab
    me = httpx.get(f"{portal_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["merchant_id"] == merchant.merchant_id

    # Access tokens live 30 s on this server, so the portal rotates its refresh token within seconds
    # and keeps working with the new one.
    await _rotation(page, tokens["refresh_token"])
    await expect(page.locator("#template-list")).to_be_visible()

    # Signing out revokes the tokens and ends the SSO session: signing in again asks for the password.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in with Picool")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('picool.portal.tokens')") is None
    await page.get_by_role("button", name="Sign in with Picool").click()
    await page.wait_for_url(re.compile(r"/login\?"))
    await page.fill("#email", merchant.email)
    await page.fill("#password", merchant.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_contain_text("(merchant)")

    # A refresh token used twice (a stolen copy replayed) revokes its whole family: the portal, whose
    # tokens belong to it, finds itself signed out.
    old = json.loads(await page.evaluate("sessionStorage.getItem('picool.portal.tokens')"))["refresh_token"]
    await _rotation(page, old)
    reused = httpx.post(
        f"{portal_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": old, "client_id": "merchant-portal"},
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    await expect(page.get_by_role("button", name="Sign in with Picool")).to_be_visible(timeout=20_000)
    assert await page.evaluate("sessionStorage.getItem('picool.portal.tokens')") is None


async def _rotation(page: Page, refresh_token: str) -> None:
    """Wait until the portal has swapped ``refresh_token`` for a new one."""
    await page.wait_for_function(
        "old => { const t = JSON.parse(sessionStorage.getItem('picool.portal.tokens') || 'null');"
        " return t !== null && t.refresh_token !== old; }",
        arg=refresh_token, timeout=20_000,
    )  # fmt: skip


async def test_a_forged_callback_is_refused(page: Page, portal_url: str) -> None:
    await page.goto(f"{portal_url}/portal/callback?code=stolen&state=not-ours")
    await expect(page.locator("#callback-title")).to_have_text("Sign-in failed")
    await expect(page.locator("#callback-error")).to_contain_text("does not belong to a sign-in started here")
    assert await page.evaluate("sessionStorage.getItem('picool.portal.tokens')") is None


async def test_templates_show_the_rule_as_a_sentence_and_live_stats(page: Page, portal_url: str) -> None:
    merchant = new_merchant(portal_url)
    await sign_in(page, portal_url, merchant)
    form = page.locator("#template-form")
    await form.locator("input[name=name]").fill("Spring 20 off 100")
    await form.locator("input[name=amount]").fill("20")
    await form.locator("input[name=threshold]").fill("100.00")
    await expect(page.locator("#rule-preview")).to_have_text("20.00 off orders from 100.00")
    await form.get_by_role("button", name="Create template").click()
    row = page.locator("#template-list tbody tr").filter(has_text="Spring 20 off 100")
    await expect(row.locator(".rule-text")).to_have_text("20.00 off orders from 100.00")  # the server's rule_text
    await expect(row.locator(".assigned")).to_have_text("0 / 100")

    # A percentage rule: the live preview (JS) and the server's sentence agree.
    await form.locator("select[name=type]").select_option("discount")
    await form.locator("input[name=name]").fill("Fifteen percent")
    await form.locator("input[name=percent]").fill("15")
    await form.locator("input[name=cap]").fill("30")
    await form.locator("input[name=threshold]").fill("50")
    await form.locator("input[name=categories]").fill("noodles, tea")
    preview = "15% off, up to 30.00 off, on orders from 50.00 on category noodles, tea"
    await expect(page.locator("#rule-preview")).to_have_text(preview)
    await form.get_by_role("button", name="Create template").click()
    await expect(page.locator("#template-message")).to_contain_text(preview)
    row2 = page.locator("#template-list tbody tr").filter(has_text="Fifteen percent")
    await expect(row2.locator(".rule-text")).to_have_text(preview)

    # Bad input is explained, not sent.
    await form.locator("input[name=name]").fill("Broken")
    await form.locator("input[name=percent]").fill("fifteen")
    await expect(page.locator("#rule-preview")).to_have_text("Percent off: enter a whole number")
    await form.get_by_role("button", name="Create template").click()
    await expect(page.locator("#template-message")).to_have_text("Percent off: enter a whole number")
    # The server's refusals are shown too (a percentage over 100).
    await form.locator("input[name=percent]").fill("150")
    await form.get_by_role("button", name="Create template").click()
    await expect(page.locator("#template-message")).to_contain_text("percent_off")

    # Stats refresh on their own: a runner earns one of the first template's coupons.
    headers = merchant.login(portal_url)
    template_id = await row.get_attribute("data-template-id")
    assert template_id
    task = make_task(portal_url, headers, template_id)
    runner = new_runner(portal_url).login(portal_url, "runner-app")
    await finish_at_destination(portal_url, runner, accept(portal_url, runner, task["id"]), task["destination"])
    await expect(row.locator(".assigned")).to_have_text("1 / 100", timeout=20_000)
    await expect(row.locator(".remaining")).to_have_text("99")


TILE_RGB = (51, 102, 204)


def _solid_png(rgb: tuple[int, int, int]) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (256, 256), rgb).save(buf, "PNG")
    return buf.getvalue()


async def _rendered(page: Page) -> Image.Image:
    """The map as the browser shows it (a screenshot: cross-origin tiles keep the canvas unreadable to
    scripts, which is fine for the page, which never reads it)."""
    return Image.open(BytesIO(await page.locator("#map").screenshot())).convert("RGB")


async def _dominant(page: Page) -> tuple[int, int, int]:
    img = await _rendered(page)
    colours: Counter[tuple[int, int, int]] = Counter(
        img.getpixel((x, y))
        for x in range(0, img.width, 5)
        for y in range(0, img.height, 5)  # type: ignore[misc]
    )
    return colours.most_common(1)[0][0]


@pytest.mark.parametrize("tiles", ["unreachable", "served"])
async def test_a_task_is_placed_on_the_map_and_its_runs_refresh_live(page: Page, portal_url: str, tiles: str) -> None:
    if tiles == "served":  # the configured tile server answers (here the browser's network layer does)
        png = _solid_png(TILE_RGB)
        await page.route(re.compile(r"^http://127\.0\.0\.1:9/\d+/\d+/\d+\.png$"),
                         lambda route: route.fulfill(body=png, content_type="image/png"))  # fmt: skip
    merchant = new_merchant(portal_url)
    headers = merchant.login(portal_url)
    template = api(portal_url, "POST", "/api/v1/coupon/templates", headers, json=TEMPLATE_20_OFF_100)
    await sign_in(page, portal_url, merchant)
    await page.get_by_role("button", name="Running tasks").click()
    canvas = page.locator("#map")
    await expect(canvas).to_be_visible()
    await expect(page.locator("#task-form select[name=reward_template_id] option")).to_have_count(1)

    # Tiles drawn when they load; when the tile server is unreachable the map draws its lat/lon grid
    # on the plain background instead, and picks points all the same.
    box = await canvas.bounding_box()
    assert box is not None
    want = TILE_RGB if tiles == "served" else (0xEE, 0xF2, 0xEE)  # a tile's colour, or the bare background
    for _ in range(50):
        if await _dominant(page) == want:
            break
        await asyncio.sleep(0.2)
    assert await _dominant(page) == want
    x, y = box["width"] / 2 + 120, box["height"] / 2 - 80
    await canvas.click(position={"x": x, "y": y})
    lat = float(await page.locator("#dest-lat").input_value())
    lon = float(await page.locator("#dest-lon").input_value())
    # North-east of the centre (31.2304, 121.4737) by 80 and 120 pixels at zoom 15 (~4.78 m per pixel
    # at the equator, x cos(latitude)).
    mpp = 156543.03392 * math.cos(math.radians(31.2304)) / 2**15
    assert math.isclose(lon - 121.4737, 120 * mpp / (111_320 * math.cos(math.radians(31.2304))), rel_tol=0.03)
    assert math.isclose(lat - 31.2304, 80 * mpp / 110_574, rel_tol=0.03)
    # The marker is drawn where the click was.
    pixel = (await _rendered(page)).getpixel((round(x), round(y)))
    assert pixel == (0xE2, 0x57, 0x1E), pixel

    form = page.locator("#task-form")
    await form.locator("input[name=title]").fill("Riverside loop")
    await form.locator("input[name=min_distance_m]").fill("0")
    await form.locator("input[name=quota]").fill("3")
    await form.get_by_role("button", name="Create task").click()
    await expect(page.locator("#task-message")).to_have_text('Created "Riverside loop".')
    task_row = page.locator("#task-list tbody tr").filter(has_text="Riverside loop")
    await expect(task_row.locator(".completed")).to_have_text("0 / 3")

    tasks = api(portal_url, "GET", "/api/v1/run/tasks", headers)["items"]
    assert len(tasks) == 1
    task = tasks[0]
    assert (task["destination"]["lat"], task["destination"]["lon"]) == (lat, lon)
    assert (task["reward_template_id"], task["min_distance_m"], task["time_limit_s"]) == (template["id"], 0, 3600)

    # The runs panel follows the task while runners accept and finish it.
    await expect(page.locator("#runs-panel")).to_be_visible()
    await expect(page.locator("#runs-empty")).to_be_visible()
    runner = new_runner(portal_url).login(portal_url, "runner-app")
    run = accept(portal_url, runner, task["id"])
    run_row = page.locator(f"#run-list tr[data-run-id='{run['id']}']")
    await expect(run_row.locator(".status")).to_have_text("active", timeout=10_000)
    await finish_at_destination(portal_url, runner, run, task["destination"])
    await expect(run_row.locator(".status")).to_have_text("completed", timeout=10_000)
    await expect(task_row.locator(".completed")).to_have_text("1 / 3")
    cheat = accept(portal_url, runner, task["id"])
    api(portal_url, "POST", f"/api/v1/run/runs/{cheat['id']}/finish", runner)
    await expect(page.locator(f"#run-list tr[data-run-id='{cheat['id']}'] .status")).to_have_text(
        "rejected (too few points)", timeout=10_000
    )

    # Pausing from the list.
    await task_row.get_by_role("button", name="Pause").click()
    await expect(task_row.locator(".status")).to_have_text("paused")
    assert api(portal_url, "GET", f"/api/v1/run/tasks/{task['id']}", headers)["status"] == "paused"


async def _coupon_for(url: str, merchant: Account) -> str:
    """A runner earns one of the merchant's "20 off 100" coupons by a run; its code."""
    headers = merchant.login(url)
    template = api(url, "POST", "/api/v1/coupon/templates", headers, json=TEMPLATE_20_OFF_100)
    task = make_task(url, headers, template["id"])
    runner = new_runner(url).login(url, "runner-app")
    await finish_at_destination(url, runner, accept(url, runner, task["id"]), task["destination"])
    for _ in range(100):
        wallet = api(url, "GET", "/api/v1/coupon/me/coupons", runner)["items"]
        if wallet:
            code: str = wallet[0]["code"]
            return code
        await asyncio.sleep(0.2)
    raise AssertionError("the reward never reached the wallet")


async def test_redeem_at_the_till_shows_the_discount_before_confirming(page: Page, portal_url: str) -> None:
    merchant = new_merchant(portal_url)
    code = await _coupon_for(portal_url, merchant)
    await sign_in(page, portal_url, merchant)
    await page.get_by_role("button", name="Till").click()
    till = page.locator("#till-form")

    await till.locator("input[name=code]").fill(code)
    await till.locator("input[name=amount]").fill("50.00")
    await till.get_by_role("button", name="Check").click()
    await expect(page.locator("#till-message")).to_contain_text("does not meet this coupon's conditions")
    await expect(page.locator("#till-preview")).to_be_hidden()

    await till.locator("input[name=code]").fill(code.lower().replace("-", " "))  # typed as people do
    await till.locator("input[name=amount]").fill("120")
    await till.get_by_role("button", name="Check").click()
    await expect(page.locator("#till-preview")).to_be_visible()
    await expect(page.locator("#till-rule")).to_have_text("20.00 off orders from 100.00")
    await expect(page.locator("#till-discount")).to_have_text("20.00")
    await expect(page.locator("#till-payable")).to_have_text("100.00")
    # Nothing is redeemed before the cashier confirms.
    stats_before = httpx.post(
        f"{portal_url}/api/v1/coupon/redemptions/preview",
        json={"code": code, "order_amount_cents": 12_000},
        headers=merchant.login(portal_url),
    )
    assert stats_before.status_code == 200, stats_before.text

    await page.get_by_role("button", name="Confirm redemption").click()
    await expect(page.locator("#till-message")).to_contain_text("Redeemed: 20.00 off, customer pays 100.00")
    await expect(page.locator("#till-preview")).to_be_hidden()

    await till.locator("input[name=code]").fill(code)
    await till.locator("input[name=amount]").fill("120")
    await till.get_by_role("button", name="Check").click()
    await expect(page.locator("#till-message")).to_have_text("This coupon has already been used.")


def test_pages_config_and_assets_are_served_by_the_gateway(portal_url: str) -> None:
    for path in ("/portal", "/portal/"):
        resp = httpx.get(f"{portal_url}{path}")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert '<script src="/portal/assets/app.js"' in resp.text
        csp = resp.headers["content-security-policy"]
        # Scripts only from here (no CDN, no inline script); tile images also from the tile server.
        assert "script-src 'self';" in csp and "img-src 'self' data: http://127.0.0.1:9;" in csp
        assert "frame-ancestors 'none'" in csp
    callback = httpx.get(f"{portal_url}/portal/callback?code=x&state=y")
    assert callback.status_code == 200 and "/portal/assets/callback.js" in callback.text
    config = httpx.get(f"{portal_url}/portal/config.json").json()
    assert config == {
        "client_id": "merchant-portal",
        "scope": "profile email offline_access",
        "tile_url": "http://127.0.0.1:9/{z}/{x}/{y}.png",
        "tile_attribution": "Test tiles",
        "map_center": {"lat": 31.2304, "lon": 121.4737},
    }
    for asset, kind in (("app.js", "javascript"), ("auth.js", "javascript"), ("map.js", "javascript"),
                        ("portal.css", "text/css")):  # fmt: skip
        resp = httpx.get(f"{portal_url}/portal/assets/{asset}")
        assert resp.status_code == 200 and kind in resp.headers["content-type"], asset
    assert httpx.get(f"{portal_url}/portal/assets/../app.py").status_code == 404
    assert httpx.get(f"{portal_url}/portal/assets/nothing.js").status_code == 404
    # The portal is not part of the API's OpenAPI document.
    assert not any(p.startswith("/portal") for p in httpx.get(f"{portal_url}/schema/openapi.json").json()["paths"])


def test_tile_sources_for_the_content_security_policy() -> None:
    from portal.app import tile_origin

    assert tile_origin("") == ""
    assert tile_origin("/tiles/{z}/{x}/{y}.png") == ""
    assert tile_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png") == "https://*.tile.example.org"
    assert tile_origin("http://127.0.0.1:8080/{z}/{x}/{y}.png") == "http://127.0.0.1:8080"


async def test_operator_creates_a_flash_session_and_watches_it_sell_out(
    page: Page, portal_url: str, stack_settings: Settings
) -> None:
    operator = new_operator(stack_settings)
    await sign_in(page, portal_url, operator)
    await expect(page.locator("#who")).to_contain_text("(operator)")
    await expect(page.get_by_role("button", name="Running tasks")).to_be_hidden()  # merchants' tabs
    await expect(page.get_by_role("button", name="Till")).to_be_hidden()

    form = page.locator("#template-form")  # operators make platform templates, given out by claiming
    assert await form.locator("select[name=distribution]").input_value() == "claim"
    await form.locator("input[name=name]").fill("Morning flash")
    await form.locator("select[name=type]").select_option("direct")
    await form.locator("input[name=amount]").fill("5")
    await expect(page.locator("#rule-preview")).to_have_text("5.00 off")
    await form.get_by_role("button", name="Create template").click()
    await expect(page.locator("#template-list tbody tr").filter(has_text="Morning flash")).to_be_visible()

    await page.get_by_role("button", name="Flash sessions").click()
    flash = page.locator("#flash-form")
    await expect(flash.locator("select[name=template_id] option")).to_have_text(["Morning flash — 5.00 off"])
    # Open since a minute ago (the field is the browser's local time).
    started = await page.evaluate(
        "() => { const d = new Date(Date.now() - 60000); const p = n => String(n).padStart(2, '0');"
        " return `${d.getFullYear()}-${p(d.getMonth()+1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; }"
    )
    await flash.locator("input[name=starts_at]").fill(started)
    await flash.locator("input[name=stock]").fill("3")
    await flash.get_by_role("button", name="Create flash session").click()
    await expect(page.locator("#flash-message")).to_contain_text("Created session")
    row = page.locator("#flash-list tbody tr").first
    await expect(row.locator(".remaining")).to_have_text("3")
    await expect(row.locator(".state")).to_have_text("open")
    session_id = await row.get_attribute("data-session-id")

    # Five runners for three coupons: three get one, two are told it sold out; the page follows.
    outcomes = []
    for _ in range(5):
        runner = new_runner(portal_url).login(portal_url, "runner-app")
        resp = httpx.post(f"{portal_url}/api/v1/coupon/flash-sessions/{session_id}/claims", headers=runner)
        outcomes.append(resp.json().get("code") if resp.status_code != 201 else "ok")
    assert sorted(outcomes) == ["ok", "ok", "ok", "sold_out", "sold_out"], outcomes
    await expect(row.locator(".remaining")).to_have_text("0", timeout=10_000)
    await expect(row.locator(".state")).to_have_text("SOLD OUT")
