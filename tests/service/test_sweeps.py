"""Issue 10's sweeps in one experiment: data_seeds, and lists of weight_decay and lr.

Through POST /v1/experiments for what is accepted and refused, and through the plan for
the work items: one optimum per (data seed, weight decay), chunks and batches that each
stay within one (data seed, weight decay, lr) cell, and limits that count the whole grid.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from service.config import Settings
from service.plans import SpecRejected, plan
from service.specs import spec_adapter, training_grid
from tests.service.test_api import assert_problem, broker, make_client  # noqa: F401 - fixture

TEACHER = {"generator": "teacher", "n": 4, "d": 3, "seed": 7}
ONE_POINT = {"generator": "custom", "X": [[0.6, 0.8, 0.0]], "y": [1.5]}
CENSUS = {
    "kind": "census",
    "dataset": TEACHER,
    "weight_decay": 0.01,
    "widths": [2, 40],
    "samples_per_width": 6,
}
TRAINING = {
    "kind": "training",
    "dataset": TEACHER,
    "weight_decay": 0.1,
    "widths": [3, 5],
    "init_scales": [0.1, 1.0],
    "seeds": 3,
    "optimizer": {"name": "gd", "lr": 0.05},
    "max_epochs": 100,
    "device": "cpu",
}


@pytest.fixture
def client(pg_engine, broker: redis.Redis, monkeypatch) -> Iterator[TestClient]:  # noqa: F811
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")


def settings(**values: int) -> Settings:
    return Settings(database_url="sqlite:///unused.db", **values)


def planned(body: dict, **limits: int):
    return plan(spec_adapter.validate_python(body), settings(**limits))


# --- the API: accepted and refused -----------------------------------------------------


def test_lists_are_accepted_and_stored(client: TestClient) -> None:
    body = {
        **TRAINING,
        "data_seeds": [0, 5],
        "weight_decay": [0.1, 0.2],
        "optimizer": {"name": "gd", "lr": [0.01, 0.05, 0.1]},
    }
    resp = client.post("/v1/experiments", json=body)
    assert resp.status_code == 202, resp.text
    exp = resp.json()
    assert exp["spec"]["data_seeds"] == [0, 5] and exp["spec"]["weight_decay"] == [0.1, 0.2]
    assert exp["spec"]["optimizer"]["lr"] == [0.01, 0.05, 0.1]
    assert exp["progress"]["total"] == 2 * 2 * 3 * (2 * 2 * 3) * TRAINING["max_epochs"]
    runs = client.get(f"/v1/experiments/{exp['id']}/runs", params={"limit": 2}).json()["items"]
    assert runs[0]["params"] == {
        "width": 3,
        "init_scale": 0.1,
        "seed": 0,
        "data_seed": 0,
        "weight_decay": 0.1,
        "lr": 0.01,
    }
    census = client.post("/v1/experiments", json={**CENSUS, "data_seeds": [3, 1]})
    assert census.status_code == 202, census.text
    assert census.json()["progress"]["total"] == 2 * 2 * 6


def test_without_lists_the_spec_and_runs_keep_their_shape(client: TestClient) -> None:
    exp = client.post("/v1/experiments", json=TRAINING).json()
    assert exp["spec"]["data_seeds"] is None and exp["spec"]["weight_decay"] == 0.1
    runs = client.get(f"/v1/experiments/{exp['id']}/runs", params={"limit": 1}).json()["items"]
    assert runs[0]["params"] == {"width": 3, "init_scale": 0.1, "seed": 0}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({**TRAINING, "dataset": ONE_POINT, "data_seeds": [0, 1]}, "data_seeds", "no seed"),
        ({**CENSUS, "dataset": ONE_POINT, "data_seeds": [0]}, "data_seeds", "no seed"),
        ({**CENSUS, "data_seeds": []}, "data_seeds", "at least 1"),
        ({**CENSUS, "data_seeds": [1, 1]}, "data_seeds", "distinct"),
        ({**CENSUS, "data_seeds": [-1]}, "data_seeds", "greater than or equal to 0"),
        ({**CENSUS, "data_seeds": list(range(101))}, "data_seeds", "at most 100"),
        ({**CENSUS, "weight_decay": [0.1, 0.2]}, "weight_decay", "valid number"),
        ({**TRAINING, "weight_decay": []}, "weight_decay", "at least 1"),
        ({**TRAINING, "weight_decay": [0.1, -0.2]}, "weight_decay", "greater than 0"),
        ({**TRAINING, "weight_decay": [0.1, 0.1]}, "weight_decay", "distinct"),
        ({**TRAINING, "weight_decay": [0.01 * k for k in range(1, 22)]}, "weight_decay", "20"),
        ({**TRAINING, "optimizer": {"lr": [0.1, 0]}}, "lr", "greater than 0"),
        ({**TRAINING, "optimizer": {"lr": []}}, "lr", "at least 1"),
        ({**TRAINING, "optimizer": {"lr": [0.1, 0.1]}}, "lr", "distinct"),
        (
            {
                **TRAINING,
                "dataset": {"generator": "theorem2", "d": 4, "rng": "paper"},
                "data_seeds": [1, 2**32],
            },
            "data_seeds",
            "below 2**32",
        ),
    ],
)
def test_bad_lists_get_422_naming_the_field(
    client: TestClient, body: dict, field: str, reason: str
) -> None:
    problem = assert_problem(client.post("/v1/experiments", json=body), 422, reason)
    assert any(field in e["loc"] for e in problem["errors"]), problem


def test_a_too_small_weight_decay_in_a_list_is_named_by_its_index(client: TestClient) -> None:
    body = {**TRAINING, "weight_decay": [0.1, 1e-300]}
    problem = assert_problem(client.post("/v1/experiments", json=body), 422, "too small")
    assert problem["errors"][0]["loc"] == ["body", "weight_decay", 1], problem


def test_limits_count_the_whole_grid(client: TestClient) -> None:
    body = {**TRAINING, "seeds": 1000, "weight_decay": [0.1, 0.2], "data_seeds": [0, 1, 2, 3, 4]}
    # 2 widths x 2 scales x 1000 seeds = 4000 runs alone; x 10 cells = 40000 > MAX_RUNS 16384
    problem = assert_problem(client.post("/v1/experiments", json=body), 422, "40000 runs", "cells")
    assert problem["errors"][0]["loc"] == ["body", "seeds"]
    census = {**CENSUS, "samples_per_width": 60_000, "data_seeds": [0, 1]}
    problem = assert_problem(client.post("/v1/experiments", json=census), 422, "240000 cones")
    assert "2 data seeds" in problem["detail"]


# --- the plan --------------------------------------------------------------------------


def test_training_plan_has_one_optimum_per_data_seed_and_weight_decay() -> None:
    body = {
        **TRAINING,
        "data_seeds": [4, 9],
        "weight_decay": [0.1, 0.2, 0.3],
        "optimizer": {"lr": [0.01, 0.05]},
    }
    p = planned(body)
    optima = [i for i in p.items if i["task"] == "optimum"]
    assert [i["payload"] for i in optima] == [
        {"data_seed": s, "weight_decay": lam} for s in (4, 9) for lam in (0.1, 0.2, 0.3)
    ]
    assert all(i["stage"] == 0 for i in optima)
    assert len(p.runs) == 2 * 3 * 2 * 12
    assert p.runs == training_grid(spec_adapter.validate_python(body).model_dump(mode="json"))


def test_training_batches_stay_within_one_cell() -> None:
    body = {**TRAINING, "data_seeds": [0, 1], "weight_decay": [0.1, 0.2], "seeds": 5}
    # 20 runs per cell in batches of at most 8: 8 + 8 + 4 per cell, never across cells
    p = planned(body, training_batch_runs=8)
    batches = [i["payload"]["runs"] for i in p.items if i["task"] == "training_batch"]
    assert [b - a for a, b in batches] == [8, 8, 4] * 4
    assert sum(b - a for a, b in batches) == len(p.runs) == 80
    for a, b in batches:
        cells = {(r["data_seed"], r["weight_decay"]) for r in p.runs[a:b]}
        assert len(cells) == 1, (a, b, cells)
    assert sum(i["progress_total"] for i in p.items) == 80 * TRAINING["max_epochs"]  # epochs


def test_a_plan_without_lists_is_as_before() -> None:
    p = planned(TRAINING, training_batch_runs=5)
    assert p.items[0]["task"] == "optimum" and p.items[0]["payload"] == {}
    assert [i["payload"]["runs"] for i in p.items[1:]] == [[0, 5], [5, 10], [10, 12]]
    assert p.runs[:2] == [
        {"width": 3, "init_scale": 0.1, "seed": 0},
        {"width": 3, "init_scale": 0.1, "seed": 1},
    ]
    census = planned(CENSUS)
    assert census.items[0]["payload"] == {}
    assert all("data_seed" not in i["payload"] for i in census.items)
    assert census.runs == [{"width": 2, "samples": 6}, {"width": 40, "samples": 6}]


def test_census_chunks_number_samples_across_realisations() -> None:
    p = planned({**CENSUS, "data_seeds": [3, 1, 8]})
    optima = [i["payload"] for i in p.items if i["task"] == "optimum"]
    assert optima == [{"data_seed": 3}, {"data_seed": 1}, {"data_seed": 8}]
    chunks = [i["payload"] for i in p.items if i["task"] == "census_chunk"]
    for r, seed in enumerate((3, 1, 8)):
        for width in (2, 40):
            mine = [c for c in chunks if c["data_seed"] == seed and c["width"] == width]
            covered = sorted(j for c in mine for j in range(c["start"], c["stop"]))
            assert covered == list(range(6 * r, 6 * r + 6))
    assert p.runs == [{"width": 2, "samples": 18}, {"width": 40, "samples": 18}]


def test_item_count_counts_each_cell() -> None:
    body = {**TRAINING, "weight_decay": [0.1, 0.2, 0.3], "data_seeds": [0, 1]}
    # 6 optima + 6 cells x 12 runs in batches of 5 (3 each) = 24 items
    assert len(planned(body, training_batch_runs=5).items) == 24
    with pytest.raises(SpecRejected) as info:
        planned(body, training_batch_runs=5, max_items_per_experiment=23)
    assert "24 work items" in info.value.msg and "6 (data seed, weight_decay, lr) cells" in (
        info.value.msg
    )
    census = {**CENSUS, "data_seeds": [0, 1]}
    assert len(planned(census).items) == 2 * (1 + 2 + 2)
    with pytest.raises(SpecRejected, match="10 work items"):
        planned(census, max_items_per_experiment=9)


def test_exports_have_the_same_columns_swept_or_not() -> None:
    """Each run's row has its own weight decay and lr, from its params when swept and from
    the spec otherwise; the columns do not depend on the spec."""
    from service import arrow_tables, exports
    from service.models import Run

    swept = {**TRAINING, "weight_decay": [0.1, 0.2], "optimizer": {"lr": [0.01, 0.05]}}
    for body, cells in ((swept, 4), (TRAINING, 1)):
        params = planned(body).runs
        runs = [Run(id=str(i), index=i, params=p, status="done") for i, p in enumerate(params)]
        base = exports.experiment_columns(
            body, experiment_id="e", name=None, tags=[], status="queued"
        )
        part = arrow_tables.batch(exports.TRAINING, [exports.training_row(base, r) for r in runs])
        assert part.schema == exports.TRAINING
        got = {(r["weight_decay"], r["lr"]) for r in part.to_pylist()}
        assert len(got) == cells and None not in {v for pair in got for v in pair}
