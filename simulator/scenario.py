"""The simulation: merchants set up, runners run (some cheat), a flash sale, merchants redeem.

Everything goes through the public HTTP API of a running stack, as the apps would. Tracks are
recorded in real time (one fix a second, uploaded every ten): the server checks timestamps against
the run's accept time and deadline, so runs overlap instead of being replayed faster than life, and
``--run-seconds`` sets how long an honest run lasts (and so how far from the door runners start).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simulator import tracks
from simulator.client import ApiError, Device, Traffic, device_address
from simulator.report import Report, Track, draw_map

PASSWORD = "simulated runner 1"
UPLOAD_EVERY_S = 10
REWARD_WAIT_S = 60.0
RULES: list[dict[str, Any]] = [
    {"type": "full_reduction", "threshold_cents": 5_000, "amount_cents": 1_000},
    {"type": "discount", "percent_off": 15, "max_discount_cents": 2_000},
    {"type": "direct", "amount_cents": 500},
    {"type": "full_reduction", "threshold_cents": 10_000, "amount_cents": 2_500},
]


@dataclass(frozen=True)
class Options:
    """What ``picool simulate`` was asked for."""

    url: str = "http://127.0.0.1:8000"
    runners: int = 200
    center: tuple[float, float] = (31.2304, 121.4737)
    merchants: int | None = None
    cheaters: float = 0.10
    quitters: float = 0.05
    run_seconds: float = 60.0
    out: Path = Path()
    seed: int | None = None
    operator_email: str | None = None
    operator_password: str | None = None
    data_dir: str = ".picool"


@dataclass
class Shop:
    """A simulated merchant: its till, its batch, its tasks."""

    device: Device
    merchant_id: str
    location: tuple[float, float]
    template_id: str = ""
    tasks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunnerState:
    """A simulated runner and what happened to it."""

    index: int
    kind: tracks.Kind
    device: Device
    email: str
    user_id: str = ""
    run: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    outcome: str = ""
    fixes: list[tuple[float, float]] = field(default_factory=list)
    flash_coupon: str | None = None


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(rfc3339: str) -> int:
    return math.floor(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


class Simulation:
    """One simulation against ``options.url``; :meth:`run` returns its :class:`Report`."""

    def __init__(self, options: Options, console: Console) -> None:
        self.o = options
        self.console = console
        self.rng = random.Random(options.seed)
        self.traffic = Traffic()
        self.shops: list[Shop] = []
        self.runners: list[RunnerState] = []
        self.devices: list[Device] = []
        n_merchants = options.merchants or max(2, min(20, options.runners // 20))
        self.report = Report(
            url=options.url,
            runners=options.runners,
            merchants=n_merchants,
            tasks=0,
            center=options.center,
            run_seconds=options.run_seconds,
        )
        self.rewards_by_template: Counter[str] = Counter()
        self.used_by_template: Counter[str] = Counter()
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
        )

    def device(self, kind: int, index: int) -> Device:
        """A new device with its own loopback source address."""
        d = Device(self.o.url, self.traffic, source=device_address(kind, index))
        self.devices.append(d)
        return d

    # ------------------------------------------------------------------------------------ driver

    async def run(self) -> Report:
        """Every phase in order; the report, with its invariants checked."""
        try:
            await self._ready()
            with self.progress:
                operator = asyncio.create_task(self._operator())
                await self._phase("set-up", self._set_up_shops())
                await self._phase("runs", self._run_all())
                await self._phase("rewards", self._collect_rewards())
                await self._phase("flash", self._flash(await operator))
                await self._phase("redemptions", self._redeem())
            await self._phase("checks", self._check_counters())
        finally:
            await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)
        r = self.report
        r.requests = self.traffic.requests
        r.statuses = self.traffic.by_status
        r.server_errors = self.traffic.server_errors
        r.rate_limited = self.traffic.rate_limited
        r.transport_retries = self.traffic.transport_retries
        r.check(
            "no server errors",
            not self.traffic.server_errors and not self.traffic.transport_errors,
            f"{len(self.traffic.server_errors)} x 5xx, {self.traffic.transport_errors} transport errors",
        )
        r.tracks = [Track(x.kind, x.outcome, x.fixes) for x in self.runners if x.fixes]
        return r

    async def _phase(self, name: str, work: Any) -> None:
        t0 = time.monotonic()
        if not self.console.is_terminal:  # no live bars in a log: say where we are instead
            self.console.log(f"{name}...")
        await work
        self.report.phases_s[name] = time.monotonic() - t0

    async def _ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.o.url, timeout=5) as http:
            try:
                resp = await http.get("/readyz")
            except httpx.HTTPError as exc:
                raise SystemExit(f"No Picool at {self.o.url} ({exc}). Start one with `picool dev` first.") from exc
            if resp.status_code != 200:
                raise SystemExit(f"{self.o.url}/readyz answered {resp.status_code}: the stack is not ready.")

    # ------------------------------------------------------------------------------------ set-up

    async def _set_up_shops(self) -> None:
        n = self.report.merchants
        bar = self.progress.add_task("merchants and tasks", total=n, note="")
        # Enough slots for everyone, unevenly spread: some tasks fill up and runners move on.
        per_task = max(1, math.ceil(self.o.runners / (2 * n)))

        async def one(i: int) -> None:
            where = tracks.point_at(self.o.center, 1500 * math.sqrt(self.rng.random()), self.rng.uniform(0, 360))
            dev = self.device(2, i)
            email = f"sim-shop-{uuid.uuid4().hex[:10]}@example.com"
            made = await dev.call(
                "POST", "/api/v1/auth/merchants", auth=False,
                json={"name": f"Simulated shop {i + 1}", "email": email, "password": PASSWORD,
                      "location": {"lat": where[0], "lon": where[1]}, "category": "food"},
            )  # fmt: skip
            await dev.login(email, PASSWORD, "merchant-portal")
            shop = Shop(dev, made["merchant_id"], where)
            quotas = [math.ceil(per_task * self.rng.uniform(0.8, 1.4)) for _ in range(2)]
            template = await dev.call(
                "POST", "/api/v1/coupon/templates",
                json={"name": f"Run reward {i + 1}", "rule": self.rng.choice(RULES),
                      "validity": {"kind": "relative", "days": 30}, "total_count": sum(quotas) + 10,
                      "per_user_limit": 2, "distribution": "task_reward"},
            )  # fmt: skip
            shop.template_id = template["id"]
            # One task ends at the shop's door, one at a place nearby (a park, the river).
            spots = [where, tracks.point_at(where, self.rng.uniform(150, 400), self.rng.uniform(0, 360))]
            for k, (spot, quota) in enumerate(zip(spots, quotas, strict=True)):
                task = await dev.call(
                    "POST", "/api/v1/run/tasks",
                    json={"title": f"Run to shop {i + 1}" + (" (park)" if k else ""),
                          "destination": {"lat": spot[0], "lon": spot[1]},
                          "radius_m": self.rng.choice([60, 80, 100, 120]),
                          "min_distance_m": round(0.6 * 2.5 * self.o.run_seconds / 10) * 10,
                          "time_limit_s": int(max(600, 4 * self.o.run_seconds)),
                          "reward_template_id": shop.template_id, "quota": quota},
                )  # fmt: skip
                shop.tasks.append(task)
            self.shops.append(shop)
            self.progress.advance(bar)

        await asyncio.gather(*(one(i) for i in range(n)))
        self.report.tasks = sum(len(s.tasks) for s in self.shops)
        self.report.shops = [s.location for s in self.shops]
        self.report.destinations = [
            (t["destination"]["lat"], t["destination"]["lon"], t["radius_m"]) for s in self.shops for t in s.tasks
        ]

    def _kinds(self) -> list[tracks.Kind]:
        n = self.o.runners
        cheaters = max(1 if n >= 5 and self.o.cheaters > 0 else 0, round(n * self.o.cheaters))
        quitters = max(1 if n >= 10 and self.o.quitters > 0 else 0, round(n * self.o.quitters))
        kinds: list[tracks.Kind] = ["driver" if k % 2 == 0 else "teleporter" for k in range(cheaters)]
        kinds += ["quitter"] * quitters
        kinds += ["honest"] * (n - len(kinds))
        self.rng.shuffle(kinds)
        return kinds[:n]

    # ------------------------------------------------------------------------------------ runs

    async def _run_all(self) -> None:
        n = self.o.runners
        signups = self.progress.add_task("runners signed up", total=n, note="")
        finished = self.progress.add_task("runs finished", total=n, note="")
        gate = asyncio.Semaphore(16)  # sign-ups hash passwords: do not queue hundreds at once
        stagger = min(5.0, n / 20)  # the sign-up gate spreads the crowd out further
        all_tasks = [t for s in self.shops for t in s.tasks]
        self.runners = [
            RunnerState(i, kind, self.device(1, i), f"sim-runner-{uuid.uuid4().hex[:10]}@example.com")
            for i, kind in enumerate(self._kinds())
        ]
        self.report.kinds = Counter(r.kind for r in self.runners)
        running = [0]

        async def one(r: RunnerState) -> None:
            await asyncio.sleep(self.rng.uniform(0, stagger))
            started = False
            try:
                async with gate:
                    made = await r.device.call(
                        "POST", "/api/v1/auth/register", auth=False,
                        json={"email": r.email, "password": PASSWORD, "display_name": f"Runner {r.index + 1}"},
                    )  # fmt: skip
                    r.user_id = made["user_id"]
                    await r.device.login(r.email, PASSWORD, "runner-app")
                self.progress.advance(signups)
                started = True
                running[0] += 1
                await self._one_run(r, self.rng.choice(all_tasks))
            except ApiError as exc:
                r.outcome = r.outcome or f"error:{exc.code}"
                self.report.runner_errors[exc.code] += 1
            except httpx.HTTPError as exc:
                r.outcome = r.outcome or "error:transport"
                self.report.runner_errors[type(exc).__name__] += 1
            finally:
                running[0] -= 1 if started else 0
                self.progress.update(finished, advance=1, note=f"{running[0]} running")

        await asyncio.gather(*(one(r) for r in self.runners))

    async def _one_run(self, r: RunnerState, home: dict[str, Any]) -> None:
        rng = random.Random(self.rng.random())
        speed = tracks.speed_mps(r.kind, rng)
        planned = tracks.start_distance_m(r.kind, speed, self.o.run_seconds, rng)
        home_dest = (home["destination"]["lat"], home["destination"]["lon"])
        start = tracks.point_at(home_dest, planned, rng.uniform(0, 360))
        # Look around, then take the task whose distance suits the run this runner wants.
        near = await r.device.call(
            "GET", "/api/v1/run/tasks/nearby",
            params={"lat": start[0], "lon": start[1], "radius_m": max(3000, int(planned) + 500), "limit": 20},
        )  # fmt: skip
        candidates = sorted(near["items"], key=lambda t: abs(t["distance_m"] - planned))
        for task in candidates[:5]:
            try:
                r.run = await r.device.call("POST", f"/api/v1/run/tasks/{task['id']}/runs")
            except ApiError as exc:
                if exc.code in ("task_unavailable", "run_in_progress"):
                    continue  # someone took the last slot meanwhile: the next one
                raise
            r.task = task
            break
        if r.run is None or r.task is None:
            r.outcome = "no_task"
            self.report.no_task += 1
            return
        self.report.runs_accepted += 1
        dest = (r.task["destination"]["lat"], r.task["destination"]["lon"])
        if not 0.8 * planned <= float(r.task["distance_m"]) <= 1.25 * planned:
            # Its first choices were full and this one is far off the run the runner wanted: model the
            # runner setting off from a spot that suits it (the server never learns where a run starts).
            start = tracks.point_at(dest, planned, rng.uniform(0, 360))
        plan = tracks.make_plan(r.kind, start, dest, float(r.task["radius_m"]), speed=speed, rng=rng)
        run_id = r.run["id"]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        t0_ms = int(time.time() * 1000)  # the phone's clock as it sets off, after the accept
        last_ts = _ms(r.run["accepted_at"])
        batch: list[dict[str, Any]] = []
        k = 1
        while k <= plan.duration_s:
            await asyncio.sleep(max(0.0, t0 + k - loop.time()))
            # Stamped on the phone's schedule, one fix a second from setting off, as its GPS stamps them
            # however late this process gets round to it (a busy machine used to bunch several fixes into
            # one millisecond, which the server's smoothing rightly read as a shorter run); never before
            # the accept, always increasing, never in the future (the sleep above saw to that).
            last_ts = max(last_ts + 1, t0_ms + 1000 * k)
            fix = plan.fix(float(k), last_ts)
            r.fixes.append((fix.lat, fix.lon))
            batch.append(fix.as_json())
            if len(batch) >= UPLOAD_EVERY_S:
                await self._upload(r.device, run_id, batch)
                batch = []
            k += 1
        if batch:
            await self._upload(r.device, run_id, batch)
        done = await r.device.call("POST", f"/api/v1/run/runs/{run_id}/finish", idempotent=True)
        r.run = done
        if done["status"] == "completed":
            r.outcome = "completed"
            self.report.runs_completed += 1
        else:
            r.outcome = done.get("rejection_reason") or done["status"]
            self.report.runs_rejected[r.outcome] += 1
        self.report.outcomes_by_kind.setdefault(r.kind, Counter())[r.outcome] += 1

    async def _upload(self, device: Device, run_id: str, batch: list[dict[str, Any]]) -> None:
        """Send a batch of fixes; after a lost answer the repeat may find the batch already stored."""
        try:
            await device.call("POST", f"/api/v1/run/runs/{run_id}/points", json={"points": batch}, idempotent=True)
        except ApiError as exc:
            if not (exc.status == 400 and "already stored" in str(exc.body.get("detail", ""))):
                raise

    # ------------------------------------------------------------------------------------ rewards

    async def _wallet(self, r: RunnerState) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await r.device.call(
                "GET", "/api/v1/coupon/me/coupons", params={"cursor": cursor} if cursor else None
            )
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def _collect_rewards(self) -> None:
        done = [r for r in self.runners if r.outcome == "completed" and r.run is not None]
        self.report.rewards_expected = len(done)
        bar = self.progress.add_task("rewards in wallets", total=len(done), note="")
        deadline = time.monotonic() + REWARD_WAIT_S
        gate = asyncio.Semaphore(20)

        async def one(r: RunnerState) -> None:
            assert r.run is not None
            while True:
                async with gate:
                    try:
                        wallet = await self._wallet(r)
                    except (ApiError, httpx.HTTPError):
                        wallet = []  # counted in the traffic figures; try again
                if any(c["source"] == {"kind": "task", "ref": r.run["id"]} for c in wallet):
                    self.report.rewards_delivered += 1
                    self.progress.advance(bar)
                    return
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(1.0)

        await asyncio.gather(*(one(r) for r in done))

    # ------------------------------------------------------------------------------------ flash

    async def _operator(self) -> Device | None:
        """The operator's device, signed in: the given account, or one made with ``picool admin``."""
        email, password = self.o.operator_email, self.o.operator_password
        if not (email and password):
            email, password = f"sim-operator-{uuid.uuid4().hex[:8]}@example.com", secrets.token_urlsafe(16)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "picool.cli", "admin", "--data-dir", self.o.data_dir,
                "create-operator", "--email", email, "--password", password, "--display-name", "Simulator",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
            except TimeoutError:
                proc.kill()
                out = b"picool admin create-operator did not finish in 120 s"
            if proc.returncode != 0:
                self.report.flash = {
                    "skipped": "no operator (give --operator-email/--operator-password, or the --data-dir "
                    f"of `picool dev`): {out.decode(errors='replace').strip().splitlines()[-1:]}"
                }
                return None
        dev = self.device(3, 0)
        await dev.login(email, password, "merchant-portal")
        return dev

    async def _flash(self, operator: Device | None) -> None:
        if operator is None:
            return
        claimants = [r for r in self.runners if r.user_id]
        stock = max(1, len(claimants) // 4)
        template = await operator.call(
            "POST", "/api/v1/coupon/templates",
            json={"name": "Daily flash: 20% off", "rule": {"type": "discount", "percent_off": 20,
                  "max_discount_cents": 1_000}, "validity": {"kind": "relative", "days": 7},
                  "total_count": stock, "per_user_limit": 1, "distribution": "claim"},
        )  # fmt: skip
        opens = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
        session = await operator.call(
            "POST", "/api/v1/coupon/flash-sessions",
            json={"template_id": template["id"], "starts_at": _iso(opens),
                  "ends_at": _iso(opens + timedelta(minutes=10)), "stock": stock},
        )  # fmt: skip
        self.report.flash = {"session_id": session["id"], "template_id": template["id"], "stock": stock,
                             "claimants": len(claimants)}  # fmt: skip
        bar = self.progress.add_task("flash claims", total=len(claimants), note=f"stock {stock}")
        same_key_answers: list[bool] = []

        async def one(r: RunnerState) -> None:
            # Everyone taps at the opening second (give or take their reflexes).
            await asyncio.sleep(max(0.0, opens.timestamp() - time.time()) + self.rng.uniform(0, 0.3))
            key = uuid.uuid4().hex
            path = f"/api/v1/coupon/flash-sessions/{session['id']}/claims"
            try:
                coupon = await r.device.call("POST", path, headers={"Idempotency-Key": key}, idempotent=True)
                r.flash_coupon = coupon["id"]
                self.report.flash_claims["ok"] += 1
                if self.rng.random() < 0.1:  # the answer got lost: the app retries with the same key
                    again = await r.device.call("POST", path, headers={"Idempotency-Key": key}, idempotent=True)
                    same_key_answers.append(again["id"] == coupon["id"])
            except ApiError as exc:
                self.report.flash_claims[exc.code] += 1
            except httpx.HTTPError as exc:
                self.report.flash_claims[f"transport: {type(exc).__name__}"] += 1
            self.progress.advance(bar)

        await asyncio.gather(*(one(r) for r in claimants))
        ok = self.report.flash_claims["ok"]
        self.report.flash["same_key_retries"] = len(same_key_answers)
        self.report.check(
            "flash: never oversold, sold out when wanted",
            ok <= stock and (ok == stock or len(claimants) < stock),
            f"{ok} claims for a stock of {stock} among {len(claimants)} runners",
        )
        self.report.check(
            "flash: a retried claim (same Idempotency-Key) gets the same coupon",
            all(same_key_answers),
            f"{sum(same_key_answers)} of {len(same_key_answers)} retries",
        )
        day = opens.date().isoformat()
        remaining = None
        for _ in range(20):  # the session's remaining count is at most a second old
            listed = await operator.call("GET", "/api/v1/coupon/flash-sessions", params={"date": day})
            remaining = next((s["remaining"] for s in listed["items"] if s["id"] == session["id"]), None)
            if remaining == stock - ok:
                break
            await asyncio.sleep(0.5)
        self.report.check(
            "flash: the session shows what is left",
            remaining == stock - ok,
            f"remaining {remaining}, expected {stock - ok}",
        )
        assigned = None
        for _ in range(60):  # claims reach PostgreSQL through Kafka
            stats = await operator.call("GET", f"/api/v1/coupon/templates/{template['id']}/stats")
            assigned = stats["assigned"]
            if assigned == ok:
                break
            await asyncio.sleep(0.5)
        self.report.check(
            "flash: every claim persisted (template counter)", assigned == ok, f"assigned {assigned}, claims {ok}"
        )

    # ------------------------------------------------------------------------------------ till

    async def _redeem(self) -> None:
        shops = {s.merchant_id: s for s in self.shops}
        wallets: dict[int, list[dict[str, Any]]] = {}
        gate = asyncio.Semaphore(20)

        async def fetch(r: RunnerState) -> None:
            async with gate:
                with contextlib.suppress(ApiError, httpx.HTTPError):  # a missing wallet fails the checks
                    wallets[r.index] = await self._wallet(r)

        await asyncio.gather(*(fetch(r) for r in self.runners if r.user_id))
        self._check_wallets(wallets)
        visits: list[tuple[RunnerState, dict[str, Any], Shop]] = []
        for r in self.runners:
            for c in wallets.get(r.index, []):
                if c["status"] != "unused" or self.rng.random() > 0.6:
                    continue
                shop = shops.get(c["merchant_id"]) if c["merchant_id"] else self.rng.choice(self.shops)
                if shop is None:
                    continue
                if c["merchant_id"] and len(self.shops) > 1 and self.rng.random() < 0.05:
                    shop = self.rng.choice([s for s in self.shops if s is not shop])  # the wrong shop
                visits.append((r, c, shop))
        self.report.redemption_visits = len(visits)
        bar = self.progress.add_task("redemptions at the till", total=len(visits), note="")
        mismatches: list[str] = []

        async def visit(r: RunnerState, coupon: dict[str, Any], shop: Shop) -> None:
            amount = self.rng.randint(40, 320) * 50  # 20.00 to 160.00
            order = {"code": coupon["code"], "order_amount_cents": amount}
            async with gate:
                try:
                    preview = await shop.device.call(
                        "POST", "/api/v1/coupon/redemptions/preview", json=order, idempotent=True
                    )
                except ApiError as exc:
                    self.report.redemption_refusals[exc.code] += 1
                    self.progress.advance(bar)
                    return
                except httpx.HTTPError as exc:
                    self.report.redemption_refusals[f"transport: {type(exc).__name__}"] += 1
                    self.progress.advance(bar)
                    return
                key = uuid.uuid4().hex
                try:
                    done = await shop.device.call(
                        "POST", "/api/v1/coupon/redemptions", json={**order, "idempotency_key": key}, idempotent=True
                    )
                except (ApiError, httpx.HTTPError) as exc:
                    # The preview said yes and nothing else touches this coupon now: a refusal is a bug.
                    mismatches.append(f"{coupon['code']}: previewed, then {exc}")
                    self.progress.advance(bar)
                    return
                if (done["discount_cents"], done["payable_cents"]) != (
                    preview["discount_cents"],
                    preview["payable_cents"],
                ):
                    mismatches.append(
                        f"{coupon['code']}: preview {preview['discount_cents']} != {done['discount_cents']}"
                    )
                if self.rng.random() < 0.1:  # the till lost the answer and sends it again
                    again = await shop.device.call(
                        "POST", "/api/v1/coupon/redemptions", json={**order, "idempotency_key": key}, idempotent=True
                    )
                    if again["transaction_id"] == done["transaction_id"]:
                        self.report.redemption_replays += 1
                    else:
                        mismatches.append(f"{coupon['code']}: a retry redeemed again")
            self.report.redemptions_ok += 1
            self.report.discount_cents += done["discount_cents"]
            self.used_by_template[coupon["template_id"]] += 1
            self.progress.advance(bar)

        await asyncio.gather(*(visit(*v) for v in visits))
        self.report.check(
            "till: the preview shows what the redemption gives; a retry redeems nothing twice",
            not mismatches,
            f"{self.report.redemptions_ok} redemptions, {self.report.redemption_replays} retries; "
            + ("; ".join(mismatches[:3]) or "no mismatch"),
        )

    def _check_wallets(self, wallets: dict[int, list[dict[str, Any]]]) -> None:
        rewards: Counter[str] = Counter()
        wrong: list[str] = []
        for r in self.runners:
            coupons = wallets.get(r.index, [])
            task_refs = [c["source"]["ref"] for c in coupons if c["source"]["kind"] == "task"]
            flash_ids = [c["id"] for c in coupons if c["source"]["kind"] == "flash"]
            expected_task = [r.run["id"]] if r.outcome == "completed" and r.run else []
            if task_refs != expected_task:
                wrong.append(f"runner {r.index}: task rewards {task_refs}, expected {expected_task}")
            if flash_ids != ([r.flash_coupon] if r.flash_coupon else []):
                wrong.append(f"runner {r.index}: flash coupons {flash_ids}, claimed {r.flash_coupon}")
            for c in coupons:
                if c["source"]["kind"] == "task":
                    rewards[c["template_id"]] += 1
        self.rewards_by_template = rewards
        completed = self.report.runs_completed
        self.report.check(
            "runs: every completed run earned exactly one reward, nothing else did",
            self.report.rewards_delivered == completed and not [w for w in wrong if "task" in w],
            f"{self.report.rewards_delivered} rewards for {completed} completed runs"
            + (f"; {wrong[0]}" if wrong else ""),
        )
        self.report.check(
            "wallets hold exactly the rewards and the flash claims",
            not wrong,
            f"{sum(len(w) for w in wallets.values())} coupons in {len(wallets)} wallets"
            + (f"; {wrong[0]}" if wrong else ""),
        )
        cheaters_paid = [
            r.index for r in self.runners if r.kind in ("driver", "teleporter") and r.outcome == "completed"
        ]
        self.report.check(
            "no cheater was rewarded",
            not cheaters_paid,
            f"{sum(1 for r in self.runners if r.kind in ('driver', 'teleporter'))} cheaters, "
            f"{len(cheaters_paid)} completed",
        )

    # ------------------------------------------------------------------------------------ counters

    async def _check_counters(self) -> None:
        completed_by_task: Counter[str] = Counter(
            r.task["id"] for r in self.runners if r.outcome == "completed" and r.task is not None
        )
        wrong: list[str] = []
        for shop in self.shops:
            try:
                await self._check_shop(shop, completed_by_task, wrong)
            except (ApiError, httpx.HTTPError) as exc:
                wrong.append(f"shop {shop.merchant_id}: {exc}")
        self.report.check(
            "task and template counters match what runners and tills saw",
            not wrong,
            f"{self.report.tasks} tasks, {len(self.shops)} templates" + (f"; {wrong[0]}" if wrong else ""),
        )

    async def _check_shop(self, shop: Shop, completed_by_task: Counter[str], wrong: list[str]) -> None:
        for t in shop.tasks:
            now = await shop.device.call("GET", f"/api/v1/run/tasks/{t['id']}")
            if now["completed_count"] != completed_by_task[t["id"]] or now["completed_count"] > now["quota"]:
                wrong.append(f"task {t['id']}: {now['completed_count']} completed (quota {now['quota']}), "
                             f"runners saw {completed_by_task[t['id']]}")  # fmt: skip
        stats = await shop.device.call("GET", f"/api/v1/coupon/templates/{shop.template_id}/stats")
        want = (self.rewards_by_template[shop.template_id], self.used_by_template[shop.template_id])
        if (stats["assigned"], stats["used"]) != want:
            wrong.append(f"template {shop.template_id}: assigned/used {stats['assigned']}/{stats['used']}, want {want}")


async def simulate(options: Options, console: Console | None = None) -> Report:
    """Run a simulation, print the summary, write the map and the JSON summary into ``options.out``."""
    console = console or Console()
    options.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report = await Simulation(options, console).run()
    report.phases_s["total"] = time.monotonic() - t0
    report.print(console)
    with contextlib.suppress(OSError):
        draw_map(report, options.out / "simulate-map.png")
        console.print(f"map: {options.out / 'simulate-map.png'}")
    report.write_json(options.out / "simulate-summary.json")
    console.print(f"summary: {options.out / 'simulate-summary.json'}")
    console.print("[green]all invariants held[/]" if report.ok else "[red]some invariants FAILED[/]")
    return report


def main(options: Options) -> int:
    """``picool simulate``: the exit code (0 when every invariant held)."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the bars
    try:
        report = asyncio.run(simulate(options))
    except (ApiError, httpx.HTTPError) as exc:
        Console(stderr=True).print(f"[red]simulation aborted:[/] {exc}")
        return 2
    return 0 if report.ok else 1


def parse_center(text: str) -> tuple[float, float]:
    """``"LAT,LON"`` → (lat, lon); ValueError when malformed or beyond what tasks may use (+-85 degrees)."""
    lat_s, sep, lon_s = text.partition(",")
    if not sep:
        raise ValueError("expected LAT,LON, e.g. 31.2304,121.4737")
    lat, lon = float(lat_s), float(lon_s)
    if not (-84.0 <= lat <= 84.0 and -180.0 <= lon <= 180.0):
        raise ValueError("latitude must be within +-84 and longitude within +-180")
    return lat, lon
