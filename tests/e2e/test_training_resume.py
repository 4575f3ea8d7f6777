"""A training sweep whose worker is killed mid-sweep resumes from its checkpoint."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import WorkItem
from tests.conftest import eventually
from tests.e2e.conftest import wait_for

SPEC = {
    "kind": "training",
    "dataset": {"generator": "theorem2", "d": 4, "seed": 0},
    "weight_decay": 1e-4,
    "widths": [20],
    "init_scales": [1e-3, 0.5],
    "seeds": 2,
    "optimizer": {"name": "gd", "lr": 0.05},
    # About 5 s of training on one core (10 checkpoint intervals), with no early
    # stop, so a checkpoint is always written well before the sweep ends.
    "max_epochs": 3_000_000,
    "grad_tol": 1e-30,
    "device": "cpu",
}


def batch_item(pg_engine, experiment_id: str) -> WorkItem:
    with Session(pg_engine) as s:
        query = select(WorkItem).where(
            WorkItem.experiment_id == experiment_id, WorkItem.task == "training_batch"
        )
        return s.scalars(query).one()


def finals(api, experiment_id: str) -> list[tuple]:
    runs = api.get(f"/v1/experiments/{experiment_id}/runs").json()["items"]
    return [(r["params"], r["verdict"], r["final"]) for r in runs]


def test_killed_sweep_resumes_from_checkpoint_with_identical_results(api, start_worker, pg_engine):
    worker = start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    deadline = time.monotonic() + 120
    while batch_item(pg_engine, exp["id"]).checkpoint is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        status = api.get(f"/v1/experiments/{exp['id']}").json()
        assert status["status"] in ("queued", "running"), status
        time.sleep(0.05)
    worker.kill()
    assert batch_item(pg_engine, exp["id"]).status == "running"
    start_worker()
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    item = batch_item(pg_engine, exp["id"])
    assert item.attempts == 2 and item.output["resumed_from"] > 0

    again = api.post("/v1/experiments", json=SPEC).json()
    clean = wait_for(api, again["id"], timeout=300)
    assert clean["status"] == "succeeded", clean
    assert batch_item(pg_engine, again["id"]).output["resumed_from"] == 0
    assert finals(api, exp["id"]) == finals(api, again["id"])
    assert done["result"]["groups"] == clean["result"]["groups"]


def test_cancel_takes_effect_within_a_checkpoint_interval(api, start_worker, pg_engine):
    start_worker()
    spec = {**SPEC, "max_epochs": 100_000_000}
    exp = api.post("/v1/experiments", json=spec).json()
    deadline = time.monotonic() + 120
    while batch_item(pg_engine, exp["id"]).checkpoint is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    assert api.post(f"/v1/experiments/{exp['id']}/cancel").status_code == 202
    # The sweep checks the flag every checkpoint interval (0.5 s); the reaper would need 5 s.
    eventually(lambda: batch_item(pg_engine, exp["id"]).status, 4, "cancelled".__eq__, "cancelled")
    runs = api.get(f"/v1/experiments/{exp['id']}/runs").json()["items"]
    assert {r["status"] for r in runs} == {"cancelled"}
