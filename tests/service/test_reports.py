"""Figures, exports and curves: the pure functions, then the endpoints against PostgreSQL."""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service import arrow_tables, exports, reports
from service.curves import FIELDS, decode_curve, encode_curve
from service.models import Experiment, Run, new_id
from tests.conftest import PG_URL, use_settings
from tests.service.test_api import BROKER, assert_problem
from tests.service.test_curves import log_epochs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CENSUS_SPEC = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 6, "d": 10, "teacher_width": 10, "seed": 0},
    "weight_decay": 0.01,
    "widths": [10, 40, 160, 640],
    "samples_per_width": 20,
}
CENSUS_RESULT = {
    "optimum": 0.1304,
    "num_signed_cones": 128,
    "theory_bound": 64,
    "rows": [
        {"width": w, "samples": 20, "p_global": g, "p_spurious": s, "p_no_local_min": 1 - g - s,
         "p_covered": c}
        for w, g, s, c in [(10, 0.0, 0.1, 0.07), (40, 0.1, 0.2, 0.27), (160, 0.6, 0.1, 0.71),
                           (640, 1.0, 0.0, 0.99)]
    ],
    "threshold": {"m_half": 130.0, "m_95": None},
}  # fmt: skip
TRAINING_SPEC = {
    "kind": "training",
    "dataset": {"generator": "theorem2", "d": 4, "perturbation": 0.001, "seed": 0},
    "weight_decay": 0.001,
    "widths": [10, 50],
    "init_scales": [0.001, 1.0],
    "seeds": 3,
}
VERDICT_SHARE = {"global_minimum": "p_global", "spurious_local_minimum": "p_spurious"}


def curve(seed: int, *, last: int = 5000, floor: float = 0.0) -> dict[str, np.ndarray]:
    """A plausible training curve: the gap decays to `floor` (0 may go slightly negative)."""
    rng = np.random.default_rng(seed)
    epoch = log_epochs(last, growth=1.05)
    gap = floor + 0.3 * np.exp(-epoch / (last / 20)) - (1e-18 if floor == 0 else 0.0)
    size = len(epoch)
    return {
        "epoch": epoch,
        "mse": gap + rng.random(size) * 1e-3,
        "reg_loss": gap + 0.2345,
        "grad_norm_sq": gap**2,
        "gap": gap,
        "param_norm_sq": np.full(size, 2.5),
        "effective_rank": np.linspace(3.0, 1.0, size),
        "num_neurons": np.linspace(10, 2, size).round().astype(np.int64),
    }


def training_grid() -> tuple[dict[str, Any], list[reports.TrainingRun]]:
    """Runs over widths x init_scales x seeds, and the result that summarises them."""
    runs: list[reports.TrainingRun] = []
    groups = []
    for width in TRAINING_SPEC["widths"]:
        for scale in TRAINING_SPEC["init_scales"]:
            verdict = "global_minimum" if scale == 1.0 else "spurious_local_minimum"
            floor = 0.0 if scale == 1.0 else 0.02
            for seed in range(TRAINING_SPEC["seeds"]):
                params = {"width": width, "init_scale": scale, "seed": seed}
                runs.append((params, verdict, curve(len(runs), floor=floor)))
            group = {"width": width, "init_scale": scale, "runs": 3, "p_global": 0.0,
                     "p_spurious": 0.0, "p_saddle": 0.0, "p_not_converged": 0.0,
                     "p_diverged": 0.0}  # fmt: skip
            group[VERDICT_SHARE[verdict]] = 1.0
            groups.append(group)
    return {"optimum": 0.2345, "groups": groups}, runs


def assert_svg(body: bytes) -> None:
    root = ET.fromstring(body)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 20


def assert_png(body: bytes, shape: tuple[int, int]) -> None:
    assert body.startswith(PNG_MAGIC)
    pixels = imread(io.BytesIO(body), format="png")
    assert pixels.shape == (*shape, 4)
    assert pixels[..., :3].std() > 0.05  # something was drawn


# --- figures ---------------------------------------------------------------------------


def test_census_figure_svg_and_png():
    assert_svg(reports.census_figure(CENSUS_RESULT, "svg", spec=CENSUS_SPEC))
    assert_png(reports.census_figure(CENSUS_RESULT, "png", spec=CENSUS_SPEC), (720, 1125))
    bare = {"rows": CENSUS_RESULT["rows"], "num_signed_cones": 128, "threshold": {}}
    assert_svg(reports.census_figure(bare, "svg"))
    with pytest.raises(ValueError, match="unknown figure format"):
        reports.census_figure(CENSUS_RESULT, "gif")


def test_training_figure_svg_and_png():
    result, runs = training_grid()
    runs[0] = (runs[0][0], None, None)  # a run without a curve is skipped
    assert_svg(reports.training_figure(result, runs, "svg", spec=TRAINING_SPEC))
    assert_png(reports.training_figure(result, runs, "png", spec=TRAINING_SPEC), (750, 1800))


def test_training_figure_samples_thousands_of_runs():
    result, runs = training_grid()
    many = [({**p, "seed": k}, v, c) for k in range(60) for p, v, c in runs]  # 720 runs
    assert_png(reports.training_figure(result, many, "png", spec=TRAINING_SPEC), (750, 1800))
    params = [
        {"init_scale": s, "seed": k} for s in (1e-3, 1e-2, 1e-1, 1.0, 3.0) for k in range(1000)
    ]
    chosen = reports.sample_runs(params)
    assert len(chosen) <= reports.MAX_LINES and chosen == reports.sample_runs(params)
    assert {params[i]["init_scale"] for i in chosen} == {1e-3, 1e-2, 1e-1, 1.0, 3.0}
    assert reports.sample_runs(params[:50]) == list(range(50))


def test_describe_reads_every_dataset_kind():
    assert reports.describe(CENSUS_SPEC) == "teacher data, n=6, d=10, λ=0.01"
    assert reports.describe(TRAINING_SPEC) == "theorem2 data, n=4, d=4, λ=0.001"
    custom = {"dataset": {"generator": "custom", "X": [[1, 0, 0], [0, 1, 0]], "y": [1, 2]}}
    assert reports.describe(custom) == "custom data, n=2, d=3"
    assert reports.describe(None) == ""
    swept = {**TRAINING_SPEC, "weight_decay": [0.1, 0.2], "data_seeds": [0, 1, 2]}
    assert reports.describe(swept) == "theorem2 data, n=4, d=4, λ=0.1/0.2, 3 data seeds"


# --- exports ---------------------------------------------------------------------------


def run_row(index: int, **fields: Any) -> Run:
    base: dict[str, Any] = {"status": "succeeded", "verdict": None, "final": None, "curve": None}
    return Run(id=f"r{index}", experiment_id="e", index=index, **{**base, **fields})


TRAINING_RUNS = [
    run_row(0, params={"width": 10, "init_scale": 0.001, "seed": 0}, verdict="global_minimum",
            final={"epoch": 900, "mse": 0.1, "reg_loss": 0.2345, "grad_norm_sq": 1e-17,
                   "gap": 1e-9, "num_neurons": 2}),
    run_row(1, params={"width": 10, "init_scale": 1.0, "seed": 0}, verdict="diverged",
            final={"epoch": 12, "mse": 1.5, "reg_loss": 2, "grad_norm_sq": None, "gap": None,
                   "num_neurons": 4}),
    run_row(2, params={"width": 50, "init_scale": 1.0, "seed": 1}, status="queued"),
]  # fmt: skip
BASE = exports.experiment_columns(
    TRAINING_SPEC, experiment_id="e", name=None, tags=["t"], status="running"
)


def training_rows() -> list[dict[str, Any]]:
    return [exports.training_row(BASE, run) for run in TRAINING_RUNS]


def test_training_rows_fill_the_declared_columns():
    part = arrow_tables.batch(exports.TRAINING, training_rows())
    assert part.schema == exports.TRAINING and part.num_rows == 3
    rows = part.to_pylist()
    assert rows[0]["run_id"] == "r0" and rows[0]["final_epoch"] == 900
    assert rows[1]["final_reg_loss"] == 2.0 and rows[1]["final_gap"] is None  # int 2 as a double
    assert rows[2]["status"] == "queued" and rows[2]["final_mse"] is None
    assert rows[2]["weight_decay"] == 0.001 and rows[2]["lr"] is None  # the spec has no lr
    assert rows[0]["dataset_n"] == 4 and rows[0]["dataset_perturbation"] == 0.001
    assert rows[0]["tags"] == ["t"] and rows[0]["experiment_status"] == "running"


def test_batches_refuse_values_that_do_not_fit_their_column():
    for bad in ({"final_epoch": 9.5}, {"final_mse": "0.1"}, {"final_strict": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            arrow_tables.batch(exports.TRAINING, [{**training_rows()[0], **bad}])
    assert (
        arrow_tables.batch(exports.TRAINING, [{"final_epoch": 9.0}])
        .column("final_epoch")[0]
        .as_py()
        == 9
    )


def test_csv_parses_back_to_the_rows():
    part = arrow_tables.batch(exports.TRAINING, training_rows())
    sink = io.BytesIO()
    arrow_tables.write_csv(exports.TRAINING, [part], sink)
    back = list(csv.DictReader(io.StringIO(sink.getvalue().decode())))
    assert list(back[0]) == exports.TRAINING.names and len(back) == 3
    assert back[0]["final_grad_norm_sq"] == "1e-17" and float(back[0]["final_gap"]) == 1e-9
    assert back[1]["final_gap"] == "" and back[2]["verdict"] == "" and back[2]["final_mse"] == ""
    assert [r["run_id"] for r in back] == ["r0", "r1", "r2"] and back[0]["tags"] == '["t"]'
    empty = io.BytesIO()
    arrow_tables.write_csv(exports.TRAINING, [], empty)
    assert empty.getvalue().decode() == ",".join(exports.TRAINING.names) + "\n"


def test_parquet_reads_back_with_the_declared_types():
    part = arrow_tables.batch(exports.TRAINING, training_rows())
    sink = io.BytesIO()
    arrow_tables.write_parquet(exports.TRAINING, [part], sink)
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.schema == exports.TRAINING and table.to_pylist() == part.to_pylist()
    empty = io.BytesIO()
    arrow_tables.write_parquet(exports.TRAINING, [], empty)
    assert pq.read_table(io.BytesIO(empty.getvalue())).schema == exports.TRAINING


# --- endpoints -------------------------------------------------------------------------


@pytest.fixture
def api(
    pg_engine: Engine, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, Session]]:
    """A test client and a session on one connection, rolled back at the end."""
    from service.app import create_app
    from service.db import Database, database

    use_settings(monkeypatch, DATABASE_URL=PG_URL, BROKER_URL=BROKER, API_TOKENS="")
    conn = pg_engine.connect()
    outer = conn.begin()
    mode = {"join_transaction_mode": "create_savepoint", "expire_on_commit": False}

    def session() -> Session:
        return Session(bind=conn, **mode)  # type: ignore[arg-type]

    async def rolled_back() -> Database:
        return Database(session, concurrency=1)

    app = create_app()
    app.dependency_overrides[database] = rolled_back
    with TestClient(app) as client, Session(bind=conn, **mode) as db:  # type: ignore[arg-type]
        yield client, db
    outer.rollback()
    conn.close()


def add_experiment(
    db: Session, spec: dict[str, Any], result: dict[str, Any] | None, runs: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    status = "succeeded" if result is not None else "running"
    exp = Experiment(id=new_id(), kind=spec["kind"], status=status, spec=spec, result=result,
                     spec_hash="0" * 64, progress_total=len(runs))  # fmt: skip
    db.add(exp)
    ids = []
    for index, fields in enumerate(runs):
        ids.append(new_id())
        db.add(Run(id=ids[-1], experiment_id=exp.id, index=index, **fields))
    db.flush()
    return exp.id, ids


def add_training(db: Session, *, done: bool = True) -> tuple[str, list[str]]:
    result, grid = training_grid()
    runs = [
        {"params": p, "status": "succeeded", "verdict": v, "curve": encode_curve(c),
         "final": {"epoch": int(c["epoch"][-1]), "gap": float(c["gap"][-1])}}
        for p, v, c in grid
    ]  # fmt: skip
    runs.append({"params": {"width": 50, "init_scale": 1.0, "seed": 9}, "status": "queued"})
    return add_experiment(db, TRAINING_SPEC, result if done else None, runs)


def test_curve_as_json_columns_exact_and_downsampled(api):
    client, db = api
    exp_id, run_ids = add_training(db)
    want = decode_curve(db.get(Run, run_ids[0]).curve)
    body = client.get(f"/v1/experiments/{exp_id}/runs/{run_ids[0]}/curve").json()
    assert list(body) == list(FIELDS)
    assert body["epoch"] == want["epoch"].tolist() and body["gap"] == want["gap"].tolist()
    assert body["num_neurons"] == want["num_neurons"].tolist()
    url = f"/v1/experiments/{exp_id}/runs/{run_ids[0]}/curve"
    small = client.get(url, params={"max_points": 12}).json()
    assert 2 <= len(small["epoch"]) <= 12 and len(small["mse"]) == len(small["epoch"])
    assert small["epoch"][0] == 0 and small["epoch"][-1] == want["epoch"][-1]
    assert_problem(client.get(url, params={"max_points": 1}), 422, "max_points")
    assert_problem(client.get(url, params={"format": "xml"}), 422, "format")


def test_curve_as_csv_and_non_finite_values(api):
    client, db = api
    cols = curve(0)
    cols["mse"][-1] = math.inf
    exp_id, (run_id,) = add_experiment(
        db, TRAINING_SPEC, None, [{"params": {}, "status": "running", "curve": encode_curve(cols)}]
    )
    url = f"/v1/experiments/{exp_id}/runs/{run_id}/curve"
    assert client.get(url).json()["mse"][-1] is None
    resp = client.get(url, params={"format": "csv", "max_points": 5})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert rows[0] == list(FIELDS) and 2 <= len(rows) - 1 <= 5
    assert int(rows[1][0]) == 0 and float(rows[1][4]) == cols["gap"][0]
    assert rows[-1][1] == "inf"


def test_curve_404s_say_why(api):
    client, db = api
    exp_id, run_ids = add_training(db)
    assert_problem(client.get(f"/v1/experiments/{exp_id}/runs/nope/curve"), 404, "no run nope")
    no_curve = client.get(f"/v1/experiments/{exp_id}/runs/{run_ids[-1]}/curve")
    assert_problem(no_curve, 404, "no curve yet", "queued")
    assert_problem(client.get(f"/v1/experiments/nope/runs/{run_ids[0]}/curve"), 404, "nope")
    other, _ = add_training(db)
    assert_problem(client.get(f"/v1/experiments/{other}/runs/{run_ids[0]}/curve"), 404, "no run")


def test_figures_of_census_and_training(api):
    client, db = api
    census, _ = add_experiment(db, CENSUS_SPEC, CENSUS_RESULT, [])
    training, _ = add_training(db)
    for exp_id, shape in ((census, (720, 1125)), (training, (750, 1800))):
        svg = client.get(f"/v1/experiments/{exp_id}/figure.svg")
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert_svg(svg.content)
        png = client.get(f"/v1/experiments/{exp_id}/figure.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert_png(png.content, shape)


def test_figure_problems(api):
    client, db = api
    running, _ = add_training(db, done=False)
    assert_problem(client.get(f"/v1/experiments/{running}/figure.svg"), 409, "is running")
    optimum = {"kind": "optimum", "dataset": CENSUS_SPEC["dataset"], "weight_decay": 0.01}
    opt_id, _ = add_experiment(db, optimum, {"optimum": 0.13}, [])
    assert_problem(client.get(f"/v1/experiments/{opt_id}/figure.png"), 404, "optimum")
    assert_problem(client.get("/v1/experiments/nope/figure.svg"), 404, "nope")


def test_exports_one_row_per_run(api):
    client, db = api
    exp_id, run_ids = add_training(db)
    resp = client.get(f"/v1/experiments/{exp_id}/export.csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["content-disposition"] == f'attachment; filename="{exp_id}.csv"'
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [r["run_id"] for r in rows] == run_ids and rows[-1]["status"] == "queued"
    assert rows[0]["init_scale"] == "0.001" and rows[0]["final_epoch"] == "5000"
    assert {r["experiment_id"] for r in rows} == {exp_id}
    resp = client.get(f"/v1/experiments/{exp_id}/export.parquet")
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    assert resp.headers["content-disposition"] == f'attachment; filename="{exp_id}.parquet"'
    table = pq.read_table(io.BytesIO(resp.content)).to_pylist()
    assert [r["run_id"] for r in table] == run_ids and table[-1]["final_gap"] is None
    assert table[0]["final_gap"] == float(rows[0]["final_gap"])


def test_census_width_rows_are_their_own_table(api):
    client, db = api
    runs = [{"params": {"width": r["width"]}, "status": "succeeded"} for r in CENSUS_RESULT["rows"]]
    exp_id, _ = add_experiment(db, CENSUS_SPEC, CENSUS_RESULT, runs)
    widths = client.get(f"/v1/experiments/{exp_id}/widths.csv")
    assert widths.headers["content-disposition"] == f'attachment; filename="{exp_id}-widths.csv"'
    rows = list(csv.DictReader(io.StringIO(widths.text)))
    assert [int(r["width"]) for r in rows] == [10, 40, 160, 640]
    assert [float(r["p_global"]) for r in rows] == [0.0, 0.1, 0.6, 1.0]
    assert rows[0]["samples"] == "20" and rows[0]["pooled"] == "true"
    assert rows[0]["data_seed"] == "0" and float(rows[0]["optimum"]) == 0.1304
    cones = list(
        csv.DictReader(io.StringIO(client.get(f"/v1/experiments/{exp_id}/export.csv").text))
    )
    assert cones == []  # a row per cone, and this census stored none
    assert_problem(client.get("/v1/experiments/nope/export.csv"), 404, "nope")
    assert_problem(client.get("/v1/experiments/nope/widths.csv"), 404, "nope")
