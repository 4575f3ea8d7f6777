"""The second release's figure elements: Wilson bands on the census figure and the final gap
against init_scale (Theorem 2) on the training figure, found by their gids in the SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from service import reports
from tests.service.test_reports import (
    CENSUS_RESULT,
    CENSUS_SPEC,
    TRAINING_SPEC,
    assert_png,
    assert_svg,
    curve,
    training_grid,
)
from workers.landscape.census.records import wilson_interval

SVG = "{http://www.w3.org/2000/svg}"
FINAL = "final-gap-vs-alpha"


def with_intervals(result: dict[str, Any]) -> dict[str, Any]:
    rows = [
        {
            **row,
            **{
                f"{key}_ci": wilson_interval(round(row[key] * row["samples"]), row["samples"])
                for key in ("p_global", "p_spurious")
            },
        }
        for row in result["rows"]
    ]
    return {**result, "rows": rows}


def groups_by_id(svg: bytes) -> dict[str, ET.Element]:
    return {g.get("id", ""): g for g in ET.fromstring(svg).iter(f"{SVG}g")}


def test_census_figure_shades_wilson_intervals_when_rows_have_them():
    svg = reports.census_figure(with_intervals(CENSUS_RESULT), "svg", spec=CENSUS_SPEC)
    assert_svg(svg)
    ids = groups_by_id(svg)
    assert {"wilson-band-p_global", "wilson-band-p_spurious"} <= set(ids)
    assert b"95% Wilson interval" in svg
    # the existing lines stay: shares, the signed cones, the threshold marks
    for text in ("P(global minimum)", "P(spurious local minimum)", "signed cones = 128", "m½"):
        assert text.encode() in svg
    png = reports.census_figure(with_intervals(CENSUS_RESULT), "png", spec=CENSUS_SPEC)
    assert_png(png, (720, 1125))


def test_census_figure_of_an_older_result_has_no_band():
    svg = reports.census_figure(CENSUS_RESULT, "svg", spec=CENSUS_SPEC)
    assert_svg(svg)
    assert b"wilson-band" not in svg and b"Wilson" not in svg
    partly = with_intervals(CENSUS_RESULT)
    partly["rows"][1] = {k: v for k, v in partly["rows"][1].items() if not k.endswith("_ci")}
    assert b"wilson-band-p_global" in reports.census_figure(partly, "svg")


FLOORS = {
    "global_minimum": 0.0,  # the curve ends slightly below 0: clipped at the floor
    "spurious_local_minimum": 0.02,
    "saddle_point": 0.05,
    "not_converged": 1e-3,
    "diverged": 0.0,
}


def every_verdict_runs() -> tuple[dict[str, Any], list[reports.TrainingRun]]:
    """The test_reports grid plus runs of every verdict at four init_scales, with final gaps
    of exactly 0, below 0, and NaN (diverged)."""
    result, runs = training_grid()
    for i, verdict in enumerate(FLOORS):
        for alpha in (1e-3, 1e-2, 0.1, 1.0):
            c = curve(100 + len(runs), floor=FLOORS[verdict])
            c["gap"] = c["gap"].copy()
            if verdict == "diverged":
                c["gap"][-1] = np.nan
            elif verdict == "global_minimum":
                c["gap"][-1] = 0.0 if alpha < 0.05 else -3e-17
            runs.append(({"width": 10, "init_scale": alpha, "seed": i}, verdict, c))
    return result, runs


def final_points(svg: bytes) -> dict[str, int]:
    """Markers per verdict group of the final-gap panel (one <use> per point)."""
    ids = groups_by_id(svg)
    assert FINAL in ids  # the panel's axes
    return {
        gid[len(FINAL) + 1 :]: len(list(g.iter(f"{SVG}use")))
        for gid, g in ids.items()
        if gid.startswith(FINAL + "-")
    }


def test_training_figure_draws_final_gap_against_alpha_one_point_per_run():
    result, runs = every_verdict_runs()
    runs[0] = (runs[0][0], None, None)  # not drawn: no curve
    svg = reports.training_figure(result, runs, "svg", spec=TRAINING_SPEC)
    assert_svg(svg)
    drawn = [r for r in runs if r[2] is not None]
    counts = final_points(svg)
    assert sum(counts.values()) == len(drawn) == 31
    assert set(counts) == set(FLOORS)
    assert counts["diverged"] == 4 and counts["saddle_point"] == 4
    assert counts["spurious_local_minimum"] == 5 + 4  # 5 of the grid's 6 have curves
    assert "spurious-level" in groups_by_id(svg)
    assert b"spurious level (median) = 0.02" in svg
    assert b"drawn at 1e-16" in svg and b"drawn at top" in svg
    # the existing panels stay
    assert b"verdicts per init_scale" in svg and b"epoch (log scale" in svg
    png = reports.training_figure(result, runs, "png", spec=TRAINING_SPEC)
    assert_png(png, (750, 1800))


def test_final_gap_panel_counts_the_sampled_runs_and_omits_the_level_without_spurious():
    result, runs = every_verdict_runs()
    kept = [r for r in runs if r[1] != "spurious_local_minimum"]
    many = [({**p, "seed": k}, v, c) for k in range(30) for p, v, c in kept]  # 30 * 22 runs
    svg = reports.training_figure(result, many, "svg", spec=TRAINING_SPEC)
    drawn = len(reports.sample_runs([p for p, _, _ in many]))
    assert drawn < len(many)
    assert sum(final_points(svg).values()) == drawn
    assert "spurious-level" not in groups_by_id(svg)
    assert f"{drawn} of {len(many)} runs drawn".encode() in svg
