"""The vectorised dual check against per-cone projections (SCIENCE §3)."""

import numpy as np
import pytest
from scipy.optimize import nnls

from tests.workers.landscape.reference import projection_norms as reference_values
from workers.landscape.convex.certificate import (
    cone_values,
    dual_violations,
    few_cone_values,
    project_norm,
    projections,
)


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


def test_projections_satisfy_moreau():
    """The vectors are the projections: p in K, g - p in the polar cone (p - g = A^T mu with
    mu >= 0, recovered by an NNLS on the answer) and p orthogonal to p - g; these three
    determine proj_K(g)."""
    rng = np.random.default_rng(5)
    X = degenerate(rng, 12, 4)  # a zero row, a repeated row, collinear rows
    orient = np.where(rng.random((60, 12)) < 0.5, 1.0, -1.0)
    G = rng.standard_normal((60, 4))
    # the first three in their own cones
    orient[:3] = np.where(G[:3] @ X.T >= 0.0, 1.0, -1.0)  # ... their own cones
    P = projections(X, orient, G)
    inside = np.all(orient * (G @ X.T) >= 0.0, axis=1)
    assert inside[:3].all() and not inside.all()
    np.testing.assert_array_equal(P[inside], G[inside])  # returned as they are
    for o, g, p in zip(orient, G, P, strict=True):
        A = o[:, None] * X
        scale = np.linalg.norm(g) * (1.0 + np.abs(X).max())
        assert np.all(A @ p >= -1e-10 * scale)
        mu, gap = nnls(A.T, p - g, maxiter=1000)
        assert gap <= 1e-10 * scale
        assert abs(p @ (p - g)) <= 1e-10 * scale**2
        assert project_norm(A, g) == pytest.approx(np.linalg.norm(p), rel=1e-12, abs=1e-15)


def test_projections_onto_an_orthant():
    X = np.eye(3)
    G = np.array([[1.0, -2.0, 3.0], [-1.0, -1.0, -1.0], [0.5, 0.5, 0.5]])
    P = projections(X, np.ones((3, 3)), G)
    np.testing.assert_allclose(P, np.maximum(G, 0.0), atol=1e-15)


@pytest.mark.parametrize(("n", "d"), [(6, 10), (12, 3), (30, 4)])
def test_few_cone_values_are_exact_above_the_floor_and_bounds_below(n, d):
    """Against one NNLS per signed cone (reference.py): exact above the floor; below it,
    upper bounds that stay at most the floor."""
    rng = np.random.default_rng(n + d)
    X = rng.standard_normal((n, d)) if n <= d else degenerate(rng, n, d)
    r = rng.standard_normal(n)
    patterns = random_patterns(X, 40, rng)
    expected = reference_values(X, r, patterns)  # (P, 2)
    orient = np.where(np.repeat(patterns, 2, axis=0), 1.0, -1.0)
    sign = np.tile([1.0, -1.0], len(patterns))
    g = -sign[:, None] * (np.repeat(patterns, 2, axis=0) * r) @ X
    want = expected.reshape(-1)
    for floor in np.quantile(want[want > 1e-6 * want.max()], [0.2, 0.5, 0.8]):
        got = few_cone_values(X, orient, g, float(floor))
        above = want > floor * (1 + 1e-9)  # clear of rounding on either side
        below = want < floor * (1 - 1e-9)
        np.testing.assert_allclose(got[above], want[above], rtol=1e-9, atol=1e-12)
        assert np.all(got[below] <= floor) and np.all(got >= want - 1e-9)
        assert 0 < above.sum() < len(want)
