"""One whole path: a merchant's task, found nearby, accepted, run, completed, and RunCompletedV1 on Kafka."""

from __future__ import annotations

from typing import Any

import httpx

from picool import events
from picool.kernel import Kernel
from run.service import event_id_of

from .conftest import SHANGHAI, make_template, ms, offset, read_events, rewound, task_body, track_to


async def test_task_to_reward_event(client: httpx.AsyncClient, accounts: Any, kernel: Kernel) -> None:
    merchant = await accounts.merchant("noodles")
    template_id = await make_template(client, merchant.headers)
    resp = await client.post(
        "/api/v1/run/tasks", json=task_body(template_id, min_distance_m=1000, quota=3), headers=merchant.headers
    )
    assert resp.status_code == 201, resp.text
    task = resp.json()

    runner = await accounts.runner("alice")
    here = offset(*SHANGHAI, -1600, 300)  # where the runner stands, ~1.6 km from the shop
    resp = await client.get(
        "/api/v1/run/tasks/nearby", params={"lat": here[0], "lon": here[1], "radius_m": 3000}, headers=runner.headers
    )
    assert resp.status_code == 200
    assert [t["id"] for t in resp.json()["items"]] == [task["id"]]

    resp = await client.post(f"/api/v1/run/tasks/{task['id']}/runs", headers=runner.headers)
    assert resp.status_code == 201, resp.text
    run = await rewound(kernel, resp.json())  # fake clock: the jog below happened in the last half hour

    # A realistic jog: a fix every 2 s at ~2.8 m/s with a little GPS noise, sent in batches as a phone would.
    points = track_to(SHANGHAI, ms(run["accepted_at"]) + 2000, distance_m=1600, speed_mps=2.8, every_s=2)
    for k, p in enumerate(points):
        lat, lon = offset(p["lat"], p["lon"], ((k * 7) % 5 - 2) * 0.8, ((k * 3) % 5 - 2) * 0.8)
        points[k] = {**p, "lat": lat, "lon": lon, "accuracy_m": 4.0 + k % 3}
    for start in range(0, len(points), 150):
        resp = await client.post(
            f"/api/v1/run/runs/{run['id']}/points", json={"points": points[start : start + 150]}, headers=runner.headers
        )
        assert resp.status_code == 202, resp.text

    resp = await client.post(f"/api/v1/run/runs/{run['id']}/finish", headers=runner.headers)
    assert resp.status_code == 200, resp.text
    done = resp.json()
    assert done["status"] == "completed", done
    assert 1500 < done["distance_m"] < 1750

    # The merchant sees the run and the count.
    assert (await client.get(f"/api/v1/run/runs/{run['id']}", headers=merchant.headers)).json() == done
    assert (await client.get(f"/api/v1/run/tasks/{task['id']}", headers=runner.headers)).json()["completed_count"] == 1

    # Finishing again changes nothing and announces nothing new.
    again = await client.post(f"/api/v1/run/runs/{run['id']}/finish", headers=runner.headers)
    assert again.json() == done

    found = await read_events(kernel, run["id"])
    assert found, "RunCompletedV1 never reached Kafka"
    assert {env.id for env, _, _ in found} == {event_id_of(int(run["id"]))}  # one event (re-sends share the id)
    env, payload, key = found[0]
    assert env.type == "RunCompletedV1" and key == runner.user_id.encode()
    assert payload == events.RunCompletedV1(
        run_id=run["id"],
        task_id=task["id"],
        runner_id=runner.user_id,
        merchant_id=merchant.merchant_id,
        reward_template_id=template_id,
        completed_at=payload.completed_at,
        distance_m=payload.distance_m,
        duration_s=payload.duration_s,
    )
    assert round(payload.distance_m, 1) == done["distance_m"]
    assert ms(done["finished_at"]) == ms(payload.completed_at.isoformat())
    assert await kernel.relay.backlog() == 0
