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
    assert exp["progress"]["total"] == 8
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
