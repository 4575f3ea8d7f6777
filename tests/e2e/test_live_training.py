"""Watching a training sweep live through the API, with a real worker (CHECKPOINT_INTERVAL
0.5 s): its runs are `running`, their partial curves and latest points are readable and
grow between two reads, progress rises in epochs; a cancel keeps every run's curve and
latest point up to the cancel; a worker's shutdown keeps them too, with the runs queued
until another worker resumes the batch; a finished sweep's progress is its total."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import wait_for
from tests.e2e.test_training_resume import SPEC, batch_item

RUNS = 4  # 1 width x 2 init_scales x 2 seeds, one batch
LONG = {**SPEC, "max_epochs": 100_000_000}  # minutes of training: it is cancelled


def until(what: str, read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float) -> Any:
    """Read until ok(value); fails naming `what` and the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.05)


def training(api, eid: str) -> Callable[[], list[dict[str, Any]]]:
    """A reader of the experiment's runs."""

    def runs() -> list[dict[str, Any]]:
        return api.get(f"/v1/experiments/{eid}/runs").json()["items"]

    return runs


def all_running(runs: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The runs once every one is running with a latest point (the batch's first checkpoint)."""
    return until(
        "runs running with a latest point",
        runs,
        lambda rs: all(r["status"] == "running" and r["latest"] for r in rs),
        timeout=120,
    )


def test_a_sweep_is_watched_live_and_a_cancel_keeps_its_partial_curves(
    api, start_worker, pg_engine
):
    start_worker()
    exp = api.post("/v1/experiments", json=LONG).json()
    eid = exp["id"]
    total = RUNS * LONG["max_epochs"]
    assert exp["progress"] == {"done": 0, "total": total, "unit": "epochs"}

    runs = training(api, eid)

    def curve(run_id: str) -> dict[str, list]:
        resp = api.get(f"/v1/experiments/{eid}/runs/{run_id}/curve")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def progress() -> dict[str, Any]:
        return api.get(f"/v1/experiments/{eid}").json()["progress"]

    live = all_running(runs)  # the batch trains, past its first checkpoint
    assert len(live) == RUNS and all(r["verdict"] is None for r in live)
    first = live[0]
    before = curve(first["id"])
    assert before["epoch"][0] == 0 and len({len(c) for c in before.values()}) == 1
    latest = first["latest"]
    assert set(latest) == {"epoch", "loss", "gap", "grad_norm_sq"}
    assert latest["epoch"] in before["epoch"] and latest["epoch"] > 0
    at = before["epoch"].index(latest["epoch"])
    assert latest["loss"] == before["reg_loss"][at] and latest["gap"] == before["gap"][at]
    p1 = progress()
    assert p1["unit"] == "epochs" and p1["total"] == total and 0 < p1["done"] < total

    # a later read: longer curves that extend the earlier ones, and more epochs done
    after = until(
        "the curve grows",
        lambda: curve(first["id"]),
        lambda c: len(c["epoch"]) > len(before["epoch"]),
        30,
    )
    assert after["epoch"][: len(before["epoch"])] == before["epoch"]
    assert after["reg_loss"][: len(before["epoch"])] == before["reg_loss"]
    p2 = until("progress rises", progress, lambda p: p["done"] > p1["done"], 30)
    assert p2["done"] < total and p2["unit"] == "epochs"
    assert runs()[0]["latest"]["epoch"] > latest["epoch"]
    seen = {r["id"]: curve(r["id"])["epoch"][-1] for r in runs()}  # just before the cancel

    assert api.post(f"/v1/experiments/{eid}/cancel").status_code == 202
    until("the batch stops", lambda: batch_item(pg_engine, eid).status, "cancelled".__eq__, 4)
    kept = runs()
    assert {r["status"] for r in kept} == {"cancelled"}
    done = progress()["done"]  # the epochs trained up to the cancel
    assert p2["done"] <= done < total
    for run in kept:
        c = curve(run["id"])
        assert c["epoch"][0] == 0 and c["epoch"] == sorted(c["epoch"])
        assert run["latest"]["epoch"] == c["epoch"][-1] >= seen[run["id"]]
        assert run["verdict"] is None and run["final"] is None
    # up to about the cancel: the curves end where the batch stopped (points 1% apart)
    ends = sum(r["latest"]["epoch"] for r in kept)
    assert ends <= done <= 1.02 * ends + RUNS * 300, (ends, done)
    assert api.get(f"/v1/experiments/{eid}").json()["status"] == "cancelled"


def test_a_shutdown_keeps_the_partial_curves_and_the_resumed_sweep_ends_at_its_total(
    api, start_worker
):
    worker = start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()  # about 5 s of training
    eid = exp["id"]

    runs = training(api, eid)
    live = all_running(runs)
    worker.proc.send_signal(signal.SIGTERM)  # the batch is handed back to the queue
    worker.proc.wait(timeout=30)
    handed_back = runs()
    assert {r["status"] for r in handed_back} == {"queued"}
    for before, after in zip(live, handed_back, strict=True):
        assert after["latest"]["epoch"] >= before["latest"]["epoch"]
        c = api.get(f"/v1/experiments/{eid}/runs/{after['id']}/curve").json()
        assert c["epoch"][-1] == after["latest"]["epoch"]

    start_worker()
    until("runs running again", runs, lambda rs: {r["status"] for r in rs} == {"running"}, 120)
    done = wait_for(api, eid, timeout=300)
    assert done["status"] == "succeeded", done
    total = RUNS * SPEC["max_epochs"]
    assert done["progress"] == {"done": total, "total": total, "unit": "epochs"}
    for run in runs():
        assert run["status"] == "done" and run["latest"]["epoch"] == run["final"]["epoch"]
        assert run["latest"]["loss"] == run["final"]["reg_loss"]
