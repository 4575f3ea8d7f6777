"""The optimum experiment through the API, Redis, PostgreSQL and real worker processes."""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy import select

from service.models import WorkItem
from tests.conftest import eventually
from tests.e2e.conftest import wait_for

SPEC = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 6, "d": 10, "seed": 1},
    "weight_decay": 0.01,
}
# Slow enough (seconds) that a kill lands mid-task.
SLOW = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 90, "d": 3, "seed": 2},
    "weight_decay": 0.01,
}


def network_loss(spec: dict, neurons: list[dict]) -> float:
    from workers.landscape.geometry import datasets

    X, y = datasets.build(spec["dataset"])
    W = np.array([n["w"] for n in neurons]).reshape(len(neurons), X.shape[1])
    a = np.array([n["a"] for n in neurons])
    pred = np.maximum(X @ W.T, 0) @ a
    return float(np.mean((pred - y) ** 2) + spec["weight_decay"] * (np.sum(W**2) + np.sum(a**2)))


def test_submit_poll_succeed(api, start_worker):
    start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    done = wait_for(api, exp["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": 1, "total": 1, "unit": "items"}
    assert done["started_at"] and done["finished_at"]
    res = done["result"]
    assert res["num_patterns"] == 64 and res["num_signed_cones"] == 128
    assert res["theory_bound"] == 64
    assert res["certificate"]["max_dual_violation"] <= 1e-6
    assert 0 <= res["certificate"]["gap_bound"] <= 1e-8 * res["optimum"]
    assert abs(network_loss(done["spec"], res["neurons"]) - res["optimum"]) <= 1e-7 * res["optimum"]


def test_a_single_zero_row_has_the_mean_of_y_squared_as_optimum(api, start_worker):
    start_worker()
    spec = {**SPEC, "dataset": {"generator": "custom", "X": [[0.0, 0.0]], "y": [1.0]}}
    exp = api.post("/v1/experiments", json=spec).json()
    done = wait_for(api, exp["id"])
    # a single zero row: the only pattern is all-zero, the optimum is the mean of y^2
    assert done["status"] == "succeeded", done
    assert abs(done["result"]["optimum"] - 1.0) < 1e-7


def item_of(pg_engine, experiment_id: str) -> WorkItem:
    from sqlalchemy.orm import Session

    with Session(pg_engine) as s:
        return s.scalars(select(WorkItem).where(WorkItem.experiment_id == experiment_id)).one()


def test_kill_minus_nine_mid_task_then_new_worker_finishes(api, start_worker, pg_engine):
    worker = start_worker()
    exp = api.post("/v1/experiments", json=SLOW).json()
    deadline = time.monotonic() + 60
    while item_of(pg_engine, exp["id"]).status != "running":
        assert time.monotonic() < deadline, "the worker never started the task"
        time.sleep(0.02)
    worker.kill()
    item = item_of(pg_engine, exp["id"])
    assert (item.status, item.attempts) == ("running", 1), "not killed mid-task"
    start_worker()
    done = wait_for(api, exp["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert item_of(pg_engine, exp["id"]).attempts == 2
    assert done["result"]["certificate"]["max_dual_violation"] <= 1e-6


def test_a_message_lost_while_queued_is_recovered_by_the_reaper(api, start_worker, redis_client):
    exp = api.post("/v1/experiments", json=SPEC).json()
    assert redis_client.llen("cpu") == 1
    redis_client.flushdb()  # the session's own broker database: the message is gone
    assert redis_client.llen("cpu") == 0
    start_worker()
    done = wait_for(api, exp["id"], timeout=120)
    assert done["status"] == "succeeded", done


def test_cancel_queued_work_never_runs(api, start_worker, pg_engine, redis_client):
    exp = api.post("/v1/experiments", json=SPEC).json()
    assert api.post(f"/v1/experiments/{exp['id']}/cancel").json()["status"] == "cancelled"
    later = api.post("/v1/experiments", json=SPEC).json()
    start_worker()
    # One worker process takes the queue in order: once the later experiment is done and
    # the queue is empty, the cancelled one's message has been delivered (and the reaper,
    # every 0.5 s, has had its passes).
    assert wait_for(api, later["id"])["status"] == "succeeded"
    eventually(lambda: redis_client.llen("cpu"), 10, lambda n: n == 0, "an empty queue")
    after = api.get(f"/v1/experiments/{exp['id']}").json()
    assert after["status"] == "cancelled" and after["result"] is None
    item = item_of(pg_engine, exp["id"])
    assert (item.status, item.attempts) == ("cancelled", 0)  # never claimed
    assert api.post(f"/v1/experiments/{exp['id']}/cancel").status_code == 409
