"""A training sweep through the API with real workers: runs, verdicts, groups."""

from __future__ import annotations

from tests.e2e.conftest import wait_for

# SCIENCE.md section 8: one point x = (0.6, 0.8, 0), y = 1.5, weight decay 0.1 -> optimum 0.29.
SPEC = {
    "kind": "training",
    "dataset": {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]},
    "weight_decay": 0.1,
    "widths": [3, 10],
    "init_scales": [0.01, 1.0],
    "seeds": 2,
    "optimizer": {"name": "gd", "lr": 0.05},
    "max_epochs": 200000,
    "device": "cpu",
}


def test_training_end_to_end(api, start_worker):
    start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    assert exp["progress"] == {"done": 0, "total": 8 * SPEC["max_epochs"], "unit": "epochs"}
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    assert abs(done["result"]["optimum"] - 0.29) < 1e-7
    groups = done["result"]["groups"]
    assert len(groups) == 4 and all(g["runs"] == 2 for g in groups)
    assert all(g["p_global"] == 1.0 for g in groups), groups
    runs = api.get(f"/v1/experiments/{exp['id']}/runs", params={"limit": 3}).json()
    assert len(runs["items"]) == 3 and runs["next_cursor"]
    first = runs["items"][0]
    assert first["params"] == {"width": 3, "init_scale": 0.01, "seed": 0}
    assert first["verdict"] == "global_minimum"
    assert abs(first["final"]["gap"]) <= 1e-7 and first["final"]["grad_norm_sq"] < 1e-16
    filtered = api.get(
        f"/v1/experiments/{exp['id']}/runs", params={"verdict": "global_minimum"}
    ).json()
    assert len(filtered["items"]) == 8
    none = api.get(f"/v1/experiments/{exp['id']}/runs", params={"verdict": "diverged"}).json()
    assert none["items"] == []

    curve = api.get(f"/v1/experiments/{exp['id']}/runs/{first['id']}/curve").json()
    assert curve["epoch"][0] == 0 and curve["epoch"][-1] == first["final"]["epoch"]
    assert set(curve) == {  # the columns of shared/API.md, spelled out independently
        "epoch",
        "mse",
        "reg_loss",
        "grad_norm_sq",
        "gap",
        "param_norm_sq",
        "effective_rank",
        "num_neurons",
    }
    assert len({len(column) for column in curve.values()}) == 1
    short = api.get(
        f"/v1/experiments/{exp['id']}/runs/{first['id']}/curve", params={"max_points": 5}
    ).json()
    assert len(short["epoch"]) <= 5 and short["epoch"][-1] == curve["epoch"][-1]
    csv = api.get(f"/v1/experiments/{exp['id']}/runs/{first['id']}/curve", params={"format": "csv"})
    assert csv.text.splitlines()[0].startswith("epoch,")
    assert api.get(f"/v1/experiments/{exp['id']}/figure.png").content[:4] == b"\x89PNG"
    parquet = api.get(f"/v1/experiments/{exp['id']}/export.parquet")
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == 8 and "verdict" in table.column_names


def test_runs_report_step_size_collapse_and_after_training_measures(api, start_worker):
    """Through real workers: every run's final has its stop reason, sharpness at
    initialisation and norm ratio, teacher runs a held-out MSE; theorem2 runs at lr 0.05
    from alpha = 1 collapse to the zero network within a few epochs and say so."""
    start_worker()
    teacher = {
        "kind": "training",
        "dataset": {"generator": "teacher", "n": 5, "d": 3, "teacher_width": 2, "seed": 1},
        "weight_decay": 0.05,
        "widths": [20],
        "init_scales": [0.5],
        "seeds": 2,
        "optimizer": {"name": "gd", "lr": 0.05},
        "max_epochs": 5000,
        "test_points": 200,
        "device": "cpu",
    }
    collapse = {
        "kind": "training",
        "dataset": {"generator": "theorem2", "d": 4},
        "weight_decay": 1e-4,
        "widths": [100],
        "init_scales": [1.0],
        "seeds": 2,
        "optimizer": {"name": "gd", "lr": 0.05},
        "max_epochs": 1_000_000,
        "device": "cpu",
    }
    ids = [api.post("/v1/experiments", json=s).json()["id"] for s in (teacher, collapse)]
    for eid in ids:
        assert wait_for(api, eid, timeout=240)["status"] == "succeeded"
    runs = api.get(f"/v1/experiments/{ids[0]}/runs").json()["items"]
    for run in runs:
        final = run["final"]
        assert final["stop"] in ("converged", "not_converged")
        assert final["sharpness_init"] > 0 and final["norm_ratio"] > 0
        assert final["test_mse"] is not None and final["test_mse"] >= 0
    verdicts = api.get(f"/v1/experiments/{ids[1]}/runs").json()["items"]
    collapsed = [r for r in verdicts if r["verdict"] == "collapsed"]
    assert collapsed, [(r["verdict"], r["final"]["epoch"]) for r in verdicts]
    for run in collapsed:
        final = run["final"]
        assert final["stop"] == "collapsed" and final["epoch"] < 100
        assert final["projected_verdict"] == "saddle_point" and final["cone_global"] is False
        assert final["lr_warning"] and "exceeds 2/sharpness" in final["lr_warning"]
        assert final["test_mse"] is None  # theorem2 data has no teacher
    group = api.get(f"/v1/experiments/{ids[1]}").json()["result"]["groups"][0]
    assert group["p_collapsed"] == len(collapsed) / 2
