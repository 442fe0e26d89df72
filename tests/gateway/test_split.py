"""Split deployment: auth, run and coupon each in a process of its own, the gateway forwarding to them,
and a real flow driven through the gateway (the run process checks the reward template on the coupon
process with a service token it got from the auth process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from picool.settings import Settings
from picool.stack import free_port
from tests.live_server import ServerProcesses, server_env


@pytest.fixture
def split_stack(stack_settings: Settings, tmp_path: Path) -> Iterator[str]:
    ports = {name: free_port() for name in ("auth", "run", "coupon", "gateway")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = server_env(
        stack_settings,
        PICOOL_KAFKA_TOPIC_PREFIX=f"split{uuid.uuid4().hex[:6]}.",
        PICOOL_KAFKA_PARTITIONS="2",
        PICOOL_PUBLIC_URL=urls["gateway"],  # one issuer for every process
        PICOOL_TRUSTED_PROXIES="127.0.0.1",
        PICOOL_UPSTREAM_AUTH=urls["auth"],
        PICOOL_UPSTREAM_RUN=urls["run"],
        PICOOL_UPSTREAM_COUPON=urls["coupon"],
    )
    with ServerProcesses(env, tmp_path) as servers:
        for name in ("auth", "coupon", "run"):
            servers.start(name, urls[name], name, "--port", str(ports[name]))
        servers.wait_ready()
        gw_env = {k: v for k, v in env.items() if not k.startswith("PICOOL_UPSTREAM_")}
        servers.start(
            "gateway", urls["gateway"], "gateway", "--port", str(ports["gateway"]),
            "--upstream", f"auth={urls['auth']}", "--upstream", f"run={urls['run']}",
            "--upstream", f"coupon={urls['coupon']}",
            env=gw_env,
        )  # fmt: skip
        servers.wait_ready()
        yield urls["gateway"]


def test_flow_through_split_deployment(split_stack: str, client: httpx.AsyncClient) -> None:
    gw = split_stack
    pw = "correct horse battery"
    with httpx.Client(base_url=gw, timeout=20) as http:
        m_email = f"shop-{uuid.uuid4().hex[:6]}@example.com"
        resp = http.post(
            "/api/v1/auth/merchants",
            json={"name": "Split Shop", "email": m_email, "password": pw, "location": {"lat": 31.23, "lon": 121.47}},
        )
        assert resp.status_code == 201, resp.text
        assert resp.headers["x-request-id"]
        tok = http.post("/api/v1/auth/login", json={"email": m_email, "password": pw, "client_id": "merchant-portal"})
        assert tok.status_code == 200, tok.text
        m_headers = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        assert http.get("/api/v1/auth/me", headers=m_headers).json()["role"] == "merchant"

        template = http.post(
            "/api/v1/coupon/templates",
            headers=m_headers,
            json={
                "name": "5 off",
                "rule": {"type": "direct", "amount_cents": 500},
                "validity": {"kind": "relative", "days": 30},
                "total_count": 100,
                "per_user_limit": 1,
                "distribution": "task_reward",
            },
        )
        assert template.status_code == 201, template.text
        task = http.post(
            "/api/v1/run/tasks",
            headers=m_headers,
            json={
                "title": "Run to the shop",
                "destination": {"lat": 31.23, "lon": 121.47},
                "radius_m": 100,
                "min_distance_m": 500,
                "time_limit_s": 3600,
                "reward_template_id": template.json()["id"],
                "quota": 10,
            },
        )
        assert task.status_code == 201, task.text  # run checked the template on coupon, over HTTP

        r_email = f"runner-{uuid.uuid4().hex[:6]}@example.com"
        assert (
            http.post("/api/v1/auth/register", json={"email": r_email, "password": pw, "display_name": "R"}).status_code
            == 201
        )
        rt = http.post("/api/v1/auth/login", json={"email": r_email, "password": pw, "client_id": "runner-app"})
        r_headers = {"Authorization": f"Bearer {rt.json()['access_token']}"}
        near = http.get("/api/v1/run/tasks/nearby", params={"lat": 31.225, "lon": 121.47}, headers=r_headers)
        assert near.status_code == 200, near.text
        assert task.json()["id"] in [t["id"] for t in near.json()["items"]]
        run = http.post(f"/api/v1/run/tasks/{task.json()['id']}/runs", headers=r_headers)
        assert run.status_code == 201, run.text
        wallet = http.get("/api/v1/coupon/me/coupons", headers=r_headers)
        assert wallet.status_code == 200 and wallet.json()["items"] == []
        # a runner may not create templates, whichever process answers
        assert http.post("/api/v1/coupon/templates", headers=r_headers, json={}).status_code in (400, 403)
        assert http.get("/api/v1/run/tasks/nearby", params={"lat": 31.2, "lon": 121.4}).status_code == 401
