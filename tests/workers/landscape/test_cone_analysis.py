"""A verdict for every run: a run stopped early is judged by the cone it stopped in.

``VerdictJudge`` solves that cone and projects the verdict the run would get if it converged
inside it, to the cone's minimiser. That is the census's question about the same signed cones,
so a network with one neuron strictly inside each signed cone of a census sample must project
the census's verdict: global -> global_minimum, spurious -> spurious_local_minimum,
no_local_min -> saddle_point.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from workers.landscape import census, convex
from workers.landscape.geometry import datasets
from workers.landscape.geometry.network import loss
from workers.landscape.geometry.patterns import enumerate_patterns
from workers.landscape.training.verdicts import VerdictJudge

LAM = 0.01
AS_TRAINING = {
    "global": "global_minimum",
    "spurious": "spurious_local_minimum",
    "no_local_min": "saddle_point",
}


def interior(X: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """A unit u with pattern 1[X u > 0], as far inside its cone as an LP finds."""
    orient = np.where(pattern, 1.0, -1.0)[:, None] * X
    d = X.shape[1]
    # maximise t subject to orient u >= t, -1 <= u <= 1
    found = linprog(
        np.r_[np.zeros(d), -1.0],
        A_ub=np.hstack([-orient, np.ones((len(X), 1))]),
        b_ub=np.zeros(len(X)),
        bounds=[(-1.0, 1.0)] * d + [(None, 1.0)],
    )
    assert found.status == 0 and -found.fun > 1e-6
    return found.x[:d] / np.linalg.norm(found.x[:d])


def test_stopped_runs_project_the_census_verdict_of_their_cone():
    X, y = datasets.teacher(6, 10, 3, 0)
    patterns = enumerate_patterns(X)
    opt = convex.global_optimum(X, y, LAM, patterns=patterns)
    records = [
        record
        for width in (10, 40)
        for record in census.certify_samples(
            X, y, LAM, optimum=opt.value, support=(opt.support_patterns, opt.support_signs),
            width=width, samples=range(30), seed=0, sampling="uniform", patterns=patterns,
            num_signed_cones=2 * len(patterns),
        )
    ]  # fmt: skip
    assert {r.verdict for r in records} == set(AS_TRAINING)
    judge = VerdictJudge(X, y, LAM, optimum=opt.value, patterns=patterns)
    for record in records:
        W = np.array([interior(X, p) for p in record.patterns])
        a = np.asarray(record.signs, dtype=np.float64)
        verdict = judge.judge("not_converged", loss(X, y, W, a, LAM), W, a)
        assert verdict.verdict == "not_converged"
        assert verdict.cone_value == pytest.approx(record.value, rel=1e-8)
        assert verdict.cone_global is (record.verdict == "global")
        assert verdict.projected_verdict == AS_TRAINING[record.verdict]


def test_a_stopped_zero_network_projects_a_spurious_minimum():
    X, y = datasets.teacher(4, 8, 3, 0)
    opt = convex.global_optimum(X, y, LAM).value
    W, a = np.zeros((3, 8)), np.zeros(3)
    verdict = VerdictJudge(X, y, LAM, optimum=opt).judge("not_converged", 1.0, W, a)
    assert verdict.cone_value == pytest.approx(np.mean(y**2))
    assert (verdict.cone_global, verdict.projected_verdict) == (False, "spurious_local_minimum")
    assert verdict.birth_margin is None and verdict.strict is None  # only for the verdict


def test_a_diverged_run_has_no_cone():
    X, y = datasets.teacher(4, 8, 3, 0)
    verdict = VerdictJudge(X, y, LAM, optimum=1.0).judge(
        "diverged", float("inf"), np.ones((2, 8)), np.ones(2)
    )
    assert (verdict.verdict, verdict.cone_value, verdict.cone_global) == ("diverged", None, None)
