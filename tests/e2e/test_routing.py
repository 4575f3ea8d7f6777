"""Routing with real workers: a stack whose only worker serves cpu runs training written
with the defaults, "auto" work moves off a gpu queue whose worker died, and work that no
live worker serves fails after QUEUE_DEADLINE with a reason naming the queue."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.models import Worker, WorkItem
from tests.conftest import use_settings
from tests.e2e.conftest import wait_for

DEADLINE = 4.0
# The paper's Theorem 2 point set is not needed here: one point, optimum 0.29 (SCIENCE §8).
DEFAULTS = {  # every optional field left out: device "auto", gd, seeds 1
    "kind": "training",
    "dataset": {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]},
    "weight_decay": 0.1,
    "widths": [3],
    "init_scales": [1.0],
    "max_epochs": 20000,
}


@pytest.fixture
def routing(stack, pg_engine, monkeypatch) -> Iterator[dict[str, str]]:
    """The stack with a short queue deadline and no workers left from other tests."""
    extra = {"QUEUE_DEADLINE": str(DEADLINE), "WORKER_TTL": "4"}
    use_settings(monkeypatch, **extra)
    stack.update(extra)  # for the workers start_worker starts
    with Session(pg_engine) as s:
        s.execute(delete(Worker))
        s.commit()
    yield stack


@pytest.fixture
def api(routing) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app()) as client:
        yield client


def queues_of(pg_engine, experiment_id: str) -> list[str]:
    with Session(pg_engine) as s:
        rows = s.scalars(select(WorkItem.queue).where(WorkItem.experiment_id == experiment_id))
        return sorted(rows)


def test_a_cpu_only_stack_runs_training_written_with_the_defaults(
    api, start_worker, pg_engine, routing
):
    start_worker("cpu")
    ready = api.get("/readyz").json()
    assert ready["checks"]["workers"] == "cpu: 1, gpu: 0"
    # the worker's container health check: its reaper ticks
    probe = [sys.executable, "-m", "service.cli", "healthcheck", "worker", "--max-age", "5"]
    assert subprocess.run(probe, env=routing, timeout=60).returncode == 0
    exp = api.post("/v1/experiments", json=DEFAULTS).json()
    done = wait_for(api, exp["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert abs(done["result"]["optimum"] - 0.29) < 1e-7
    assert queues_of(pg_engine, exp["id"]) == ["cpu", "cpu"]  # the optimum and the batch


def test_auto_work_moves_off_a_gpu_queue_whose_worker_died(api, start_worker, pg_engine):
    cpu = start_worker("cpu")
    start_worker("gpu").kill()  # its row looks live for WORKER_TTL: the batch goes to gpu
    exp = api.post("/v1/experiments", json=DEFAULTS).json()
    done = wait_for(api, exp["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert abs(done["result"]["optimum"] - 0.29) < 1e-7
    with Session(pg_engine) as s:
        batch = s.scalars(
            select(WorkItem).where(
                WorkItem.experiment_id == exp["id"], WorkItem.task == "training_batch"
            )
        ).one()
    assert (batch.queue, batch.fallback) == ("cpu", "gpu")
    assert b"moved 1 work item(s) to a queue that a live worker serves" in cpu.log.read_bytes()


def test_cuda_without_a_gpu_worker_fails_within_the_deadline(api, start_worker):
    start_worker("cpu")
    spec = {**DEFAULTS, "device": "cuda"}
    start = time.monotonic()
    exp = api.post("/v1/experiments", json=spec).json()
    done = wait_for(api, exp["id"], timeout=60)
    took = time.monotonic() - start
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "NoWorker"
    detail = done["error"]["detail"]
    assert "no live worker serves the 'gpu' queue" in detail, detail
    assert "QUEUE_DEADLINE" in detail and '"device": "auto" or "cpu"' in detail
    # the optimum ran on the cpu worker first; then the deadline plus a reaper pass or two
    assert DEADLINE < took < DEADLINE + 30, took


def test_with_no_worker_at_all_the_api_fails_stranded_work(api):
    spec = {"kind": "optimum", "dataset": DEFAULTS["dataset"], "weight_decay": 0.1}
    exp = api.post("/v1/experiments", json=spec).json()
    done = wait_for(api, exp["id"], timeout=DEADLINE + 20)
    assert done["status"] == "failed", done
    assert "no live worker serves the 'cpu' queue" in done["error"]["detail"]
