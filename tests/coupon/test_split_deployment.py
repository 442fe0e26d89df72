"""The split deployment: ``picool serve --no-consumers`` answers the claims and consumes nothing, ``picool
work`` (no HTTP) writes them to PostgreSQL; both as real processes against the test session's servers,
on topics of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from coupon import models
from coupon import service as coupon_service
from picool.kernel import Kernel
from picool.settings import Settings
from picool.stack import free_port
from picool.testing import wait_for
from tests.coupon.conftest import MakeTemplate, iso
from tests.coupon.runners import make_runners, storm_env

RUNNERS = 12


class Processes:
    """The two halves as child processes, each logging to a file of its own."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = storm_env(settings, "split", PICOOL_LOG_LEVEL="INFO", PICOOL_LOG_FORMAT="json")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def _start(self, name: str, args: list[str], node_id: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "picool.cli", *args],
            env={**self.env, "PICOOL_NODE_ID": str(node_id)},
            stdout=(self.tmp / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_serve(self) -> None:
        proc = self._start("serve", ["serve", "--port", str(self.port), "--no-consumers"], 231)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"serve exited:\n{self.log('serve')[-3000:]}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready:\n{self.log('serve')[-3000:]}")

    def start_work(self) -> None:
        self.metrics_port = free_port()
        proc = self._start("work", ["work", "--metrics-port", str(self.metrics_port)], 232)
        deadline = time.monotonic() + 90
        while "Picool work: ready" not in self.log("work"):
            assert proc.poll() is None, f"work exited:\n{self.log('work')[-3000:]}"
            assert time.monotonic() < deadline, f"work not ready:\n{self.log('work')[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def processes(stack_settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(stack_settings, tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


async def _rows(kernel: Kernel, template_id: int) -> int:
    async with kernel.sessionmaker() as db:
        q = select(func.count()).select_from(models.UserCoupon).where(models.UserCoupon.template_id == template_id)
        return int((await db.execute(q)).scalar_one())


async def test_serve_without_consumers_and_work_apart(
    processes: Processes, client: httpx.AsyncClient, accounts: Any, make_template: MakeTemplate, kernel: Kernel
) -> None:
    operator = await accounts.operator()
    template = await make_template(operator, total_count=1000, per_user_limit=5)
    now = datetime.now(UTC)
    resp = await client.post(
        "/api/v1/coupon/flash-sessions",
        json={"template_id": template["id"], "starts_at": iso(now - timedelta(minutes=1)),
              "ends_at": iso(now + timedelta(hours=1)), "stock": 500},
        headers=operator.headers,
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    path = f"/api/v1/coupon/flash-sessions/{resp.json()['id']}/claims"
    tid = int(template["id"])
    runners = await make_runners(kernel, RUNNERS, prefix="split")
    store = coupon_service.claim_store(kernel)
    await asyncio.to_thread(processes.start_serve)

    # The serving process answers claims and runs no consumer: they wait in Redis's pending ledger.
    async with httpx.AsyncClient(base_url=processes.url, timeout=20) as http:
        first = time.monotonic()
        answers = await asyncio.gather(*(http.post(path, headers=r.headers) for r in runners))
        assert [a.status_code for a in answers] == [201] * RUNNERS, [a.text for a in answers if a.status_code != 201]
        await asyncio.sleep(1.0)
        pending, rows = await store.pending_count(tid), await _rows(kernel, tid)
        # (The session app's reconciler re-sends claims pending for 5 s; this looked well before that.)
        assert time.monotonic() - first < coupon_service.CLAIMS_GRACE_MS / 1000, "the machine stalled; rerun"
    assert (pending, rows) == (RUNNERS, 0)
    started = [r for r in _json_lines(processes.log("serve")) if r.get("msg") == "kernel started"]
    assert started and started[0]["consumers"] is False

    # The worker process, with no HTTP, writes them; and claims made while it runs reach PostgreSQL too.
    await asyncio.to_thread(processes.start_work)

    async def persisted(n: int) -> bool:
        return await _rows(kernel, tid) == n and await store.pending_count(tid) == 0

    await wait_for(lambda: persisted(RUNNERS), timeout_s=30, interval_s=0.1)
    async with httpx.AsyncClient(base_url=processes.url, timeout=20) as http:
        again = await asyncio.gather(*(http.post(path, headers=r.headers) for r in runners))
    assert [a.status_code for a in again] == [201] * RUNNERS
    await wait_for(lambda: persisted(2 * RUNNERS), timeout_s=30, interval_s=0.1)
    async with kernel.sessionmaker() as db:
        q = select(models.UserCoupon.id).where(models.UserCoupon.template_id == tid)
        ids = set((await db.execute(q)).scalars())
    assert ids == {int(a.json()["id"]) for a in [*answers, *again]}

    # The worker shows its orchestrator and Prometheus its health, readiness and metrics (and no API).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{processes.metrics_port}", timeout=10) as mgmt:
        assert (await mgmt.get("/healthz")).status_code == 200
        ready = await mgmt.get("/readyz")
        assert ready.status_code == 200, ready.text
        scraped = (await mgmt.get("/metrics")).text
        assert 'picool_kafka_consumer_lag{consumer="coupon.claims"}' in scraped
        assert (await mgmt.get("/api/v1/ping")).status_code == 404

    # SIGTERM stops the worker in order.
    work = processes.procs["work"]
    work.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(work.wait, 40) == 0
    assert "Picool work: stopped." in processes.log("work")


def _json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output (other lines skipped)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out
