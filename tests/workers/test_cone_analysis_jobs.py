"""The jobs' new verdict fields, in process: a census chunk and a training batch run by the
functions the worker runs (workers.jobs), on specs with every default filled in by the API.

- census cones carry ``birth_margin`` and ``strict`` in their detail, rows ``p_spurious_strict``;
- every run's ``final`` carries ``cone_value``, ``cone_global``, ``projected_verdict``,
  ``birth_margin`` and ``strict``; groups add ``p_cone_global``;
- the same specs with y and λ times 1e3 give the same verdicts, and a stored spec's explicit
  ``tolerance`` keeps its absolute meaning.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.models import Run
from service.specs import spec_adapter
from workers import jobs

X3 = [[1.0, 0.2, -0.3], [0.1, -1.0, 0.5], [-0.4, 0.3, 1.0], [0.8, 0.8, 0.1]]
Y3 = [1.2, -0.3, 0.7, 1.5]


FakeContext = jobs.LocalContext  # stage outputs given up front, nothing stored


def filled(body: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API stores it: validated, with every default filled in."""
    return spec_adapter.validate_python(body).model_dump(mode="json")


def optimum_of(spec: dict[str, Any]) -> dict[str, Any]:
    return jobs.optimum_job(FakeContext(spec)).output


def census(scale: float = 1.0, **extra: Any) -> tuple[dict[str, Any], list[jobs.Outcome]]:
    spec = filled(
        {
            "kind": "census",
            "dataset": {"generator": "custom", "X": X3, "y": [scale * v for v in Y3]},
            "weight_decay": 0.02 * scale,
            "widths": [1, 2, 6],
            "samples_per_width": 30,
            **extra,
        }
    )
    opt = optimum_of(spec)
    chunks = [
        jobs.census_chunk_job(
            FakeContext(spec, {"width": w, "start": 0, "stop": 30}, outputs={0: [opt]})
        )
        for w in spec["widths"]
    ]
    return spec, chunks


def test_census_cones_and_rows_carry_the_birth_test():
    spec, chunks = census()
    assert spec["tolerance"] is None and spec["relative_tolerance"] == 1e-7
    cones = [c for chunk in chunks for c in chunk.cones]
    spurious = [c for c in cones if c["verdict"] == "spurious"]
    assert spurious and any(c["detail"]["strict"] for c in spurious)
    for cone in cones:
        margin, strict = cone["detail"]["birth_margin"], cone["detail"]["strict"]
        if cone["verdict"] == "spurious":
            assert margin < 0 and isinstance(strict, bool)
        else:
            assert margin is None and strict is None
    outputs = {0: [optimum_of(spec)], 1: [chunk.output for chunk in chunks]}
    rows = jobs.finalize("census", spec, outputs, []).output["rows"]
    for row, chunk in zip(rows, chunks, strict=True):
        mine = [c for c in chunk.cones if c["verdict"] == "spurious" and c["detail"]["strict"]]
        assert row["p_spurious_strict"] == len(mine) / 30 <= row["p_spurious"]
    # the same census in other units: the same verdicts and strictness
    _, scaled = census(1e3)
    assert [(c["verdict"], c["detail"]["strict"]) for ch in scaled for c in ch.cones] == [
        (c["verdict"], c["detail"]["strict"]) for c in cones
    ]


def training(scale: float = 1.0, max_epochs: int = 6500, **extra: Any):
    spec = filled(
        {
            "kind": "training",
            "dataset": {"generator": "teacher", "n": 4, "d": 3, "teacher_width": 2, "seed": 1},
            "weight_decay": 0.05 * scale,
            "widths": [1, 2, 10],
            "init_scales": [0.01 * scale**0.5, 0.5 * scale**0.5],
            "seeds": 3,
            "optimizer": {"name": "gd", "lr": 0.02 / scale},
            "max_epochs": max_epochs,
            "grad_tol": 1e-16 * scale**3,
            "device": "cpu",
            **extra,
        }
    )
    if scale != 1.0:  # y times scale: a custom dataset with the teacher's points
        from workers.landscape.geometry import datasets

        X, y = datasets.build(spec["dataset"])
        spec["dataset"] = {"generator": "custom", "X": X.tolist(), "y": (scale * y).tolist()}
    opt = optimum_of(spec)
    out = jobs.training_job(FakeContext(spec, {"runs": [0, 18]}, outputs={0: [opt]}))
    runs = [
        Run(index=u["index"], params=p, verdict=u["verdict"], final=u["final"])
        for u, p in zip(out.runs, grid(spec), strict=True)
    ]
    return spec, runs, jobs.finalize("training", spec, {0: [opt]}, runs).output


def grid(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"width": w, "init_scale": a, "seed": s}
        for w in spec["widths"]
        for a in spec["init_scales"]
        for s in range(spec["seeds"])
    ]


@pytest.fixture(scope="module")
def sweep():
    return training()


def test_every_run_reports_its_cone_and_groups_the_share_of_global_cones(sweep):
    _, runs, result = sweep
    keys = {"cone_value", "cone_global", "projected_verdict", "birth_margin", "strict"}
    assert all(keys <= set(r.final) for r in runs)
    verdicts = {r.verdict for r in runs}
    assert {"global_minimum", "spurious_local_minimum", "not_converged"} <= verdicts
    for run in runs:
        final = run.final
        if run.verdict == "not_converged":
            assert final["cone_value"] is not None and isinstance(final["cone_global"], bool)
            assert final["projected_verdict"] in {
                "global_minimum",
                "spurious_local_minimum",
                "saddle_point",
            }
            assert (final["projected_verdict"] == "global_minimum") is final["cone_global"]
        else:
            assert final["projected_verdict"] is None
        if run.verdict == "spurious_local_minimum":
            assert final["birth_margin"] < 0 and isinstance(final["strict"], bool)
            assert final["cone_global"] is False
        else:
            assert final["birth_margin"] is None and final["strict"] is None
        if run.verdict == "global_minimum":
            assert final["cone_global"] is True
    for group in result["groups"]:
        mine = [
            r
            for r in runs
            if (r.params["width"], r.params["init_scale"]) == (group["width"], group["init_scale"])
        ]
        held = sum(r.final["cone_global"] is True for r in mine) / len(mine)
        assert group["p_cone_global"] == held


def test_a_not_converged_run_projects_the_verdict_it_reaches_when_trained_on(sweep):
    _, short, _ = sweep
    _, long, _ = training(max_epochs=400_000)
    early = [(s, r) for s, r in zip(short, long, strict=True) if s.verdict == "not_converged"]
    assert early and all(r.verdict != "not_converged" for _, r in early)
    assert {s.final["projected_verdict"] for s, _ in early} >= {
        "global_minimum",
        "spurious_local_minimum",
    }
    for stopped, converged in early:
        assert stopped.final["projected_verdict"] == converged.verdict
        if converged.verdict == "spurious_local_minimum":  # it was already in its final cone
            assert stopped.final["cone_value"] == pytest.approx(
                converged.final["reg_loss"], rel=1e-9
            )


def test_a_sweep_in_other_units_gets_the_same_verdicts(sweep):
    _, runs, result = sweep
    _, scaled, scaled_result = training(1e3)
    fields = ("cone_global", "projected_verdict", "strict")
    assert [(r.verdict, *(r.final[k] for k in fields)) for r in scaled] == [
        (r.verdict, *(r.final[k] for k in fields)) for r in runs
    ]
    shares = [{k: v for k, v in g.items() if k != "init_scale"} for g in result["groups"]]
    assert [{k: v for k, v in g.items() if k != "init_scale"} for g in scaled_result["groups"]] == (
        shares
    )


def test_a_stored_spec_keeps_its_absolute_tolerance():
    spec, runs, _ = training(1e-3, tolerance=1e-7)
    assert spec["tolerance"] == 1e-7
    # the spurious run's gap is 0.031 in the original units, 3.1e-8 here: below 1e-7
    spurious_index = 0
    assert runs[spurious_index].verdict == "global_minimum"
    _, relative, _ = training(1e-3)
    assert relative[spurious_index].verdict == "spurious_local_minimum"
