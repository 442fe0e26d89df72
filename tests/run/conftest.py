"""Helpers for the run tests: coupon templates through coupon's public API, tasks, synthetic tracks."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from sqlalchemy import update

from picool import events
from picool.kernel import Kernel
from run import domain, models

SHANGHAI = (31.2304, 121.4737)


async def make_template(
    client: httpx.AsyncClient, owner_headers: dict[str, str], distribution: str = "task_reward"
) -> str:
    """A coupon template made through coupon's public API; returns its id."""
    resp = await client.post(
        "/api/v1/coupon/templates",
        json={
            "name": "Run reward",
            "rule": {"type": "direct", "amount_cents": 500},
            "validity": {"kind": "relative", "days": 30},
            "total_count": 1000,
            "per_user_limit": 100,
            "distribution": distribution,
        },
        headers=owner_headers,
    )
    assert resp.status_code == 201, resp.text
    template_id: str = resp.json()["id"]
    return template_id


def task_body(template_id: str, **over: Any) -> dict[str, Any]:
    """A valid task body around Shanghai, with ``over`` replacing fields (None values are dropped)."""
    body: dict[str, Any] = {
        "title": "Run to the noodle shop",
        "description": "Finish at the door.",
        "destination": {"lat": SHANGHAI[0], "lon": SHANGHAI[1]},
        "radius_m": 100,
        "min_distance_m": 500,
        "time_limit_s": 3600,
        "reward_template_id": template_id,
        "quota": 10,
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


async def make_task(
    client: httpx.AsyncClient, headers: dict[str, str], template_id: str, **over: Any
) -> dict[str, Any]:
    """A task created through the API; asserts the 201."""
    resp = await client.post("/api/v1/run/tasks", json=task_body(template_id, **over), headers=headers)
    assert resp.status_code == 201, resp.text
    task: dict[str, Any] = resp.json()
    return task


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` metres north and ``east_m`` east of (lat, lon) (small offsets)."""
    dlat = north_m / domain.EARTH_RADIUS_M * 180 / math.pi
    dlon = east_m / (domain.EARTH_RADIUS_M * math.cos(math.radians(lat))) * 180 / math.pi
    return lat + dlat, lon + dlon


def track_to(
    dest: tuple[float, float],
    start_ms: int,
    *,
    distance_m: float = 1500.0,
    speed_mps: float = 3.0,
    every_s: float = 5.0,
    end_off_m: float = 0.0,
) -> list[dict[str, Any]]:
    """A plausible run in API form: from ``distance_m`` south of ``dest`` straight north at
    ``speed_mps``, a fix every ``every_s`` seconds, ending ``end_off_m`` metres south of ``dest``."""
    steps = max(2, math.ceil((distance_m - end_off_m) / (speed_mps * every_s)))
    points = []
    for k in range(steps + 1):
        south = distance_m - (distance_m - end_off_m) * k / steps
        lat, lon = offset(dest[0], dest[1], -south, 0.0)
        points.append({"ts_ms": start_ms + round(k * every_s * 1000), "lat": lat, "lon": lon, "accuracy_m": 5.0})
    return points


def ms(rfc3339: str) -> int:
    """Epoch milliseconds of an RFC 3339 time from the API."""
    return math.floor(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


async def read_events(kernel: Kernel, run_id: str, timeout_s: float = 20.0, settle_s: float = 1.0) -> list[Any]:
    """Every envelope about ``run_id`` on the run.completed topic, read from the start with a fresh group;
    keeps reading ``settle_s`` after the first one so duplicates would show."""
    consumer = AIOKafkaConsumer(
        kernel.settings.topic(events.TOPIC_RUN_COMPLETED),
        bootstrap_servers=kernel.settings.kafka_bootstrap,
        group_id=f"run-e2e-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    env = events.decode_envelope(record.value)
                    payload = events.decode_payload(env)
                    if isinstance(payload, events.RunCompletedV1) and payload.run_id == run_id:
                        found.append((env, payload, record.key))
            if found:
                deadline = min(deadline, loop.time() + settle_s)
    finally:
        await consumer.stop()
    return found


@contextlib.asynccontextmanager
async def job_held_off(kernel: Kernel, name: str) -> AsyncIterator[None]:
    """Keep the app's periodic job ``name`` from running meanwhile, by holding its Redis lease."""
    key = f"picool:lease:{name}"
    await wait_until_free(kernel, key)
    assert await kernel.redis.set(key, b"test", nx=True, px=60_000)
    try:
        yield
    finally:
        await kernel.redis.delete(key)


async def wait_until_free(kernel: Kernel, key: str) -> None:
    for _ in range(200):
        if not await kernel.redis.exists(key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} stayed taken")


REWIND = timedelta(minutes=30)


async def rewound(kernel: Kernel, run: dict[str, Any]) -> dict[str, Any]:
    """A fake clock for tracks: the run is moved to have been accepted 30 minutes ago (its deadline
    stays), so a track stamped from ``accepted_at`` on lies in the past — the server refuses points
    stamped in the future."""
    async with kernel.sessionmaker() as s, s.begin():
        new = (
            await s.execute(
                update(models.Run)
                .where(models.Run.id == int(run["id"]))
                .values(accepted_at=models.Run.accepted_at - REWIND)
                .returning(models.Run.accepted_at)
            )
        ).scalar_one()
    return {**run, "accepted_at": new.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
