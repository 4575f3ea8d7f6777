"""The jobs of a swept experiment, in process (workers.jobs, on specs as the API stores them).

- an optimum item solves its payload's (data seed, weight decay) and names them;
- a census chunk certifies its data seed's realisation, with sample indices that run on
  across realisations and the data seed in each cone's detail; the first realisation of
  data_seeds [dataset.seed] is the census without data_seeds, cone for cone;
- a training batch trains its cell's λ and lr against that cell's optimum;
- the roll-up pools census realisations per width (with a per-seed breakdown), groups
  training runs per swept cell, and lists the optima.
"""

from __future__ import annotations

from typing import Any

from service.config import Settings
from service.models import Run
from service.plans import plan
from service.specs import spec_adapter, training_grid
from tests.workers.test_cone_analysis_jobs import FakeContext, filled
from workers import jobs
from workers.landscape.census.records import wilson_interval

ONE_POINT = {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]}
TEACHER = {"generator": "teacher", "n": 4, "d": 3, "teacher_width": 2, "seed": 5}


def one_point_optimum(lam: float) -> float:
    """SCIENCE.md section 8: (t ||x|| - y)^2 + 2 λ t, t = max(0, (y ||x|| - λ) / ||x||^2)."""
    norm, y = 1.0, 1.5
    t = max(0.0, (y * norm - lam) / norm**2)
    return (t * norm - y) ** 2 + 2 * lam * t


def items(spec: dict[str, Any]) -> list[dict[str, Any]]:
    settings = Settings(database_url="sqlite:///unused.db")
    return plan(spec_adapter.validate_python(spec), settings).items


def optima(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        jobs.optimum_job(FakeContext(spec, item["payload"])).output
        for item in items(spec)
        if item["task"] == "optimum"
    ]


def test_optimum_items_solve_their_own_weight_decay():
    spec = filled(
        {
            "kind": "training",
            "dataset": ONE_POINT,
            "weight_decay": [0.1, 0.2],
            "widths": [2],
            "init_scales": [1.0],
            "max_epochs": 10,
        }
    )
    found = optima(spec)
    assert [o["weight_decay"] for o in found] == [0.1, 0.2]
    assert "data_seed" not in found[0]
    assert abs(found[0]["optimum"] - 0.29) < 1e-9
    assert abs(found[1]["optimum"] - one_point_optimum(0.2)) < 1e-9
    assert abs(one_point_optimum(0.2) - 0.56) < 1e-12


def census_spec(**extra: Any) -> dict[str, Any]:
    body = {
        "kind": "census",
        "dataset": TEACHER,
        "weight_decay": 0.02,
        "widths": [1, 6],
        "samples_per_width": 8,
        "sampling": "random_vector",
    }
    return filled({**body, **extra})


def run_census(spec: dict[str, Any]) -> tuple[dict[int, list[dict[str, Any]]], list[jobs.Outcome]]:
    opts = optima(spec)
    chunks = [
        jobs.census_chunk_job(FakeContext(spec, item["payload"], outputs={0: opts}))
        for item in items(spec)
        if item["task"] == "census_chunk"
    ]
    return {0: opts, 1: [c.output for c in chunks]}, chunks


def test_census_realisations_are_certified_and_pooled():
    spec = census_spec(data_seeds=[5, 11])
    outputs, chunks = run_census(spec)
    assert [o["data_seed"] for o in outputs[0]] == [5, 11]
    assert outputs[0][0]["optimum"] != outputs[0][1]["optimum"]  # two datasets
    cones = [c for chunk in chunks for c in chunk.cones]
    keys = {(c["width"], c["sample"]) for c in cones}
    assert keys == {(w, j) for w in (1, 6) for j in range(16)}  # unique across realisations
    for cone in cones:
        assert cone["detail"]["data_seed"] == (5 if cone["sample"] < 8 else 11)

    # realisation 0 with data seed = dataset.seed is the census without data_seeds
    _, plain = run_census(census_spec())
    first = sorted(
        (c["width"], c["sample"], c["verdict"], c["value"]) for c in cones if c["sample"] < 8
    )
    assert first == sorted(
        (c["width"], c["sample"], c["verdict"], c["value"]) for ch in plain for c in ch.cones
    )
    assert all("data_seed" not in c["detail"] for ch in plain for c in ch.cones)

    result = jobs.finalize("census", spec, outputs, []).output
    assert result["optimum"] == outputs[0][0]["optimum"]
    assert [o["data_seed"] for o in result["optima"]] == [5, 11]
    for row in result["rows"]:
        assert row["samples"] == 16
        mine = [c for c in cones if c["width"] == row["width"]]
        wins = sum(c["verdict"] == "global" for c in mine)
        assert row["p_global"] == wins / 16 and row["p_global_ci"] == wilson_interval(wins, 16)
        parts = row["by_data_seed"]
        assert [p["data_seed"] for p in parts] == [5, 11]
        assert [p["optimum"] for p in parts] == [o["optimum"] for o in outputs[0]]
        for p in parts:
            own = [c for c in mine if c["detail"]["data_seed"] == p["data_seed"]]
            assert p["samples"] == 8
            assert p["p_global"] == sum(c["verdict"] == "global" for c in own) / 8
            assert "p_global_ci" in p
        assert sum(p["p_global"] for p in parts) / 2 == row["p_global"]


def test_a_census_without_data_seeds_keeps_its_result_shape():
    spec = census_spec(widths=[2], samples_per_width=4)
    outputs, _ = run_census(spec)
    result = jobs.finalize("census", spec, outputs, []).output
    assert "optima" not in result and "by_data_seed" not in result["rows"][0]


def test_training_batches_train_their_cell_and_groups_follow_it():
    spec = filled(
        {
            "kind": "training",
            "dataset": ONE_POINT,
            "weight_decay": [0.1, 0.2],
            "widths": [3],
            "init_scales": [0.01, 1.0],
            "seeds": 2,
            "optimizer": {"name": "gd", "lr": [0.01, 0.05]},
            "max_epochs": 200_000,
            "device": "cpu",
        }
    )
    opts = optima(spec)
    batches = [i["payload"] for i in items(spec) if i["task"] == "training_batch"]
    assert len(batches) == 4  # one per (λ, lr) cell
    grid = training_grid(spec)
    runs = []
    for payload in batches:
        out = jobs.training_job(FakeContext(spec, payload, outputs={0: opts}))
        for update in out.runs:
            params = grid[update["index"]]
            lam = params["weight_decay"]
            assert abs(update["final"]["reg_loss"] - one_point_optimum(lam)) < 1e-6, params
            runs.append(Run(index=update["index"], params=params, verdict=update["verdict"]))
            runs[-1].final = update["final"]
    assert all(r.verdict == "global_minimum" for r in runs), [r.final for r in runs]
    result = jobs.finalize("training", spec, {0: opts}, runs).output
    assert result["optimum"] == opts[0]["optimum"]
    assert [(o["weight_decay"], round(o["optimum"], 9)) for o in result["optima"]] == [
        (0.1, 0.29),
        (0.2, 0.56),
    ]
    cells = [(g["weight_decay"], g["lr"], g["init_scale"]) for g in result["groups"]]
    assert cells == [(lam, lr, a) for lam in (0.1, 0.2) for lr in (0.01, 0.05) for a in (0.01, 1.0)]
    assert all(g["runs"] == 2 and g["p_global"] == 1.0 for g in result["groups"])
    assert all("data_seed" not in g for g in result["groups"])


def test_groups_without_sweeps_keep_their_shape():
    spec = {
        "widths": [3],
        "init_scales": [0.1],
        "seeds": 1,
        "weight_decay": 0.1,
        "optimizer": {"lr": 0.01},
    }
    runs = [Run(index=0, params={"width": 3, "init_scale": 0.1, "seed": 0}, verdict="diverged")]
    (group,) = jobs.training_groups_of(spec, jobs.tally_runs(spec, runs))
    assert set(group) >= {"width", "init_scale", "runs", "p_diverged"}
    assert not set(group) & {"data_seed", "weight_decay", "lr"}
    assert group["p_diverged"] == 1.0


def test_groups_split_by_data_seed():
    spec = {
        "widths": [3],
        "init_scales": [0.1],
        "seeds": 2,
        "weight_decay": 0.1,
        "optimizer": {"lr": 0.01},
        "data_seeds": [7, 2],
    }
    verdicts = {7: "global_minimum", 2: "spurious_local_minimum"}
    runs = [
        Run(index=i, params=p, verdict=verdicts[p["data_seed"]], final={})
        for i, p in enumerate(training_grid(spec))
    ]
    seven, two = jobs.training_groups_of(spec, jobs.tally_runs(spec, runs))
    assert (seven["data_seed"], seven["p_global"], seven["runs"]) == (7, 1.0, 2)
    assert (two["data_seed"], two["p_spurious"], two["runs"]) == (2, 1.0, 2)
