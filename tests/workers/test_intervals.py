"""Wilson 95% intervals on census rows and training groups (shared/API.md, second release).

The formula is checked against scipy's independent implementation; the roll-ups are
checked on inputs built here, with counts known by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import binomtest

from service.models import Run
from workers import jobs
from workers.landscape.census.records import WILSON_Z, ConeRecord, summarize, wilson_interval


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10, 20, 33, 100, 1000, 12_345])
def test_wilson_matches_scipy_for_every_count(n):
    ks = range(n + 1) if n <= 100 else [0, 1, 2, n // 3, n // 2, n - 2, n - 1, n]
    for k in ks:
        lo, hi = wilson_interval(k, n)  # type: ignore[misc]
        want = scipy_wilson(k, n)
        assert lo == pytest.approx(want[0], abs=1e-12, rel=0)
        assert hi == pytest.approx(want[1], abs=1e-12, rel=0)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_ends_and_edges():
    assert abs(WILSON_Z - ndtri(0.975)) < 1e-15  # the two-sided 95% normal quantile
    assert wilson_interval(0, 0) is None  # no samples, no interval
    assert wilson_interval(0, 10)[0] == 0.0  # type: ignore[index]
    assert wilson_interval(10, 10)[1] == 1.0  # type: ignore[index]
    lo, hi = wilson_interval(5, 10)  # type: ignore[misc]
    assert lo + hi == pytest.approx(1.0, abs=1e-15)  # symmetric about 1/2
    for k, n in [(-1, 5), (6, 5)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson_interval(k, n)


def cone(width: int, sample: int, verdict: str, strict: bool | None = None) -> ConeRecord:
    return ConeRecord(
        width=width,
        sample=sample,
        patterns=np.zeros((1, 3), dtype=bool),
        signs=np.ones(1, dtype=np.int8),
        value=1.0,
        verdict=verdict,
        covered=0.5,
        method="solved",
        gap=0.0,
        stationarity_residual=np.nan,
        num_neurons=0,
        strict=strict,
    )


def test_summarize_rows_carry_the_intervals_of_their_counts():
    # width 4: 3 global, 2 spurious (1 strict), 5 no_local_min; width 8: all 6 global
    verdicts = ["global"] * 3 + ["spurious"] * 2 + ["no_local_min"] * 5
    records = [cone(4, i, v, strict=(i == 3) if v == "spurious" else None) for i, v in
               enumerate(verdicts)] + [cone(8, i, "global") for i in range(6)]  # fmt: skip
    narrow, wide = summarize(records)
    counts = {"p_global": 3, "p_spurious": 2, "p_no_local_min": 5, "p_spurious_strict": 1}
    for key, k in counts.items():
        assert narrow[key] == k / 10
        assert narrow[f"{key}_ci"] == wilson_interval(k, 10)
    assert wide["p_global_ci"] == [pytest.approx(scipy_wilson(6, 6)[0], abs=1e-12), 1.0]
    assert wide["p_spurious_ci"][0] == 0.0 and wide["p_spurious_strict_ci"][0] == 0.0


def chunk(width: int, samples: int, counts: dict[str, int]) -> dict[str, Any]:
    return {"width": width, "samples": samples, "counts": counts, "covered_sum": samples * 0.5}


def test_census_rows_add_intervals_over_chunks_and_null_for_old_chunks():
    spec = {"widths": [10, 20]}
    chunks = [
        chunk(10, 6, {"global": 1, "spurious": 2, "no_local_min": 3, "spurious_strict": 1}),
        chunk(10, 4, {"global": 4, "spurious": 0, "no_local_min": 0, "spurious_strict": 0}),
        chunk(20, 5, {"global": 5, "spurious": 0, "no_local_min": 0, "spurious_strict": 0}),
        chunk(20, 5, {"global": 3, "spurious": 2, "no_local_min": 0}),  # before the birth test
    ]
    ten, twenty = jobs._census_rows(spec, chunks)
    for key, k in {"p_global": 5, "p_spurious": 2, "p_no_local_min": 3}.items():
        assert ten[key] == k / 10 and ten[f"{key}_ci"] == wilson_interval(k, 10)
    assert ten["p_spurious_strict_ci"] == wilson_interval(1, 10)
    assert twenty["p_global_ci"] == wilson_interval(8, 10)
    assert twenty["p_spurious_strict"] is None and twenty["p_spurious_strict_ci"] is None


def test_training_groups_add_intervals_and_null_for_an_empty_group():
    spec = {"widths": [10], "init_scales": [0.01, 1.0, 3.0], "seeds": 5}
    cells = {
        0.01: ["spurious_local_minimum"] * 3 + ["not_converged"] * 2,
        1.0: ["global_minimum"] * 4 + ["saddle_point"],
    }  # no run at init_scale 3.0
    held = {(0.01, 3), (1.0, 0), (1.0, 1), (1.0, 2), (1.0, 3)}  # one not_converged, 4 global
    runs = [
        Run(
            index=5 * cell + i,  # grid order: block b holds the runs of the b-th group
            params={"width": 10, "init_scale": scale},
            verdict=verdict,
            final={"cone_global": (scale, i) in held},
        )
        for cell, (scale, verdicts) in enumerate(cells.items())
        for i, verdict in enumerate(verdicts)
    ]
    small, unit, empty = jobs.training_groups_of(spec, jobs.tally_runs(spec, runs))
    assert small["runs"] == 5 and small["p_spurious_ci"] == wilson_interval(3, 5)
    assert small["p_global_ci"] == wilson_interval(0, 5)
    assert small["p_cone_global"] == 1 / 5 and small["p_cone_global_ci"] == wilson_interval(1, 5)
    assert unit["p_global_ci"] == wilson_interval(4, 5) == unit["p_cone_global_ci"]
    assert unit["p_spurious_ci"] == wilson_interval(0, 5)
    assert empty["runs"] == 0
    assert empty["p_global_ci"] is None and empty["p_spurious_ci"] is None
    assert empty["p_cone_global_ci"] is None
