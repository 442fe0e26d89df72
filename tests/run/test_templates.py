"""The reward-template check over coupon's HTTP API, including coupon being unreachable."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from picool.errors import InvalidRequest, ServiceUnavailable
from picool.kernel import Kernel
from run.service import TaskService
from run.templates import TemplateDirectory

from .conftest import make_template, task_body


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_directory_answers(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    merchant = await accounts.merchant()
    directory = TemplateDirectory(kernel)
    mine = await make_template(client, merchant.headers)
    await directory.check_reward_template(mine, merchant.merchant_id)
    with pytest.raises(InvalidRequest) as err:
        await directory.check_reward_template(mine, "42")
    assert err.value.instance_code == "invalid_reward_template"
    with pytest.raises(InvalidRequest) as err:
        await directory.check_reward_template("424242", merchant.merchant_id)
    assert err.value.instance_code == "unknown_reward_template"


async def test_coupon_unreachable_is_503(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    merchant = await accounts.merchant()
    template_id = await make_template(client, merchant.headers)
    # A second kernel whose coupon upstream is a closed port (auth still answers in-process).
    split = Kernel(
        kernel.settings.with_(extra={**kernel.settings.extra, "upstream_coupon": f"http://127.0.0.1:{closed_port()}"})
    )
    split.app = kernel.app
    tasks: TaskService = kernel.services["run.tasks"]
    original = tasks.ctx.templates
    tasks.ctx.templates = TemplateDirectory(split)
    try:
        with pytest.raises(ServiceUnavailable):
            await tasks.ctx.templates.check_reward_template(template_id, merchant.merchant_id or "")
        resp = await client.post("/api/v1/run/tasks", json=task_body(template_id), headers=merchant.headers)
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["code"] == "coupon_unavailable"
    finally:
        tasks.ctx.templates = original
        for c in split._http.values():
            await c.aclose()
        await split.redis.aclose()
        await split.engine.dispose()
    resp = await client.post("/api/v1/run/tasks", json=task_body(template_id), headers=merchant.headers)
    assert resp.status_code == 201, resp.text
