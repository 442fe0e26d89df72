"""Run use cases beyond what the HTTP tests show: compact tracks, racing batches and finishes,
verification settings, and the schedulers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from picool.kernel import Kernel
from run import domain, models
from run.service import RunService, TaskService, event_id_of, verify_config_from

from .conftest import SHANGHAI, make_task, make_template, ms, read_events, rewound, track_to


def runs_service(kernel: Kernel) -> RunService:
    svc: RunService = kernel.services["run.runs"]
    return svc


def tasks_service(kernel: Kernel) -> TaskService:
    svc: TaskService = kernel.services["run.tasks"]
    return svc


async def started_run(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, **task_over: Any
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    merchant = await accounts.merchant()
    task = await make_task(client, merchant.headers, await make_template(client, merchant.headers), **task_over)
    runner = await accounts.runner()
    resp = await client.post(f"/api/v1/run/tasks/{task['id']}/runs", headers=runner.headers)
    assert resp.status_code == 201, resp.text
    return runner, task, await rewound(kernel, resp.json())


async def stored(kernel: Kernel, run_id: str) -> models.Run:
    async with kernel.sessionmaker() as s:
        row = await s.get(models.Run, int(run_id))
        assert row is not None
        return row


def test_verify_config_from_settings() -> None:
    assert verify_config_from({}) == domain.DEFAULT_VERIFY_CONFIG
    cfg = verify_config_from({"run_max_speed_mps": "9.5", "run_speed_window_s": "60"})
    assert (cfg.max_speed_mps, cfg.speed_window_s) == (9.5, 60.0)
    assert cfg.max_gap_s == domain.DEFAULT_VERIFY_CONFIG.max_gap_s
    for bad in [{"run_max_speed_mps": "fast"}, {"run_max_speed_mps": "0"}, {"run_speed_window_s": "nan"}]:
        with pytest.raises(ValueError):
            verify_config_from(bad)


async def test_track_is_stored_compactly_and_decodes(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    runner, _, run = await started_run(client, accounts, kernel)
    pts = track_to(SHANGHAI, ms(run["accepted_at"]) + 1000)
    for k in range(0, len(pts), 64):
        resp = await client.post(
            f"/api/v1/run/runs/{run['id']}/points", json={"points": pts[k : k + 64]}, headers=runner.headers
        )
        assert resp.status_code == 202
    row = await stored(kernel, run["id"])
    assert len(row.track) == domain.TRACK_HEADER_SIZE + 14 * len(pts)
    assert row.point_count == len(pts) and row.last_ts_ms == pts[-1]["ts_ms"]
    back = domain.decode_track(row.track)
    assert [p.ts_ms for p in back] == [p["ts_ms"] for p in pts]
    assert all(abs(b.lat - p["lat"]) < 1e-7 and abs(b.lon - p["lon"]) < 1e-7 for b, p in zip(back, pts, strict=True))


async def test_racing_batches_store_one_of_them(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    runner, _, run = await started_run(client, accounts, kernel)
    pts = track_to(SHANGHAI, ms(run["accepted_at"]) + 1000)
    overlapping = [pts[0:20], pts[10:30], pts[5:25], pts[15:35]]
    answers = await asyncio.gather(
        *(
            client.post(f"/api/v1/run/runs/{run['id']}/points", json={"points": b}, headers=runner.headers)
            for b in overlapping
        )
    )
    assert sorted(a.status_code for a in answers) == [202, 400, 400, 400]
    winner = overlapping[[a.status_code for a in answers].index(202)]
    row = await stored(kernel, run["id"])
    assert [p.ts_ms for p in domain.decode_track(row.track)] == [p["ts_ms"] for p in winner]


async def test_racing_finishes_complete_once(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    runner, task, run = await started_run(client, accounts, kernel)
    resp = await client.post(
        f"/api/v1/run/runs/{run['id']}/points",
        json={"points": track_to(SHANGHAI, ms(run["accepted_at"]) + 1000)},
        headers=runner.headers,
    )
    assert resp.status_code == 202
    answers = await asyncio.gather(
        *(client.post(f"/api/v1/run/runs/{run['id']}/finish", headers=runner.headers) for _ in range(8))
    )
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert all(b == bodies[0] for b in bodies) and bodies[0]["status"] == "completed"
    async with kernel.sessionmaker() as s:
        t = await s.get(models.Task, int(task["id"]))
        assert t is not None and (t.completed_count, t.reserved) == (1, 0)
    found = await read_events(kernel, run["id"])
    assert {env.id for env, _, _ in found} == {event_id_of(int(run["id"]))}


async def test_expiry_sweep_frees_slots(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    _, task, run = await started_run(client, accounts, kernel, quota=1)
    async with kernel.sessionmaker() as s, s.begin():
        await s.execute(
            update(models.Run)
            .where(models.Run.id == int(run["id"]))
            .values(deadline=datetime.now(UTC) - timedelta(seconds=5))
        )
    await runs_service(kernel).sweep_expired()
    row = await stored(kernel, run["id"])
    assert row.status == "expired" and row.finished_at == row.deadline
    async with kernel.sessionmaker() as s:
        t = await s.get(models.Task, int(task["id"]))
        assert t is not None and t.reserved == 0
    assert int(task["id"]) in await tasks_service(kernel).ctx.index.members()
    assert await runs_service(kernel).sweep_expired() == 0  # nothing left to do


async def test_window_sweep_is_idempotent(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    merchant = await accounts.merchant()
    template_id = await make_template(client, merchant.headers)
    task = await make_task(
        client, merchant.headers, template_id, ends_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    async with kernel.sessionmaker() as s, s.begin():
        await s.execute(
            update(models.Task)
            .where(models.Task.id == int(task["id"]))
            .values(ends_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await tasks_service(kernel).sweep_windows()
    assert await tasks_service(kernel).sweep_windows() == 0
    async with kernel.sessionmaker() as s:
        status = (await s.execute(select(models.Task.status).where(models.Task.id == int(task["id"])))).scalar_one()
    assert status == "ended"
    assert int(task["id"]) not in await tasks_service(kernel).ctx.index.members()
