"""The run subsystem as mounted: its schedulers, and the ``picool admin reindex-tasks`` command."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from picool.cli import main
from picool.kernel import Kernel
from run import app as run_app
from run import geo

from .conftest import make_task, make_template


def test_subsystem_schedules_window_and_expiry_sweeps(kernel: Kernel) -> None:
    sub = next(s for s in kernel.subsystems if s.name == "run")
    assert {p.name for p in sub.periodics} == {"run.windows", "run.expiry"}
    assert [c.name for c in run_app.admin_commands()] == ["reindex-tasks"]


async def test_admin_reindex_tasks(
    client: httpx.AsyncClient, accounts: Any, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    merchant = await accounts.merchant()
    template_id = await make_template(client, merchant.headers)
    tasks = [await make_task(client, merchant.headers, template_id, title=f"t{k}") for k in range(3)]
    await kernel.redis.delete(geo.GEO_KEY, geo.VERSIONS_KEY)  # the index is lost
    s = kernel.settings
    for name, value in [
        ("DATABASE_URL", s.database_url),
        ("REDIS_URL", s.redis_url),
        ("KAFKA_BOOTSTRAP", s.kafka_bootstrap),
        ("ENV", "test"),
    ]:
        monkeypatch.setenv(f"PICOOL_{name}", value)
    # The command runs its own event loop, so it gets a thread of its own.
    result = await asyncio.to_thread(CliRunner().invoke, main, ["admin", "reindex-tasks"])
    assert result.exit_code == 0, result.output
    assert "3 tasks listed" in result.output
    assert await geo.TaskIndex(kernel.redis).members() == {int(t["id"]) for t in tasks}
