"""The run HTTP API on the session app: tasks, nearby, runs, points, finish, reads, roles and bad input."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import update

from picool.kernel import Kernel
from run import geo, models

from .conftest import SHANGHAI, job_held_off, make_task, make_template, ms, offset, rewound, task_body, track_to

TASKS = "/api/v1/run/tasks"
RUNS = "/api/v1/run/runs"
NEARBY = f"{TASKS}/nearby"


class World:
    """A merchant with a task_reward template, and helpers around one test's client."""

    def __init__(self, client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
        self.client = client
        self.accounts = accounts
        self.kernel = kernel
        self.merchant: Any = None
        self.template_id = ""

    async def start(self) -> World:
        self.merchant = await self.accounts.merchant()
        self.template_id = await make_template(self.client, self.merchant.headers)
        return self

    async def task(self, **over: Any) -> dict[str, Any]:
        return await make_task(self.client, self.merchant.headers, self.template_id, **over)

    async def accept(self, runner: Any, task: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"{TASKS}/{task['id']}/runs", headers=runner.headers)

    async def run(self, runner: Any, task: dict[str, Any], *, rewind: bool = True) -> dict[str, Any]:
        """Accept ``task``; with ``rewind`` the run is moved 30 minutes into the past (fake clock for tracks)."""
        resp = await self.accept(runner, task)
        assert resp.status_code == 201, resp.text
        run: dict[str, Any] = resp.json()
        return await rewound(self.kernel, run) if rewind else run

    async def points(self, runner: Any, run: dict[str, Any], points: list[dict[str, Any]]) -> httpx.Response:
        return await self.client.post(f"{RUNS}/{run['id']}/points", json={"points": points}, headers=runner.headers)

    async def upload(self, runner: Any, run: dict[str, Any], points: list[dict[str, Any]], batch: int = 100) -> None:
        for k in range(0, len(points), batch):
            resp = await self.points(runner, run, points[k : k + batch])
            assert resp.status_code == 202, resp.text

    async def finish(self, runner: Any, run: dict[str, Any]) -> dict[str, Any]:
        resp = await self.client.post(f"{RUNS}/{run['id']}/finish", headers=runner.headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def get_task(self, task: dict[str, Any]) -> dict[str, Any]:
        resp = await self.client.get(f"{TASKS}/{task['id']}", headers=self.merchant.headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def get_run(self, who: Any, run: dict[str, Any]) -> httpx.Response:
        return await self.client.get(f"{RUNS}/{run['id']}", headers=who.headers)

    async def nearby_ids(self, who: Any, lat: float = SHANGHAI[0], lon: float = SHANGHAI[1], **q: Any) -> list[str]:
        resp = await self.client.get(NEARBY, params={"lat": lat, "lon": lon, **q}, headers=who.headers)
        assert resp.status_code == 200, resp.text
        return [t["id"] for t in resp.json()["items"]]

    async def indexed(self) -> set[str]:
        return {str(i) for i in await geo.TaskIndex(self.kernel.redis).members()}

    async def set_run(self, run: dict[str, Any], **values: Any) -> None:
        async with self.kernel.sessionmaker() as s, s.begin():
            await s.execute(update(models.Run).where(models.Run.id == int(run["id"])).values(**values))

    def services(self) -> Any:
        return self.kernel.services


@pytest.fixture
async def world(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> World:
    return await World(client, accounts, kernel).start()


def assert_problem(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers["content-type"]
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


# ------------------------------------------------------------------------------------------ tasks


async def test_create_and_read_task(world: World, kernel: Kernel) -> None:
    task = await world.task()
    assert task["merchant_id"] == world.merchant.merchant_id
    assert task["destination"] == {"lat": SHANGHAI[0], "lon": SHANGHAI[1]}
    assert task["status"] == "active" and task["completed_count"] == 0 and task["quota"] == 10
    assert task["reward_template_id"] == world.template_id
    assert (task["radius_m"], task["min_distance_m"], task["time_limit_s"]) == (100, 500, 3600)
    assert task["starts_at"] is None and task["ends_at"] is None and task["geofence"] is None
    runner = await world.accounts.runner()
    got = await world.client.get(f"{TASKS}/{task['id']}", headers=runner.headers)
    assert got.status_code == 200
    assert got.json() == task
    assert task["id"] in await world.indexed()


async def test_create_with_geofence_and_window(world: World) -> None:
    lat, lon = SHANGHAI
    ring = [
        [lon - 0.001, lat - 0.001],
        [lon + 0.001, lat - 0.001],
        [lon + 0.001, lat + 0.001],
        [lon - 0.001, lat - 0.001],
    ]
    starts = datetime.now(UTC) - timedelta(minutes=1)
    ends = starts + timedelta(days=1)
    task = await world.task(
        geofence={"type": "Polygon", "coordinates": [ring]},
        starts_at=starts.isoformat().replace("+00:00", "Z"),
        ends_at=ends.isoformat(),
    )
    assert task["geofence"] == {"type": "Polygon", "coordinates": [ring]}
    assert task["starts_at"].endswith("Z") and task["ends_at"].endswith("Z")
    assert datetime.fromisoformat(task["ends_at"]) == ends


def _future(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


BAD_TASKS: list[tuple[str, dict[str, Any]]] = [
    ("lat above 90", {"destination": {"lat": 90.5, "lon": 0}}),
    ("lat beyond the indexable 85", {"destination": {"lat": -85.5, "lon": 0}}),
    ("lon above 180", {"destination": {"lat": 0, "lon": 180.01}}),
    ("lat as string", {"destination": {"lat": "31.2", "lon": 121.4}}),
    ("destination missing lon", {"destination": {"lat": 31.2}}),
    ("destination not an object", {"destination": [31.2, 121.4]}),
    ("radius too small", {"radius_m": 9}),
    ("radius too large", {"radius_m": 1001}),
    ("radius huge", {"radius_m": 1e308}),
    ("radius as string", {"radius_m": "100"}),
    ("min distance negative", {"min_distance_m": -1}),
    ("min distance too large", {"min_distance_m": 100_001}),
    ("time limit too short", {"time_limit_s": 59}),
    ("time limit too long", {"time_limit_s": 21_601}),
    ("time limit fractional", {"time_limit_s": 60.5}),
    ("quota zero", {"quota": 0}),
    ("quota enormous", {"quota": 10**30}),
    ("quota boolean", {"quota": True}),
    ("title empty", {"title": ""}),
    ("title too long", {"title": "x" * 201}),
    ("template id with a slash", {"reward_template_id": "../../auth/me"}),
    ("template id a number", {"reward_template_id": 123}),
    ("window ends before it starts", {"starts_at": _future(2), "ends_at": _future(1)}),
    ("window ends when it starts", {"starts_at": "2031-01-01T00:00:00Z", "ends_at": "2031-01-01T00:00:00+00:00"}),
    ("window already over", {"ends_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}),
    ("naive time", {"ends_at": "2030-01-01T00:00:00"}),
    ("time not a time", {"starts_at": "tomorrow"}),
    ("geofence bowtie", {"geofence": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}),
    ("geofence not a polygon", {"geofence": {"type": "Point", "coordinates": [0, 0]}}),
    ("geofence a string", {"geofence": "POLYGON((0 0, 1 0, 1 1, 0 0))"}),
    (
        "geofence with 201 vertices",
        {
            "geofence": {
                "type": "Polygon",
                "coordinates": [
                    [
                        [0.01 * math.cos(2 * math.pi * k / 201), 0.01 * math.sin(2 * math.pi * k / 201)]
                        for k in range(201)
                    ]
                    + [[0.01, 0.0]]
                ],
            }
        },
    ),
]


@pytest.mark.parametrize(("why", "over"), BAD_TASKS, ids=[w for w, _ in BAD_TASKS])
async def test_create_task_rejects_bad_fields(world: World, why: str, over: dict[str, Any]) -> None:
    body = task_body(world.template_id, **over)
    resp = await world.client.post(TASKS, json=body, headers=world.merchant.headers)
    problem = assert_problem(resp, 400)
    assert problem["code"] in {"invalid_request", "invalid_geofence"}
    assert await world.indexed() == set()


async def test_create_task_rejects_malformed_bodies(world: World) -> None:
    h = {**world.merchant.headers, "content-type": "application/json"}
    for raw in [b"{", b"[]", b"null", b'"task"', b'{"radius_m": NaN}', b'{"quota": Infinity}', b"\xff\xfe"]:
        resp = await world.client.post(TASKS, content=raw, headers=h)
        assert_problem(resp, 400)


async def test_reward_template_rules(world: World, client: httpx.AsyncClient, accounts: Any) -> None:
    h = world.merchant.headers
    resp = await client.post(TASKS, json=task_body("123456789"), headers=h)
    assert_problem(resp, 400, "unknown_reward_template")
    claim_id = await make_template(client, h, distribution="claim")
    resp = await client.post(TASKS, json=task_body(claim_id), headers=h)
    assert_problem(resp, 400, "invalid_reward_template")
    other = await accounts.merchant("othershop")
    others_id = await make_template(client, other.headers)
    resp = await client.post(TASKS, json=task_body(others_id), headers=h)
    assert_problem(resp, 400, "invalid_reward_template")
    operator = await accounts.operator()
    platform_id = await make_template(client, operator.headers)
    resp = await client.post(TASKS, json=task_body(platform_id), headers=h)
    assert resp.status_code == 201, resp.text


async def test_task_roles_and_tokens(world: World, client: httpx.AsyncClient, accounts: Any) -> None:
    runner = await accounts.runner()
    body = task_body(world.template_id)
    assert_problem(await client.post(TASKS, json=body, headers=runner.headers), 403, "forbidden")
    assert_problem(await client.post(TASKS, json=body), 401)
    assert_problem(await client.post(TASKS, json=body, headers={"Authorization": "Bearer not-a-jwt"}), 401)
    assert_problem(await client.get(NEARBY, params={"lat": 0, "lon": 0}), 401)
    task = await world.task()
    assert_problem(await client.get(f"{TASKS}/{task['id']}"), 401)
    assert_problem(await client.post(f"{TASKS}/{task['id']}/runs"), 401)
    assert_problem(await client.get("/api/v1/run/me/runs"), 401)
    assert_problem(await client.get("/api/v1/run/me/stats"), 401)


async def test_only_the_owner_steers_a_task(world: World, client: httpx.AsyncClient, accounts: Any) -> None:
    task = await world.task()
    url = f"{TASKS}/{task['id']}"
    other = await accounts.merchant("othershop")
    runner = await accounts.runner()
    assert_problem(await client.patch(url, json={"status": "paused"}, headers=other.headers), 403)
    assert_problem(await client.patch(url, json={"status": "ended"}, headers=runner.headers), 403)
    assert (await world.get_task(task))["status"] == "active"
    operator = await accounts.operator()
    resp = await client.patch(url, json={"status": "paused"}, headers=operator.headers)
    assert resp.status_code == 200 and resp.json()["status"] == "paused"


async def test_pause_resume_end_keep_the_index_in_step(world: World) -> None:
    runner = await world.accounts.runner()
    task = await world.task()
    url = f"{TASKS}/{task['id']}"
    h = world.merchant.headers
    assert await world.nearby_ids(runner) == [task["id"]]

    resp = await world.client.patch(url, json={"status": "paused"}, headers=h)
    assert resp.status_code == 200 and resp.json()["status"] == "paused"
    assert task["id"] not in await world.indexed()
    assert await world.nearby_ids(runner) == []
    assert (await world.get_task(task))["status"] == "paused"
    assert_problem(await world.accept(runner, task), 409, "task_unavailable")

    resp = await world.client.patch(url, json={"status": "paused"}, headers=h)  # again: no change
    assert resp.status_code == 200 and resp.json()["status"] == "paused"

    resp = await world.client.patch(url, json={"status": "active"}, headers=h)
    assert resp.status_code == 200 and resp.json()["status"] == "active"
    assert task["id"] in await world.indexed()
    assert await world.nearby_ids(runner) == [task["id"]]

    resp = await world.client.patch(url, json={"status": "ended"}, headers=h)
    assert resp.status_code == 200 and resp.json()["status"] == "ended"
    assert task["id"] not in await world.indexed()
    assert await world.nearby_ids(runner) == []
    assert_problem(await world.client.patch(url, json={"status": "active"}, headers=h), 409, "task_ended")
    assert_problem(await world.client.patch(url, json={"status": "deleted"}, headers=h), 400)
    assert_problem(await world.client.patch(url, json={"status": 1}, headers=h), 400)
    assert_problem(await world.client.patch(url, json=[], headers=h), 400)


@pytest.mark.parametrize("bad_id", ["abc", "-1", "0", "99999999999999999999", "1e3", "١٢٣"])
async def test_unknown_or_malformed_ids_are_404(world: World, bad_id: str) -> None:
    runner = await world.accounts.runner()
    assert_problem(await world.client.get(f"{TASKS}/{bad_id}", headers=runner.headers), 404)
    assert_problem(await world.client.post(f"{TASKS}/{bad_id}/runs", headers=runner.headers), 404)
    assert_problem(await world.client.get(f"{RUNS}/{bad_id}", headers=runner.headers), 404)
    resp = await world.client.post(f"{RUNS}/{bad_id}/finish", headers=runner.headers)
    assert_problem(resp, 404)
    resp = await world.client.post(
        f"{RUNS}/{bad_id}/points", json={"points": [{"ts_ms": 1, "lat": 0, "lon": 0}]}, headers=runner.headers
    )
    assert_problem(resp, 404)


async def test_merchant_lists_own_tasks(world: World, accounts: Any) -> None:
    made = [await world.task(title=f"Task {k}") for k in range(3)]
    other = await accounts.merchant("other")
    await make_task(world.client, other.headers, await make_template(world.client, other.headers))
    resp = await world.client.get(TASKS, params={"limit": 2}, headers=world.merchant.headers)
    assert resp.status_code == 200
    page = resp.json()
    assert [t["id"] for t in page["items"]] == [made[2]["id"], made[1]["id"]]
    resp = await world.client.get(
        TASKS, params={"limit": 2, "cursor": page["next_cursor"]}, headers=world.merchant.headers
    )
    assert [t["id"] for t in resp.json()["items"]] == [made[0]["id"]]
    assert resp.json()["next_cursor"] is None


# ----------------------------------------------------------------------------------------- nearby


async def test_nearby_nearest_first_with_distances(world: World) -> None:
    lat, lon = SHANGHAI
    far = await world.task(title="far", destination=dict(zip(("lat", "lon"), offset(lat, lon, 2000, 0), strict=True)))
    near = await world.task(title="near", destination=dict(zip(("lat", "lon"), offset(lat, lon, 0, 500), strict=True)))
    await world.task(title="too far", destination=dict(zip(("lat", "lon"), offset(lat, lon, 5000, 0), strict=True)))
    runner = await world.accounts.runner()
    resp = await world.client.get(NEARBY, params={"lat": lat, "lon": lon, "radius_m": 3000}, headers=runner.headers)
    assert resp.status_code == 200
    items = resp.json()["items"]
    assert [t["id"] for t in items] == [near["id"], far["id"]]
    assert items[0]["distance_m"] == pytest.approx(500, abs=1)
    assert items[1]["distance_m"] == pytest.approx(2000, abs=1)
    assert items[0]["title"] == "near" and items[0]["destination"] == near["destination"]
    assert await world.nearby_ids(runner, limit=1) == [near["id"]]
    assert len(await world.nearby_ids(runner, radius_m=50_000)) == 3
    assert await world.nearby_ids(runner, radius_m=100) == []


@pytest.mark.parametrize(
    "params",
    [
        {"lat": 0},
        {"lon": 0},
        {"lat": 91, "lon": 0},
        {"lat": 0, "lon": -181},
        {"lat": "abc", "lon": 0},
        {"lat": "nan", "lon": 0},
        {"lat": "inf", "lon": 0},
        {"lat": 0, "lon": 0, "radius_m": 50_001},
        {"lat": 0, "lon": 0, "radius_m": 0},
        {"lat": 0, "lon": 0, "radius_m": -5},
        {"lat": 0, "lon": 0, "radius_m": "nan"},
        {"lat": 0, "lon": 0, "limit": 101},
        {"lat": 0, "lon": 0, "limit": 0},
        {"lat": 0, "lon": 0, "limit": "ten"},
        {"lat": 0, "lon": 0, "limit": 10**30},
    ],
)
async def test_nearby_rejects_bad_queries(world: World, params: dict[str, Any]) -> None:
    runner = await world.accounts.runner()
    assert_problem(await world.client.get(NEARBY, params=params, headers=runner.headers), 400)


async def test_window_scheduler_opens_and_closes_tasks(world: World) -> None:
    runner = await world.accounts.runner()
    now = datetime.now(UTC)
    later = await world.task(title="later", starts_at=(now + timedelta(seconds=1.5)).isoformat())
    closing = await world.task(title="closing", ends_at=(now + timedelta(seconds=1.5)).isoformat())
    assert later["id"] not in await world.indexed()
    assert await world.nearby_ids(runner) == [closing["id"]]
    assert_problem(await world.accept(runner, later), 409, "task_unavailable")
    await asyncio.sleep(1.6)
    # Reads already treat the closed window as closed, before any scheduler ran.
    assert closing["id"] not in await world.nearby_ids(runner)
    assert_problem(await world.accept(runner, closing), 409, "task_unavailable")
    await world.services()["run.tasks"].sweep_windows()
    assert await world.indexed() == {later["id"]}
    assert await world.nearby_ids(runner) == [later["id"]]
    assert (await world.get_task(closing))["status"] == "ended"
    assert (await world.get_task(later))["status"] == "active"
    await world.run(runner, later)


# ------------------------------------------------------------------------------------------- runs


async def many_runners(app: Litestar, accounts: Any, n: int) -> list[Any]:
    """``n`` runners, signed up from several client addresses so the sign-up rate limit per IP holds."""
    out: list[Any] = []
    for start in range(0, n, 20):
        transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{start // 20 + 1}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
            maker = type(accounts)(c, accounts.kernel)
            out += await asyncio.gather(*(maker.runner(f"r{k}") for k in range(start, min(n, start + 20))))
    return out


async def test_accept_quota_race_exactly_quota_succeed(world: World, accounts: Any, app: Litestar) -> None:
    task = await world.task(quota=5)
    runners = await many_runners(app, accounts, 50)
    answers = await asyncio.gather(*(world.accept(r, task) for r in runners))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 5, codes
    assert codes.count(409) == 45, codes
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"task_unavailable"}
    assert task["id"] not in await world.indexed()
    assert await world.nearby_ids(runners[0]) == []
    async with world.kernel.sessionmaker() as s:
        row = await s.get(models.Task, int(task["id"]))
        assert row is not None and row.reserved == 5


async def test_accept_rules(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    tasks = [await world.task(title=f"t{k}") for k in range(4)]
    run = await world.run(runner, tasks[0], rewind=False)
    assert run["status"] == "active" and run["task_id"] == tasks[0]["id"] and run["runner_id"] == runner.user_id
    assert ms(run["deadline"]) - ms(run["accepted_at"]) == 3600 * 1000
    assert run["finished_at"] is None and run["rejection_reason"] is None
    assert_problem(await world.accept(runner, tasks[0]), 409, "run_in_progress")
    await world.run(runner, tasks[1])
    await world.run(runner, tasks[2])
    assert_problem(await world.accept(runner, tasks[3]), 409, "too_many_active_runs")
    assert_problem(await world.accept(world.merchant, tasks[3]), 403)
    # Finishing one frees a place among the three, and the same task can be run again.
    await world.finish(runner, run)
    await world.run(runner, tasks[0])
    assert_problem(await world.accept(runner, tasks[3]), 409, "too_many_active_runs")


async def test_quota_slot_returns_when_a_run_is_rejected(world: World, accounts: Any) -> None:
    task = await world.task(quota=1)
    a, b = await accounts.runner(), await accounts.runner()
    run = await world.run(a, task)
    assert task["id"] not in await world.indexed()
    assert_problem(await world.accept(b, task), 409, "task_unavailable")
    done = await world.finish(a, run)
    assert done["status"] == "rejected" and done["rejection_reason"] == "too_few_points"
    assert task["id"] in await world.indexed()
    assert await world.nearby_ids(b) == [task["id"]]
    await world.run(b, task)


async def test_expiry_frees_the_slot_by_scheduler_and_on_read(world: World, accounts: Any) -> None:
    task = await world.task(quota=2)
    a, b, c = await accounts.runner(), await accounts.runner(), await accounts.runner()
    run_a = await world.run(a, task)
    run_b = await world.run(b, task)
    assert task["id"] not in await world.indexed()
    past = datetime.now(UTC) - timedelta(seconds=1)
    await world.set_run(run_a, deadline=past)
    await world.set_run(run_b, deadline=past)
    # On read: the runner's own GET expires it.
    got = (await world.get_run(a, run_a)).json()
    assert got["status"] == "expired" and got["finished_at"] is not None
    assert task["id"] in await world.indexed()
    # By the scheduler (this call, or the app's own periodic job if it came first).
    await world.services()["run.runs"].sweep_expired()
    async with world.kernel.sessionmaker() as s:
        row = await s.get(models.Run, int(run_b["id"]))
        assert row is not None and row.status == "expired"
    # Both slots are back.
    await world.run(c, task)
    await world.run(a, task)
    resp = await world.points(b, run_b, [{"ts_ms": ms(run_b["accepted_at"]), "lat": 0, "lon": 0}])
    assert_problem(resp, 409, "run_not_active")
    assert (await world.finish(b, run_b))["status"] == "expired"


async def test_points_past_the_deadline_expire_the_run(world: World, accounts: Any) -> None:
    task = await world.task(quota=1)
    runner = await accounts.runner()
    run = await world.run(runner, task)
    await world.set_run(run, deadline=datetime.now(UTC) - timedelta(seconds=1))
    resp = await world.points(runner, run, track_to(SHANGHAI, ms(run["accepted_at"]))[:5])
    assert_problem(resp, 409, "run_not_active")
    assert (await world.get_run(runner, run)).json()["status"] == "expired"
    assert task["id"] in await world.indexed()


# ----------------------------------------------------------------------------------------- points


async def test_points_batches(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    run = await world.run(runner, await world.task())
    t0 = ms(run["accepted_at"])
    pts = track_to(SHANGHAI, t0 + 1000)
    resp = await world.points(runner, run, pts[:10])
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 10, "total_points": 10}

    def count() -> Any:
        return world.get_run(runner, run)

    bad_batches = [
        [pts[10], pts[12], pts[11]],  # decreasing inside the batch
        [pts[10], pts[10]],  # repeated timestamp
        [pts[9], pts[10]],  # overlaps the stored points
        [{**pts[10], "ts_ms": pts[9]["ts_ms"]}],  # equal to the last stored timestamp
        [pts[10], {**pts[11], "lat": 90.5}],
        [pts[10], {**pts[11], "lon": -181}],
        [pts[10], {**pts[11], "accuracy_m": -1}],
        [pts[10], {**pts[11], "accuracy_m": 10_001}],
        [pts[10], {**pts[11], "ts_ms": str(pts[11]["ts_ms"])}],
        [pts[10], {**pts[11], "ts_ms": 0}],
        [pts[10], {**pts[11], "ts_ms": 10**30}],
        [pts[10], {**pts[11], "ts_ms": pts[11]["ts_ms"] + 0.5}],
        [pts[10], {**pts[11], "ts_ms": t0 + 40 * 86_400_000}],  # weeks away from the run
        [pts[10], {"ts_ms": pts[11]["ts_ms"], "lat": 31.2}],
        [],
        [{**pts[10], "ts_ms": pts[10]["ts_ms"] + k} for k in range(1001)],
    ]
    for batch in bad_batches:
        resp = await world.points(runner, run, batch)
        assert_problem(resp, 400)
        assert (await count()).json()["point_count"] == 10
    for body in [{"points": "many"}, {"pts": pts[10:12]}, [pts[10]], {"points": [1, 2]}]:
        resp = await world.client.post(f"{RUNS}/{run['id']}/points", json=body, headers=runner.headers)
        assert_problem(resp, 400)
    resp = await world.points(runner, run, [{**pts[10], "ts_ms": pts[10]["ts_ms"] + k} for k in range(1000)])
    assert resp.status_code == 202 and resp.json() == {"accepted": 1000, "total_points": 1010}


async def test_a_track_must_have_taken_real_time(world: World, accounts: Any) -> None:
    """A made-up track stamped in the future (uploaded and finished at once) is refused, as are points
    from before the run was accepted; a couple of minutes of phone-clock skew are fine."""
    runner = await accounts.runner()
    run = await world.run(runner, await world.task())
    now = int(datetime.now(UTC).timestamp() * 1000)
    future = track_to(SHANGHAI, now + 10 * 60_000)[:3]
    resp = await world.points(runner, run, future)
    assert_problem(resp, 400, "invalid_request")
    assert "future" in resp.json()["detail"]
    before = track_to(SHANGHAI, ms(run["accepted_at"]) - 10 * 60_000)[:3]
    assert_problem(await world.points(runner, run, before), 400, "invalid_request")
    assert (await world.get_run(runner, run)).json()["status"] == "active"
    skewed = track_to(SHANGHAI, now + 60_000)[:3]  # a phone one minute ahead
    assert (await world.points(runner, run, skewed)).status_code == 202


async def test_points_and_finish_only_by_the_runner(world: World, accounts: Any) -> None:
    owner, other = await accounts.runner(), await accounts.runner()
    task = await world.task()
    run = await world.run(owner, task)
    pts = track_to(SHANGHAI, ms(run["accepted_at"]) + 1000)[:5]
    assert_problem(await world.points(other, run, pts), 403)
    assert_problem(await world.points(world.merchant, run, pts), 403)
    assert_problem(await world.client.post(f"{RUNS}/{run['id']}/finish", headers=other.headers), 403)
    assert_problem(await world.get_run(other, run), 403)
    other_merchant = await accounts.merchant("other")
    assert_problem(await world.get_run(other_merchant, run), 403)
    assert (await world.get_run(world.merchant, run)).status_code == 200
    assert (await world.get_run(owner, run)).json()["point_count"] == 0


# ----------------------------------------------------------------------------------------- finish


async def test_completed_run(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    task = await world.task(quota=2)
    run = await world.run(runner, task)
    pts = track_to(SHANGHAI, ms(run["accepted_at"]) + 1000, distance_m=1500)
    await world.upload(runner, run, pts, batch=37)
    done = await world.finish(runner, run)
    assert done["status"] == "completed", done
    assert done["rejection_reason"] is None
    assert done["distance_m"] == pytest.approx(1500, rel=0.05)
    assert done["duration_s"] == pytest.approx((pts[-1]["ts_ms"] - pts[0]["ts_ms"]) / 1000)
    assert done["finished_at"] is not None and done["point_count"] == len(pts)
    assert await world.finish(runner, run) == done  # idempotent
    assert (await world.get_task(task))["completed_count"] == 1
    assert task["id"] in await world.indexed()  # one slot left
    stats = (await world.client.get("/api/v1/run/me/stats", headers=runner.headers)).json()
    assert stats["runs"] == 1 and stats["completed"] == 1 and stats["active"] == 0
    assert stats["total_distance_m"] == stats["week_distance_m"] == done["distance_m"]
    assert_problem(await world.points(runner, run, [{**pts[-1], "ts_ms": pts[-1]["ts_ms"] + 1}]), 409, "run_not_active")


async def test_last_slot_completed_removes_the_task_from_nearby(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    task = await world.task(quota=1)
    run = await world.run(runner, task)
    await world.upload(runner, run, track_to(SHANGHAI, ms(run["accepted_at"]) + 1000))
    assert (await world.finish(runner, run))["status"] == "completed"
    assert task["id"] not in await world.indexed()
    assert_problem(await world.accept(await accounts.runner(), task), 409, "task_unavailable")


def _jump(points: list[dict[str, Any]], gap_s: float, jump_m: float) -> list[dict[str, Any]]:
    """The track with recording switched off halfway for ``gap_s`` seconds while the runner moved
    ``jump_m`` metres further than the track shows (the first half shifted south)."""
    half = len(points) // 2
    out = []
    for k, p in enumerate(points):
        if k < half:
            lat, lon = offset(p["lat"], p["lon"], -jump_m, 0)
            out.append({**p, "lat": lat, "lon": lon})
        else:
            out.append({**p, "ts_ms": p["ts_ms"] + round(gap_s * 1000)})
    return out


REASONS: list[tuple[str, dict[str, Any], Any]] = [
    ("too_few_points", {}, lambda pts: pts[-5:]),
    ("not_at_destination", {}, lambda pts: pts[: len(pts) // 2]),
    ("too_short", {"min_distance_m": 5000}, lambda pts: pts),
    ("gap_in_track", {"min_distance_m": 0}, lambda pts: _jump(pts, 300, 2000)),
]


@pytest.mark.parametrize(("reason", "task_over", "shape"), REASONS, ids=[r for r, _, _ in REASONS])
async def test_rejection_reasons(
    world: World, accounts: Any, reason: str, task_over: dict[str, Any], shape: Any
) -> None:
    runner = await accounts.runner()
    task = await world.task(quota=1, **task_over)
    run = await world.run(runner, task)
    await world.upload(runner, run, shape(track_to(SHANGHAI, ms(run["accepted_at"]) + 1000)))
    done = await world.finish(runner, run)
    assert (done["status"], done["rejection_reason"]) == ("rejected", reason)
    assert task["id"] in await world.indexed()  # the slot is back
    assert (await world.get_task(task))["completed_count"] == 0


async def test_too_fast(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    task = await world.task(quota=1)
    run = await world.run(runner, task)
    await world.upload(runner, run, track_to(SHANGHAI, ms(run["accepted_at"]) + 1000, distance_m=3000, speed_mps=12))
    done = await world.finish(runner, run)
    assert (done["status"], done["rejection_reason"]) == ("rejected", "too_fast")


async def test_geofence_replaces_the_radius(world: World, accounts: Any) -> None:
    lat, lon = SHANGHAI
    # A 200 m square whose south edge is 300 m north of the destination point.
    s_lat, _ = offset(lat, lon, 300, 0)
    n_lat, _ = offset(lat, lon, 500, 0)
    _, w_lon = offset(lat, lon, 0, -100)
    _, e_lon = offset(lat, lon, 0, 100)
    ring = [[w_lon, s_lat], [e_lon, s_lat], [e_lon, n_lat], [w_lon, n_lat], [w_lon, s_lat]]
    task = await world.task(quota=2, radius_m=1000, geofence={"type": "Polygon", "coordinates": [ring]})
    runner = await accounts.runner()
    run = await world.run(runner, task)
    # Ends 50 m from the point: inside the radius but outside the geofence.
    await world.upload(runner, run, track_to(SHANGHAI, ms(run["accepted_at"]) + 1000, end_off_m=50))
    assert (await world.finish(runner, run))["rejection_reason"] == "not_at_destination"
    run = await world.run(runner, task)
    await world.upload(runner, run, track_to(offset(lat, lon, 400, 0), ms(run["accepted_at"]) + 1000))
    assert (await world.finish(runner, run))["status"] == "completed"


async def test_finish_after_the_deadline_is_time_limit_exceeded(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    task = await world.task(quota=1)
    run = await world.run(runner, task)
    await world.upload(runner, run, track_to(SHANGHAI, ms(run["accepted_at"]) + 1000))
    async with job_held_off(world.kernel, "run.expiry"):  # else the sweep may expire it first
        await world.set_run(run, deadline=datetime.now(UTC) - timedelta(seconds=1))
        done = await world.finish(runner, run)
    assert (done["status"], done["rejection_reason"]) == ("rejected", "time_limit_exceeded")
    assert task["id"] in await world.indexed()


# ------------------------------------------------------------------------------------------ reads


async def test_my_runs_pages_and_stats(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    tasks = [await world.task(title=f"t{k}") for k in range(3)]
    runs = []
    for t in tasks:
        run = await world.run(runner, t)
        runs.append(await world.finish(runner, run))  # rejected: no points
    live = await world.run(runner, tasks[0])
    h = runner.headers
    resp = await world.client.get("/api/v1/run/me/runs", params={"limit": 3}, headers=h)
    page = resp.json()
    assert [r["id"] for r in page["items"]] == [live["id"], runs[2]["id"], runs[1]["id"]]
    resp = await world.client.get("/api/v1/run/me/runs", params={"limit": 3, "cursor": page["next_cursor"]}, headers=h)
    assert [r["id"] for r in resp.json()["items"]] == [runs[0]["id"]] and resp.json()["next_cursor"] is None
    resp = await world.client.get("/api/v1/run/me/runs", params={"status": "active"}, headers=h)
    assert [r["id"] for r in resp.json()["items"]] == [live["id"]]
    for bad in [{"limit": 0}, {"limit": 101}, {"cursor": "x"}, {"status": "won"}, {"cursor": "9" * 30}]:
        assert_problem(await world.client.get("/api/v1/run/me/runs", params=bad, headers=h), 400)
    stats = (await world.client.get("/api/v1/run/me/stats", headers=h)).json()
    assert (stats["runs"], stats["completed"], stats["active"]) == (4, 0, 1)
    assert stats["total_distance_m"] == 0 and stats["week_distance_m"] == 0
    other = await accounts.runner()
    assert (await world.client.get("/api/v1/run/me/runs", headers=other.headers)).json() == {
        "items": [],
        "next_cursor": None,
    }


async def test_task_runs_for_its_merchant(world: World, accounts: Any) -> None:
    task, other_task = await world.task(), await world.task(title="other")
    runners = [await accounts.runner() for _ in range(3)]
    done = await world.finish(runners[0], await world.run(runners[0], task))  # rejected: no points
    live = [await world.run(r, task) for r in runners[1:]]
    await world.run(runners[0], other_task)
    url = f"{TASKS}/{task['id']}/runs"
    page = (await world.client.get(url, params={"limit": 2}, headers=world.merchant.headers)).json()
    assert [r["id"] for r in page["items"]] == [live[1]["id"], live[0]["id"]]
    assert page["items"][0]["status"] == "active" and page["items"][0]["runner_id"] == runners[2].user_id
    rest = (await world.client.get(url, params={"cursor": page["next_cursor"]}, headers=world.merchant.headers)).json()
    assert [r["id"] for r in rest["items"]] == [done["id"]] and rest["next_cursor"] is None
    assert rest["items"][0]["rejection_reason"] == "too_few_points"
    operator = await accounts.operator()
    assert len((await world.client.get(url, headers=operator.headers)).json()["items"]) == 3
    assert_problem(await world.client.get(url, headers=runners[0].headers), 403)
    assert_problem(await world.client.get(url, headers=(await accounts.merchant()).headers), 403)
    assert_problem(await world.client.get(url), 401)
    assert_problem(await world.client.get(f"{TASKS}/99999/runs", headers=world.merchant.headers), 404)
    for bad in [{"limit": 0}, {"cursor": "x"}, {"cursor": "9" * 30}]:
        assert_problem(await world.client.get(url, params=bad, headers=world.merchant.headers), 400)


async def test_week_distance_counts_only_this_week(world: World, accounts: Any) -> None:
    runner = await accounts.runner()
    task = await world.task(quota=3)
    for _ in range(2):
        run = await world.run(runner, task)
        await world.upload(runner, run, track_to(SHANGHAI, ms(run["accepted_at"]) + 1000))
        assert (await world.finish(runner, run))["status"] == "completed"
    await world.set_run(run, finished_at=datetime.now(UTC) - timedelta(days=8))
    stats = (await world.client.get("/api/v1/run/me/stats", headers=runner.headers)).json()
    assert stats["completed"] == 2
    assert stats["week_distance_m"] == pytest.approx(stats["total_distance_m"] / 2, rel=0.01)


async def test_openapi_documents_the_run_api(client: httpx.AsyncClient) -> None:
    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    for path in [TASKS, NEARBY, f"{TASKS}/{{task_id}}", f"{TASKS}/{{task_id}}/runs", f"{RUNS}/{{run_id}}/points",
                 f"{RUNS}/{{run_id}}/finish", "/api/v1/run/me/runs", "/api/v1/run/me/stats"]:  # fmt: skip
        assert path in paths, sorted(paths)
    assert "requestBody" in paths[TASKS]["post"]
