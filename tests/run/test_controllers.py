"""The run HTTP API end to end on the session app: tasks, nearby, runs, points, finish, reads."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from picool.kernel import Kernel
from run import geo

from .conftest import SHANGHAI, make_task, make_template, ms, offset, task_body, track_to

TASKS = "/api/v1/run/tasks"


async def _setup(client: httpx.AsyncClient, accounts: Any, **task_over: Any) -> tuple[Any, str, dict[str, Any]]:
    merchant = await accounts.merchant()
    template_id = await make_template(client, merchant.headers)
    task = await make_task(client, merchant.headers, template_id, **task_over)
    return merchant, template_id, task


async def test_create_and_read_task(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    merchant, template_id, task = await _setup(client, accounts)
    assert task["merchant_id"] == merchant.merchant_id
    assert task["destination"] == {"lat": SHANGHAI[0], "lon": SHANGHAI[1]}
    assert task["status"] == "active" and task["completed_count"] == 0 and task["quota"] == 10
    assert task["reward_template_id"] == template_id
    assert task["starts_at"] is None and task["ends_at"] is None and task["geofence"] is None
    assert isinstance(task["id"], str)
    runner = await accounts.runner()
    got = await client.get(f"{TASKS}/{task['id']}", headers=runner.headers)
    assert got.status_code == 200
    assert got.json() == task
    assert int(task["id"]) in await geo.TaskIndex(kernel.redis).members()
