"""Typed exports against PostgreSQL: the declared schemas, per experiment and across them.

Rows are stored directly (as the workers would store them), so that running and finished
experiments, other specs and other tenants can be set side by side in one transaction.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service import exports
from service.curves import decode_curve, encode_curve
from service.models import CensusCone, Experiment, ExperimentTag, Run, new_id
from service.routes import exports as export_routes
from tests.conftest import PG_URL, use_settings
from tests.service.test_api import BROKER, assert_problem
from tests.service.test_reports import curve

TOKENS = "lab-a:a-token,lab-b:b-token"
A = {"Authorization": "Bearer a-token"}
B = {"Authorization": "Bearer b-token"}
DATASET = {"generator": "teacher", "n": 4, "d": 3, "teacher_width": 2, "seed": 5}
TRAINING = {
    "kind": "training",
    "dataset": DATASET,
    "weight_decay": 0.01,
    "seed": 0,
    "widths": [4],
    "init_scales": [0.1, 1.0],
    "seeds": 1,
    "optimizer": {"name": "gd", "lr": 0.05, "batch_size": None},
    "max_epochs": 1000,
    "grad_tol": 1e-16,
    "log_growth": 1.01,
    "tolerance": None,
    "relative_tolerance": 1e-7,
    "device": "cpu",
    "test_points": 0,
    "tags": ["nightly"],
}
FINAL = {
    "epoch": 1000, "mse": 0.01, "reg_loss": 0.2, "grad_norm_sq": 1e-17, "gap": 1e-9,
    "num_neurons": 2, "cone_value": None, "cone_global": None, "projected_verdict": None,
    "birth_margin": None, "strict": None, "stop": "converged", "sharpness_init": 3.5,
    "lr_warning": None, "norm_ratio": 1.0, "test_mse": None,
}  # fmt: skip
CENSUS = {
    "kind": "census",
    "dataset": DATASET,
    "weight_decay": 0.01,
    "seed": 0,
    "widths": [2, 8],
    "samples_per_width": 2,
    "sampling": "uniform",
    "tolerance": None,
    "relative_tolerance": 1e-7,
    "data_seeds": [0, 1],
}
OPTIMUM = {"kind": "optimum", "dataset": DATASET, "weight_decay": 0.01, "seed": 0}
NEURONS = [{"w": [3.0, 4.0, 0.0], "a": 5.0}, {"w": [0.0, 1.0, 0.0], "a": -1.0}]
OPTIMUM_RESULT = {
    "optimum": 0.25, "num_patterns": 11, "num_signed_cones": 22, "theory_bound": 14,
    "neurons": NEURONS, "certificate": {"max_dual_violation": 1e-9, "gap_bound": 2e-9},
    "method": "enumerate",
}  # fmt: skip


@pytest.fixture
def api(pg_engine: Engine, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A test client with two tenants, and a session on its connection, rolled back."""
    from service.app import create_app
    from service.db import Database, database

    use_settings(monkeypatch, DATABASE_URL=PG_URL, BROKER_URL=BROKER, API_TOKENS=TOKENS)
    conn = pg_engine.connect()
    outer = conn.begin()
    mode = {"join_transaction_mode": "create_savepoint", "expire_on_commit": False}

    async def rolled_back() -> Database:
        return Database(lambda: Session(bind=conn, **mode), concurrency=1)  # type: ignore[arg-type]

    app = create_app()
    app.dependency_overrides[database] = rolled_back
    with TestClient(app, headers=A) as client, Session(bind=conn, **mode) as db:  # type: ignore[arg-type]
        yield client, db
    outer.rollback()
    conn.close()


def add(
    db: Session, spec: dict[str, Any], *, result: Any = None, tenant: str = "lab-a", **rows: Any
) -> str:
    status = "succeeded" if result is not None else "running"
    exp = Experiment(id=new_id(), kind=spec["kind"], status=status, spec=spec, result=result,
                     spec_hash="0" * 64, tenant=tenant, name=spec.get("name"))  # fmt: skip
    db.add(exp)
    db.flush()
    db.add_all(ExperimentTag(experiment_id=exp.id, tag=t) for t in spec.get("tags") or [])
    for index, fields in enumerate(rows.get("runs", [])):
        db.add(Run(id=new_id(), experiment_id=exp.id, index=index, **fields))
    for fields in rows.get("cones", []):
        db.add(CensusCone(experiment_id=exp.id, **fields))
    db.flush()
    return exp.id


def training_runs(spec: dict[str, Any], *, done: bool) -> list[dict[str, Any]]:
    from service.specs import training_grid

    runs = []
    for i, params in enumerate(training_grid(spec)):
        if done:
            blob = encode_curve(curve(i, last=400 + i))
            runs.append({"params": params, "status": "done", "verdict": "global_minimum",
                         "final": FINAL, "curve": blob})  # fmt: skip
        else:
            runs.append({"params": params, "status": "running", "latest": {
                "epoch": 10, "loss": 0.5, "gap": 0.3, "grad_norm_sq": 0.01}})  # fmt: skip
    return runs


def cone(width: int, sample: int, data_seed: int, verdict: str = "global") -> dict[str, Any]:
    spurious = verdict == "spurious"
    detail = {"patterns": ["1010", "0110"], "signs": [1, -1], "num_neurons": 2,
              "stationarity_residual": 1e-12 if spurious else None, "polished": spurious,
              "birth_margin": 0.002 if spurious else None, "strict": True if spurious else None,
              "data_seed": data_seed}  # fmt: skip
    method = "solved" if spurious else "screened"
    return {"width": width, "sample": sample, "verdict": verdict, "value": 0.3, "gap": 0.05,
            "covered": 0.25, "method": method, "detail": detail}  # fmt: skip


def parquet(client: TestClient, url: str, **params: Any) -> pa.Table:
    resp = client.get(url, params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    return pq.read_table(io.BytesIO(resp.content))


def csv_rows(client: TestClient, url: str, **params: Any) -> tuple[list[str], list[list[str]]]:
    resp = client.get(url, params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    header, *rows = list(csv.reader(io.StringIO(resp.text)))
    return header, rows


def test_training_exports_of_other_specs_and_states_concatenate(api):
    client, db = api
    swept = {**TRAINING, "grad_tol": 1e-10, "weight_decay": [0.01, 0.02], "data_seeds": [3]}
    ids = [
        add(db, TRAINING, result={"optimum": 0.2}, runs=training_runs(TRAINING, done=True)),
        add(db, swept, runs=training_runs(swept, done=False)),
        add(db, {**TRAINING, "grad_tol": 1e-12}),  # no runs yet
    ]
    tables = [parquet(client, f"/v1/experiments/{i}/export.parquet") for i in ids]
    assert all(t.schema == exports.TRAINING for t in tables)
    both = pa.concat_tables(tables)
    assert both.num_rows == 2 + 4 + 0
    rows = both.to_pylist()
    assert [r["grad_tol"] for r in rows] == [1e-16] * 2 + [1e-10] * 4
    assert [r["weight_decay"] for r in rows] == [0.01, 0.01, 0.01, 0.01, 0.02, 0.02]
    assert [r["data_seed"] for r in rows] == [5, 5, 3, 3, 3, 3]  # the dataset's own seed
    done, running = rows[0], rows[2]
    assert done["final_cone_value"] is None and done["final_reg_loss"] == 0.2
    assert done["final_epoch"] == 1000 and done["final_stop"] == "converged"
    assert done["latest_epoch"] is None and done["verdict"] == "global_minimum"
    assert running["status"] == "running" and running["final_epoch"] is None
    assert running["latest_epoch"] == 10 and running["latest_loss"] == 0.5
    for row in rows:
        assert row["experiment_id"] in ids[:2] and row["tags"] == ["nightly"]
        assert row["dataset_generator"] == "teacher" and row["dataset_n"] == 4
        assert row["optimizer_name"] == "gd" and row["lr"] == 0.05 and row["max_epochs"] == 1000


def test_census_exports_a_row_per_cone_and_widths_apart(api):
    client, db = api
    cones = [cone(w, s, s % 2, "spurious" if s == 1 else "global") for w in (2, 8) for s in (0, 1)]
    result = {"optimum": 0.25, "rows": [census_row(w) for w in (2, 8)]}
    finished = add(db, CENSUS, result=result, cones=cones)
    running = add(db, CENSUS, cones=cones[:1])
    empty = add(db, CENSUS)
    tables = [parquet(client, f"/v1/experiments/{i}/export.parquet") for i in (finished, running)]
    tables.append(parquet(client, f"/v1/experiments/{empty}/export.parquet"))
    assert [t.num_rows for t in tables] == [4, 1, 0]
    rows = pa.concat_tables(tables).to_pylist()
    assert all(t.schema == exports.CENSUS for t in tables)
    assert [(r["width"], r["sample"], r["data_seed"]) for r in rows[:4]] == [
        (2, 0, 0), (2, 1, 1), (8, 0, 0), (8, 1, 1)
    ]  # fmt: skip
    assert [r["verdict"] for r in rows[:4]] == ["global", "spurious"] * 2
    assert rows[1]["strict"] is True and rows[1]["birth_margin"] == 0.002
    assert rows[0]["strict"] is None and rows[0]["patterns"] == ["1010", "0110"]
    assert rows[0]["signs"] == [1, -1] and rows[0]["samples_per_width"] == 2
    assert rows[4]["experiment_status"] == "running" and rows[0]["experiment_status"] == "succeeded"

    widths = parquet(client, f"/v1/experiments/{finished}/widths.parquet")
    assert widths.schema == exports.WIDTHS
    got = widths.to_pylist()
    assert [(r["width"], r["data_seed"], r["pooled"]) for r in got] == [
        (2, None, True), (2, 0, False), (2, 1, False), (8, None, True), (8, 0, False),
        (8, 1, False)
    ]  # fmt: skip
    assert got[0]["p_global"] == 0.5 and got[0]["p_global_ci_low"] == 0.1
    assert got[0]["p_global_ci_high"] == 0.9 and got[0]["p_spurious_strict_ci_low"] is None
    assert got[1]["optimum"] == 0.24 and got[1]["samples"] == 1
    assert parquet(client, f"/v1/experiments/{running}/widths.parquet").num_rows == 0
    header, lines = csv_rows(client, f"/v1/experiments/{running}/widths.csv")
    assert header == exports.WIDTHS.names and lines == []


def census_row(width: int) -> dict[str, Any]:
    shares = {"samples": 2, "p_global": 0.5, "p_spurious": 0.5, "p_no_local_min": 0.0,
              "p_spurious_strict": None, "p_covered": 0.25, "p_global_ci": [0.1, 0.9],
              "p_spurious_ci": [0.1, 0.9], "p_no_local_min_ci": [0.0, 0.6],
              "p_spurious_strict_ci": None}  # fmt: skip
    split = [{**shares, "samples": 1, "data_seed": s, "optimum": 0.24 + s / 100} for s in (0, 1)]
    return {"width": width, **shares, "by_data_seed": split}


def test_optimum_exports_its_neurons(api):
    client, db = api
    done = add(db, {**OPTIMUM, "name": "best net"}, result=OPTIMUM_RESULT)
    table = parquet(client, f"/v1/experiments/{done}/export.parquet")
    assert table.schema == exports.OPTIMUM
    rows = table.to_pylist()
    assert [(r["neuron"], r["a"], r["w"], r["w_norm"]) for r in rows] == [
        (0, 5.0, [3.0, 4.0, 0.0], 5.0), (1, -1.0, [0.0, 1.0, 0.0], 1.0)
    ]  # fmt: skip
    assert {r["optimum"] for r in rows} == {0.25} and rows[0]["certificate_gap_bound"] == 2e-9
    assert rows[0]["num_neurons"] == 2 and rows[0]["data_seed"] == 5
    assert rows[0]["weight_decay"] == 0.01 and rows[0]["name"] == "best net"
    header, lines = csv_rows(client, f"/v1/experiments/{done}/export.csv")
    assert header == exports.OPTIMUM.names and len(lines) == 2
    back = dict(zip(header, lines[0], strict=True))
    assert json.loads(back["w"]) == [3.0, 4.0, 0.0] and back["tags"] == "[]"
    queued = add(db, OPTIMUM)
    assert parquet(client, f"/v1/experiments/{queued}/export.parquet").schema == exports.OPTIMUM


def test_csv_has_the_parquet_columns_and_values(api):
    client, db = api
    exp = add(db, TRAINING, result={"optimum": 0.2}, runs=training_runs(TRAINING, done=True))
    header, lines = csv_rows(client, f"/v1/experiments/{exp}/export.csv")
    table = parquet(client, f"/v1/experiments/{exp}/export.parquet")
    assert header == table.column_names == exports.TRAINING.names
    row = dict(zip(header, lines[0], strict=True))
    assert row["final_grad_norm_sq"] == "1e-17" and row["final_cone_global"] == ""
    assert row["tags"] == '["nightly"]' and row["init_scale"] == "0.1"
    curves_header, _ = csv_rows(client, f"/v1/experiments/{exp}/curves.csv")
    assert curves_header == exports.CURVES.names


def test_curves_are_every_point_of_every_run(api):
    client, db = api
    exp = add(db, TRAINING, result={"optimum": 0.2}, runs=training_runs(TRAINING, done=True))
    runs = db.query(Run).filter_by(experiment_id=exp).order_by(Run.index).all()
    lengths = [len(decode_curve(r.curve)["epoch"]) for r in runs]
    table = parquet(client, f"/v1/experiments/{exp}/curves.parquet")
    assert table.schema == exports.CURVES and table.num_rows == sum(lengths)
    first = decode_curve(runs[0].curve)
    mine = table.filter(pa.compute.equal(table["run_id"], runs[0].id))
    assert mine["epoch"].to_pylist() == first["epoch"].tolist()
    assert np.array_equal(mine["gap"].to_numpy(), first["gap"])
    assert set(mine["init_scale"].to_pylist()) == {0.1} and set(table["width"].to_pylist()) == {4}
    assert set(table["weight_decay"].to_pylist()) == {0.01} and set(table["lr"].to_pylist()) == {
        0.05
    }
    assert set(table["data_seed"].to_pylist()) == {5}
    short = parquet(client, f"/v1/experiments/{exp}/curves.parquet", max_points=5)
    assert 2 * 2 <= short.num_rows <= 2 * 5
    running = add(db, TRAINING, runs=training_runs(TRAINING, done=False))
    assert parquet(client, f"/v1/experiments/{running}/curves.parquet").num_rows == 0
    census = add(db, CENSUS)
    assert_problem(client.get(f"/v1/experiments/{census}/curves.parquet"), 404, "no curves")
    assert_problem(client.get(f"/v1/experiments/{exp}/widths.csv"), 404, "no widths")


def test_an_export_across_experiments_by_ids_and_by_tag(api):
    client, db = api
    first = add(db, TRAINING, result={"optimum": 0.2}, runs=training_runs(TRAINING, done=True))
    second = add(db, {**TRAINING, "grad_tol": 1e-9, "tags": ["nightly", "b"]})
    third = add(db, {**TRAINING, "tags": ["other"]}, runs=training_runs(TRAINING, done=False))
    table = parquet(client, "/v1/export.parquet", ids=f"{third},{first}")
    assert table.schema == exports.TRAINING
    assert table["experiment_id"].to_pylist() == [third] * 2 + [first] * 2
    repeated = client.get("/v1/export.parquet", params=[("ids", third), ("ids", first)])
    assert pq.read_table(io.BytesIO(repeated.content)).equals(table)
    tagged = parquet(client, "/v1/export.parquet", tag="nightly")
    assert tagged["experiment_id"].to_pylist() == [first] * 2  # second has no runs yet
    header, lines = csv_rows(client, "/v1/export.csv", tag="nightly", kind="training")
    assert header == exports.TRAINING.names and len(lines) == 2
    assert parquet(client, "/v1/export.parquet", tag="nightly", kind="census").num_rows == 0
    curves = parquet(client, "/v1/export.parquet", ids=first, table="curves")
    assert curves.schema == exports.CURVES and curves.num_rows > 0
    short = parquet(client, "/v1/export.parquet", ids=first, table="curves", max_points=3)
    assert 2 * 2 <= short.num_rows <= 2 * 3
    assert second


def test_multi_experiment_export_problems(api, monkeypatch):
    client, db = api
    training = add(db, TRAINING)
    census = add(db, {**CENSUS, "tags": ["nightly"]})
    theirs = add(db, {**TRAINING, "tags": []}, tenant="lab-b")
    unknown = "f" * 32
    missing = client.get("/v1/export.parquet", params={"ids": f"{training},{theirs},{unknown}"})
    body = assert_problem(missing, 404, theirs, unknown)
    assert training not in body["detail"]
    assert_problem(client.get("/v1/export.parquet", params={"ids": "not-an-id"}), 404, "not-an")
    mixed = client.get("/v1/export.parquet", params={"ids": f"{training},{census}"})
    assert assert_problem(mixed, 422, "census, training")["errors"][0]["loc"] == ["query", "kind"]
    wrong = client.get("/v1/export.csv", params={"ids": census, "kind": "training"})
    assert_problem(wrong, 422, f"{census} (census)")
    assert_problem(client.get("/v1/export.parquet"), 422, "ids", "tag")
    assert_problem(client.get("/v1/export.parquet", params={"ids": " , "}), 422, "no experiment")
    both = client.get("/v1/export.parquet", params={"ids": training, "tag": "nightly"})
    assert_problem(both, 422, "not both")
    assert_problem(client.get("/v1/export.parquet", params={"tag": "none"}), 404, "none")
    assert_problem(client.get("/v1/export.parquet", params={"tag": "nightly", "kind": "x"}), 422)
    no_widths = client.get("/v1/export.parquet", params={"ids": training, "table": "widths"})
    assert_problem(no_widths, 404, "no widths")
    assert_problem(client.get("/v1/export.parquet", params={"idz": training}), 422, "idz")
    # lab-b sees its own experiment and nothing of lab-a's tag
    other = TestClient(client.app, headers=B)
    assert parquet(other, "/v1/export.parquet", ids=theirs).schema == exports.TRAINING
    assert_problem(other.get("/v1/export.parquet", params={"tag": "nightly"}), 404, "nightly")
    monkeypatch.setattr(export_routes, "MAX_EXPERIMENTS", 1)
    over = client.get("/v1/export.parquet", params={"ids": f"{training},{census}"})
    assert_problem(over, 422, "at most 1 experiments", "names 2")
    add(db, {**CENSUS, "tags": ["nightly"]})
    assert_problem(client.get("/v1/export.parquet", params={"tag": "nightly"}), 422, "at most 1")


def test_rows_are_read_a_page_at_a_time_in_order(api, monkeypatch):
    client, db = api
    monkeypatch.setattr(export_routes, "PAGE_ROWS", 3)
    monkeypatch.setattr(export_routes, "PAGE_CURVES", 1)
    cones = [cone(w, s, s % 2) for w in (2, 8) for s in range(4)]
    census = add(db, CENSUS, cones=cones[::-1])  # stored out of order
    resp = client.get(f"/v1/experiments/{census}/export.parquet")
    meta = pq.ParquetFile(io.BytesIO(resp.content)).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 8
    got = pq.read_table(io.BytesIO(resp.content)).select(["width", "sample"]).to_pylist()
    assert got == [{"width": w, "sample": s} for w in (2, 8) for s in range(4)]
    swept = {**TRAINING, "weight_decay": [0.01, 0.02, 0.03, 0.04]}
    training = add(db, swept, runs=training_runs(swept, done=True))
    table = parquet(client, f"/v1/experiments/{training}/export.parquet")
    assert table["run_index"].to_pylist() == list(range(8))
    curves = client.get(f"/v1/experiments/{training}/curves.parquet")
    assert pq.ParquetFile(io.BytesIO(curves.content)).metadata.num_row_groups == 8
