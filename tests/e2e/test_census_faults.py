"""A census survives a killed worker (only the running chunk is redone) and can be cancelled."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import WorkItem
from tests.conftest import eventually
from tests.e2e.conftest import wait_for

SPEC = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 6, "d": 10, "seed": 4},
    "weight_decay": 0.01,
    "widths": [40, 80],
    "samples_per_width": 200,
}


def chunks(pg_engine, experiment_id: str) -> list[WorkItem]:
    with Session(pg_engine) as s:
        query = select(WorkItem).where(
            WorkItem.experiment_id == experiment_id, WorkItem.task == "census_chunk"
        )
        return list(s.scalars(query))


def test_killed_worker_loses_only_its_chunk(api, start_worker, pg_engine):
    worker = start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    deadline = time.monotonic() + 120
    while True:
        items = chunks(pg_engine, exp["id"])
        states = [i.status for i in items]
        if "done" in states and "running" in states:
            break
        assert time.monotonic() < deadline and "failed" not in states, states
        time.sleep(0.02)
    worker.kill()
    before = {i.id: i.status for i in chunks(pg_engine, exp["id"])}
    start_worker()
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    after = {i.id: i for i in chunks(pg_engine, exp["id"])}
    for item_id, status in before.items():
        redone = after[item_id].attempts > 1
        assert redone == (status == "running"), (status, after[item_id].attempts)
    cones = api.get(f"/v1/experiments/{exp['id']}/cones", params={"limit": 1000}).json()
    assert len(cones["items"]) == 400  # nothing lost, nothing stored twice

    clean = wait_for(api, api.post("/v1/experiments", json=SPEC).json()["id"], timeout=300)
    assert clean["result"]["rows"] == done["result"]["rows"]


def test_cancel_stops_a_running_census(api, start_worker, pg_engine):
    start_worker()
    exp = api.post("/v1/experiments", json={**SPEC, "samples_per_width": 400}).json()
    deadline = time.monotonic() + 120
    while "running" not in [i.status for i in chunks(pg_engine, exp["id"])]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.post(f"/v1/experiments/{exp['id']}/cancel").status_code == 202
    # The running chunk stops at its next check (heartbeat 0.5 s), well before the reaper
    # could step in for a worker that had stopped beating (5 s).
    states = eventually(
        lambda: [i.status for i in chunks(pg_engine, exp["id"])],
        4,
        lambda states: not {"running", "queued"} & set(states),
        "no chunk running or queued",
    )
    assert states.count("done") < len(states)
    final = api.get(f"/v1/experiments/{exp['id']}").json()
    assert final["status"] == "cancelled" and final["result"] is None


def test_two_workers_share_a_census_and_fan_in_once(api, start_worker, pg_engine):
    start_worker()
    start_worker()
    spec = {**SPEC, "widths": [20, 640], "samples_per_width": 60}
    exp = api.post("/v1/experiments", json=spec).json()
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    items = chunks(pg_engine, exp["id"])
    assert len(items) >= 4 and all(i.status == "done" and i.attempts == 1 for i in items)
    assert sum(r["samples"] for r in done["result"]["rows"]) == 120
    cones = api.get(f"/v1/experiments/{exp['id']}/cones", params={"limit": 1000}).json()
    assert len(cones["items"]) == 120
