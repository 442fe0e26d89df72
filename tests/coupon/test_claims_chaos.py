"""Chaos: a claim storm against the app as a real process, the process killed with SIGKILL in the middle of
it, restarted; then every claim Redis accepted is in PostgreSQL exactly once, every 201 is among them, the
only others are claims whose answer died with the process, nobody is over the limit and the stock adds up.
Both layouts: one ``picool serve``, and the split one (``picool serve --no-consumers`` + ``picool work``,
both killed, the worker in the middle of its batches).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from coupon import models
from coupon import service as coupon_service
from picool.kernel import Kernel
from picool.settings import Settings
from picool.stack import free_port
from picool.testing import wait_for
from tests.coupon.conftest import MakeTemplate, iso
from tests.coupon.runners import make_runners, storm_env

RUNNERS = 150
LIMIT = 4
STOCK = 5000  # more than RUNNERS * LIMIT: the storm ends by the kill and by limits, never by sell-out
CLIENTS = 48
KILL_AFTER_S = 1.5


class AppProcess:
    """``picool serve`` as a child process on a free port, against the test session's servers; with
    ``split``, ``picool serve --no-consumers`` and a ``picool work`` process beside it."""

    def __init__(self, settings: Settings, tmp: Path, *, split: bool = False) -> None:
        self.split = split
        self.work: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = storm_env(settings, "chaos")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.tmp / f"app-{self.starts}.log").open("wb")
        env = {**self.env, "PICOOL_NODE_ID": str(220 + self.starts)}
        split = ["--no-consumers"] if self.split else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "picool.cli", "serve", "--port", str(self.port), *split],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if self.split:
            work_log = (self.tmp / f"work-{self.starts}.log").open("wb")
            self.work = subprocess.Popen(
                [sys.executable, "-m", "picool.cli", "work"],
                env={**env, "PICOOL_NODE_ID": str(240 + self.starts)}, stdout=work_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"app exited:\n{self.log_tail()}")
            if self.work is not None and self.work.poll() is not None:
                raise AssertionError(f"worker exited:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        raise AssertionError(f"app not ready:\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self.work is not None:
            text = (self.tmp / f"work-{self.starts}.log").read_text(errors="replace")
            if "Picool work: ready" not in text:
                return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: the serving process (and the worker, in the middle of whatever batch it holds)."""
        for proc in (self.proc, self.work):
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
        for proc in (self.proc, self.work):
            if proc is not None:
                proc.wait(timeout=10)

    def stop(self) -> None:
        # Killed, not stopped: by then the test has what it wanted, and a graceful stop (draining the
        # consumers) would only cost time.
        for proc in (self.proc, self.work):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def log_tail(self) -> str:
        names = ["app", "work"] if self.split else ["app"]
        return "\n".join(
            (self.tmp / f"{name}-{n}.log").read_text(errors="replace")[-2000:]
            for n in range(1, self.starts + 1)
            for name in names
        )


@pytest.fixture(params=["single", "split"])
def app_process(stack_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AppProcess]:
    proc = AppProcess(stack_settings, tmp_path, split=request.param == "split")
    try:
        yield proc
    finally:
        proc.stop()


async def storm(url: str, path: str, runners: list[Any], kill_at: float, killer: Any) -> dict[str, Any]:
    """CLIENTS workers claim in a loop until the process dies under them; what each request got."""
    won: list[dict[str, Any]] = []
    refused: Counter[str] = Counter()
    lost: Counter[str] = Counter()  # sent, no answer: maybe accepted
    unsent = 0
    kinds: Counter[str] = Counter()
    stop = asyncio.Event()

    async def worker(w: int, http: httpx.AsyncClient) -> None:
        nonlocal unsent
        i = w
        while not stop.is_set():
            runner = runners[i % len(runners)]
            i += CLIENTS
            try:
                resp = await http.post(path, headers=runner.headers)
            except httpx.ConnectError as exc:
                kinds[type(exc).__name__] += 1
                unsent += 1  # refused before a byte was sent: cannot have been accepted
                return
            except httpx.HTTPError as exc:
                kinds[type(exc).__name__] += 1
                lost[runner.user_id] += 1
                return
            if resp.status_code == 201:
                won.append(resp.json())
            else:
                assert resp.status_code == 409, resp.text
                refused[resp.json()["code"]] += 1
            if i >= len(runners) * (LIMIT + 2):
                i = w  # around again: limits refuse from now on

    async def kill_later() -> None:
        await asyncio.sleep(kill_at)
        await asyncio.to_thread(killer)
        stop.set()

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
        await asyncio.gather(kill_later(), *(worker(w, http) for w in range(CLIENTS)))
    return {"won": won, "refused": refused, "lost": lost, "unsent": unsent, "errors": kinds}


async def test_sigkill_mid_storm_loses_nothing(
    app_process: AppProcess, client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    operator = await accounts.operator()
    template = await make_template(operator, total_count=STOCK + 100, per_user_limit=LIMIT)
    now = datetime.now(UTC)
    resp = await client.post(
        "/api/v1/coupon/flash-sessions",
        json={"template_id": template["id"], "starts_at": iso(now - timedelta(minutes=1)),
              "ends_at": iso(now + timedelta(hours=1)), "stock": STOCK},
        headers=operator.headers,
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    session_id = resp.json()["id"]
    runners = await make_runners(kernel, RUNNERS, prefix="chaos")
    await asyncio.to_thread(app_process.start)

    result = await storm(
        app_process.url, f"/api/v1/coupon/flash-sessions/{session_id}/claims", runners, KILL_AFTER_S,
        app_process.kill,
    )  # fmt: skip
    won, lost = result["won"], result["lost"]
    assert len(won) >= 20, result["refused"]  # the kill came in the middle of a real storm
    # The storm was cut by the kill: requests died in flight (answers lost) or were refused after it.
    assert sum(lost.values()) + result["unsent"] > 0, (len(won), result["refused"], result["errors"])

    await asyncio.to_thread(app_process.start)  # the restarted process's consumer and reconciler finish it
    tid, sid = int(template["id"]), int(session_id)
    store = coupon_service.claim_store(kernel)

    async def settled() -> bool:
        return await store.pending_count(tid) == 0

    await wait_for(settled, timeout_s=45, interval_s=0.25)
    ledger = await store.all_records(tid)
    async with kernel.sessionmaker() as db:
        rows = (
            await db.execute(
                select(models.UserCoupon.id, models.UserCoupon.user_id, models.UserCoupon.code).where(
                    models.UserCoupon.template_id == tid
                )
            )
        ).all()
        assigned = (
            await db.execute(select(models.CouponTemplate.assigned).where(models.CouponTemplate.id == tid))
        ).scalar_one()
    stored = {r.id: r for r in rows}
    remaining = (await store.session_remaining([(tid, sid)]))[0]
    assert remaining is not None and remaining >= 0
    assert remaining + len(ledger) == STOCK  # a claim not accepted took no stock
    assert set(stored) == set(ledger)  # Redis-accepted = PostgreSQL rows, exactly once each
    assert assigned == len(stored)  # counters exact
    answered = {int(c["id"]) for c in won}
    assert answered <= set(stored)  # every 201 is in PostgreSQL
    assert {stored[int(c["id"])].code for c in won} == {c["code"] for c in won}
    extra = Counter(str(stored[i].user_id) for i in set(stored) - answered)
    for user, n in extra.items():  # the only unanswered coupons are answers lost in the kill
        assert n <= lost[user], (user, n, lost[user])
    per_user = Counter(r.user_id for r in rows)
    assert max(per_user.values()) <= LIMIT
    for user, n in per_user.items():
        assert await store.user_count(tid, user) == n
    assert len(stored) == len(answered) + sum(extra.values())
