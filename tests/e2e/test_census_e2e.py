"""A census through the API with real workers: progress, rows, cones, verdicts."""

from __future__ import annotations

from tests.e2e.conftest import wait_for

SPEC = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 4, "d": 8, "seed": 0},
    "weight_decay": 0.01,
    "widths": [2, 8, 160],
    "samples_per_width": 12,
}


def test_census_end_to_end(api, start_worker):
    start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    assert exp["progress"] == {"done": 0, "total": 36, "unit": "cones"}
    done = wait_for(api, exp["id"], timeout=240)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": 36, "total": 36, "unit": "cones"}
    res = done["result"]
    assert res["num_signed_cones"] == 32 and res["theory_bound"] == 16
    rows = {r["width"]: r for r in res["rows"]}
    assert [r["width"] for r in res["rows"]] == [2, 8, 160]
    for row in rows.values():
        assert row["samples"] == 12
        total = row["p_global"] + row["p_spurious"] + row["p_no_local_min"]
        assert abs(total - 1) < 1e-12
    assert rows[2]["p_global"] <= 0.25 and rows[160]["p_global"] >= 0.95
    assert rows[2]["p_covered"] < rows[160]["p_covered"] <= 1.0
    runs = api.get(f"/v1/experiments/{exp['id']}/runs").json()["items"]
    assert [r["params"]["width"] for r in runs] == [2, 8, 160]
    assert runs[2]["final"]["p_global"] == rows[160]["p_global"]

    page = api.get(f"/v1/experiments/{exp['id']}/cones", params={"width": 2, "limit": 5}).json()
    assert len(page["items"]) == 5 and page["next_cursor"]
    rest = api.get(
        f"/v1/experiments/{exp['id']}/cones",
        params={"width": 2, "limit": 100, "cursor": page["next_cursor"]},
    ).json()
    cones = page["items"] + rest["items"]
    assert [c["sample"] for c in cones] == list(range(12))
    for cone in cones:
        assert len(cone["patterns"]) == len(cone["signs"]) <= 2
        assert all(len(p) == 4 for p in cone["patterns"])
        assert cone["value"] >= res["optimum"] - 1e-7
        if cone["verdict"] != "global":  # judged on the exact minimiser
            assert cone["method"] == "solved" and cone["polished"], cone
            assert cone["stationarity_residual"] is not None
    assert any(c["verdict"] != "global" for c in cones)
    every = api.get(f"/v1/experiments/{exp['id']}/cones", params={"limit": 1000}).json()["items"]
    spurious = [c for c in every if c["verdict"] == "spurious"]
    for cone in every:  # saddles told from minima on the spurious cones only
        assert (cone["birth_margin"] is not None) == (cone["verdict"] == "spurious"), cone
        assert (cone["strict"] is not None) == (cone["verdict"] == "spurious"), cone
    strict = sum(1 for c in spurious if c["strict"])
    assert strict == round(sum(r["p_spurious_strict"] * 12 for r in res["rows"]))
    global_cones = api.get(
        f"/v1/experiments/{exp['id']}/cones", params={"verdict": "global", "limit": 1000}
    ).json()["items"]
    assert len(global_cones) == round(sum(r["p_global"] * 12 for r in res["rows"]))

    fig = api.get(f"/v1/experiments/{exp['id']}/figure.png")
    assert fig.status_code == 200 and fig.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = api.get(f"/v1/experiments/{exp['id']}/figure.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    export = api.get(f"/v1/experiments/{exp['id']}/export.csv")  # a row per cone
    header, *lines = export.text.strip().splitlines()
    assert "verdict" in header.split(",") and len(lines) == 36
    widths = api.get(f"/v1/experiments/{exp['id']}/widths.csv")  # a row per width
    header, *lines = widths.text.strip().splitlines()
    assert "p_global" in header.split(",") and len(lines) == 3
