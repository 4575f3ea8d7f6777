"""The vectorised dual check against per-cone projections (SCIENCE §3)."""

import numpy as np
import pytest

from tests.workers.landscape.reference import projection_norms as reference_values
from workers.landscape.convex.certificate import cone_values, dual_violations


def random_patterns(X: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    U = rng.standard_normal((X.shape[1], count))
    return np.unique(np.concatenate([(X @ U > 0).T, np.zeros((1, len(X)), bool)]), axis=0)


def degenerate(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    X = rng.standard_normal((n, d))
    X[0] = 0.0  # a point at the origin
    X[1] = X[2]  # a repeated point
    X[3] = -2.0 * X[4]  # collinear, opposite sides
    return X


@pytest.mark.parametrize(
    ("n", "d", "kind"),
    [
        (7, 2, "random"),
        (12, 3, "degenerate"),
        (30, 3, "random"),
        (9, 9, "degenerate"),
        (40, 6, "low_rank"),
    ],
)
def test_values_match_per_cone_projections(n, d, kind):
    rng = np.random.default_rng(n * d)
    X = degenerate(rng, n, d) if kind == "degenerate" else rng.standard_normal((n, d))
    if kind == "low_rank":
        X = rng.standard_normal((n, 2)) @ rng.standard_normal((2, d))
    r = rng.standard_normal(n)
    patterns = random_patterns(X, 300, rng)
    expected = reference_values(X, r, patterns)
    got = dual_violations(X, r, patterns)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_floor_returns_exact_values_above_it_and_bounds_below():
    rng = np.random.default_rng(2)
    X, r = rng.standard_normal((20, 4)), rng.standard_normal(20)
    patterns = random_patterns(X, 400, rng)
    expected = reference_values(X, r, patterns)
    floor = float(np.median(expected))
    got = dual_violations(X, r, patterns, floor=floor)
    above = expected > floor
    np.testing.assert_allclose(got[above], expected[above], atol=1e-9)
    assert np.all(got[~above] <= floor + 1e-12)
    assert np.all(got >= expected - 1e-9)


def test_cone_values_special_cases():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    orient = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])  # the positive quadrant
    g = np.array([[3.0, 4.0], [-1.0, -1.0], [2.0, -5.0]])
    values, exact = cone_values(X, orient, g)
    np.testing.assert_allclose(values, [5.0, 0.0, 2.0], atol=1e-12)
    assert exact.all()
