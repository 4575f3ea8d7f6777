"""Sweeps in one experiment through the API with real workers: a census over two data
seeds, and a training sweep over weight decays and step sizes (issue 10)."""

from __future__ import annotations

import csv
import io

from tests.e2e.conftest import wait_for

CENSUS = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 4, "d": 8, "seed": 0},
    "weight_decay": 0.01,
    "widths": [2, 160],
    "samples_per_width": 6,
    "data_seeds": [0, 1],
}
# SCIENCE.md section 8: one point x = (0.6, 0.8, 0), y = 1.5; weight decay 0.1 -> optimum 0.29.
TRAINING = {
    "kind": "training",
    "dataset": {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]},
    "weight_decay": [0.1, 0.2],
    "widths": [3],
    "init_scales": [0.01, 1.0],
    "seeds": 2,
    "optimizer": {"name": "gd", "lr": [0.01, 0.05]},
    "max_epochs": 200000,
    "device": "cpu",
}


def one_point_optimum(lam: float) -> float:
    """SCIENCE.md section 8: (t ||x|| - y)^2 + 2 λ t with t = max(0, (y ||x|| - λ) / ||x||^2)."""
    norm = (0.6**2 + 0.8**2) ** 0.5
    t = max(0.0, (1.5 * norm - lam) / norm**2)
    return (t * norm - 1.5) ** 2 + 2 * lam * t


def test_census_over_two_data_seeds(api, start_worker):
    start_worker()
    exp = api.post("/v1/experiments", json=CENSUS).json()
    assert exp["progress"] == {"done": 0, "total": 2 * 2 * 6, "unit": "cones"}
    done = wait_for(api, exp["id"], timeout=240)
    assert done["status"] == "succeeded", done
    res = done["result"]
    optima = res["optima"]
    assert [o["data_seed"] for o in optima] == [0, 1]
    assert optima[0]["optimum"] != optima[1]["optimum"]
    assert res["optimum"] == optima[0]["optimum"]
    for row in res["rows"]:
        assert row["samples"] == 12
        parts = row["by_data_seed"]
        assert [(p["data_seed"], p["samples"]) for p in parts] == [(0, 6), (1, 6)]
        assert abs(sum(p["p_global"] for p in parts) / 2 - row["p_global"]) < 1e-12
        assert [p["optimum"] for p in parts] == [o["optimum"] for o in optima]
    assert res["rows"][1]["p_global"] >= 0.9
    runs = api.get(f"/v1/experiments/{exp['id']}/runs").json()["items"]
    assert [(r["params"]["width"], r["params"]["samples"]) for r in runs] == [(2, 12), (160, 12)]
    cones = api.get(f"/v1/experiments/{exp['id']}/cones", params={"width": 2}).json()["items"]
    assert [c["sample"] for c in cones] == list(range(12))  # seed 0: 0-5, seed 1: 6-11
    # the first realisation is the census of data seed 0 alone, cone for cone
    alone = api.post("/v1/experiments", json={**CENSUS, "data_seeds": None, "widths": [2]}).json()
    alone_done = wait_for(api, alone["id"], timeout=240)
    assert alone_done["result"]["optimum"] == optima[0]["optimum"]
    mine = api.get(f"/v1/experiments/{alone['id']}/cones").json()["items"]
    assert [(c["sample"], c["verdict"], c["value"]) for c in mine] == [
        (c["sample"], c["verdict"], c["value"]) for c in cones[:6]
    ]
    assert api.get(f"/v1/experiments/{exp['id']}/figure.png").content[:4] == b"\x89PNG"


def test_training_sweep_over_weight_decay_and_lr(api, start_worker):
    start_worker()
    exp = api.post("/v1/experiments", json=TRAINING).json()
    assert exp["progress"]["total"] == 2 * 2 * 4 * TRAINING["max_epochs"]
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    res = done["result"]
    assert abs(one_point_optimum(0.2) - 0.56) < 1e-12
    found = {o["weight_decay"]: o["optimum"] for o in res["optima"]}
    assert abs(found[0.1] - 0.29) < 1e-7 and abs(found[0.2] - one_point_optimum(0.2)) < 1e-7
    assert abs(res["optimum"] - 0.29) < 1e-7
    groups = res["groups"]
    assert [(g["weight_decay"], g["lr"], g["init_scale"]) for g in groups] == [
        (lam, lr, a) for lam in (0.1, 0.2) for lr in (0.01, 0.05) for a in (0.01, 1.0)
    ]
    assert all(g["runs"] == 2 and g["p_global"] == 1.0 for g in groups), groups
    runs = api.get(f"/v1/experiments/{exp['id']}/runs", params={"limit": 100}).json()["items"]
    assert len(runs) == 16
    for run in runs:
        assert set(run["params"]) == {"width", "init_scale", "seed", "weight_decay", "lr"}
        lam = run["params"]["weight_decay"]
        assert abs(run["final"]["reg_loss"] - one_point_optimum(lam)) < 1e-7, run
        assert run["verdict"] == "global_minimum"
    export = api.get(f"/v1/experiments/{exp['id']}/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 16 and {"weight_decay", "lr"} <= set(rows[0])
    assert {(r["weight_decay"], r["lr"]) for r in rows} == {
        (repr(lam), repr(lr)) for lam in (0.1, 0.2) for lr in (0.01, 0.05)
    }
