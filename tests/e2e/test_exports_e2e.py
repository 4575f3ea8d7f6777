"""Exports through the API with real workers: the tables of each kind have their declared
schemas whatever the spec and state, so exports of several experiments concatenate."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service import exports
from tests.conftest import eventually
from tests.e2e.conftest import wait_for

TEACHER = {"generator": "teacher", "n": 4, "d": 3, "teacher_width": 2, "seed": 3}
TRAINING = {
    "kind": "training",
    "dataset": TEACHER,
    "weight_decay": 0.05,
    "widths": [4],
    "init_scales": [0.1, 1.0],
    "seeds": 2,
    "optimizer": {"name": "gd", "lr": 0.05},
    "max_epochs": 3000,
    "device": "cpu",
    "tags": ["e2e-export"],
}
CENSUS = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 4, "d": 8, "seed": 0},
    "weight_decay": 0.01,
    "widths": [2, 8],
    "samples_per_width": 6,
}
OPTIMUM = {"kind": "optimum", "dataset": TEACHER, "weight_decay": 0.05, "name": "opt"}


def table(api: Any, url: str, **params: Any) -> pa.Table:
    resp = api.get(url, params=params)
    assert resp.status_code == 200, resp.text
    return pq.read_table(io.BytesIO(resp.content))


def header(api: Any, url: str, **params: Any) -> list[str]:
    resp = api.get(url, params=params)
    assert resp.status_code == 200, resp.text
    return next(csv.reader(io.StringIO(resp.text)))


def submit(api: Any, spec: dict[str, Any]) -> str:
    resp = api.post("/v1/experiments", json=spec)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def test_training_exports_with_other_grad_tol_concatenate(api, start_worker):
    start_worker()
    ids = [submit(api, TRAINING), submit(api, {**TRAINING, "grad_tol": 1e-8})]
    for exp_id in ids:
        assert wait_for(api, exp_id, timeout=240)["status"] == "succeeded"
    tables = [table(api, f"/v1/experiments/{i}/export.parquet") for i in ids]
    assert [t.schema for t in tables] == [exports.TRAINING] * 2
    both = pa.concat_tables(tables)
    assert both.num_rows == 8 and both["grad_tol"].to_pylist() == [1e-16] * 4 + [1e-8] * 4
    assert set(both["data_seed"].to_pylist()) == {3} and set(both["lr"].to_pylist()) == {0.05}
    assert None not in both["final_reg_loss"].to_pylist()
    assert set(both["final_stop"].to_pylist()) <= {"converged", "not_converged"}
    assert header(api, f"/v1/experiments/{ids[0]}/export.csv") == both.column_names

    many = table(api, "/v1/export.parquet", ids=",".join(ids))
    assert many.equals(both)
    tagged = table(api, "/v1/export.parquet", tag="e2e-export")
    assert tagged.schema == exports.TRAINING and tagged.num_rows == 8
    assert header(api, "/v1/export.csv", tag="e2e-export") == exports.TRAINING.names

    runs = api.get(f"/v1/experiments/{ids[0]}/runs").json()["items"]
    lengths = {
        r["id"]: len(api.get(f"/v1/experiments/{ids[0]}/runs/{r['id']}/curve").json()["epoch"])
        for r in runs
    }
    curves = table(api, f"/v1/experiments/{ids[0]}/curves.parquet")
    assert curves.schema == exports.CURVES and curves.num_rows == sum(lengths.values())
    counted = curves.group_by("run_id").aggregate([("epoch", "count")]).to_pylist()
    assert {c["run_id"]: c["epoch_count"] for c in counted} == lengths
    short = table(api, f"/v1/experiments/{ids[0]}/curves.parquet", max_points=3)
    assert short.num_rows <= 3 * len(runs)


def test_running_and_finished_census_exports_concatenate(api, start_worker):
    start_worker()
    small = submit(api, CENSUS)
    assert wait_for(api, small, timeout=240)["status"] == "succeeded"
    finished = table(api, f"/v1/experiments/{small}/export.parquet")
    assert finished.num_rows == 12 and None not in finished["verdict"].to_pylist()

    big = submit(api, {**CENSUS, "widths": [2, 8, 40], "samples_per_width": 2000})
    eventually(
        lambda: api.get(f"/v1/experiments/{big}/cones", params={"limit": 1}).json()["items"],
        timeout=120,
        what="the big census to store its first chunk of cones",
    )
    running = table(api, f"/v1/experiments/{big}/export.parquet")
    assert api.post(f"/v1/experiments/{big}/cancel").status_code == 202
    assert 0 < running.num_rows < 6000 and running.schema == finished.schema
    assert set(running["experiment_status"].to_pylist()) == {"running"}
    both = pa.concat_tables([finished, running])
    assert both.schema == exports.CENSUS
    assert set(both["verdict"].to_pylist()) <= {"global", "spurious", "no_local_min"}
    cones = api.get(f"/v1/experiments/{small}/cones", params={"limit": 100}).json()["items"]
    mine = finished.select(["width", "sample", "verdict", "value", "num_neurons"]).to_pylist()
    assert mine == [
        {k: c[k] for k in ("width", "sample", "verdict", "value", "num_neurons")} for c in cones
    ]
    widths = table(api, f"/v1/experiments/{small}/widths.parquet")
    assert widths.schema == exports.WIDTHS and widths["width"].to_pylist() == [2, 8]
    rows = api.get(f"/v1/experiments/{small}").json()["result"]["rows"]
    assert widths["p_global"].to_pylist() == [r["p_global"] for r in rows]
    assert table(api, f"/v1/experiments/{big}/widths.parquet").num_rows == 0


def test_optimum_exports_its_neurons(api, start_worker):
    start_worker()
    exp_id = submit(api, OPTIMUM)
    done = wait_for(api, exp_id, timeout=120)
    assert done["status"] == "succeeded", done
    neurons = done["result"]["neurons"]
    got = table(api, f"/v1/experiments/{exp_id}/export.parquet")
    assert got.schema == exports.OPTIMUM and got.num_rows == len(neurons) > 0
    assert got["w"].to_pylist() == [k["w"] for k in neurons]
    assert got["a"].to_pylist() == [k["a"] for k in neurons]
    assert set(got["optimum"].to_pylist()) == {done["result"]["optimum"]}
    assert set(got["name"].to_pylist()) == {"opt"}
    resp = api.get(f"/v1/experiments/{exp_id}/export.csv")
    lines = list(csv.reader(io.StringIO(resp.text)))
    assert lines[0] == got.column_names and len(lines) == 1 + len(neurons)
