"""Clarke stationarity (SCIENCE §4) against constructed points and finite differences."""

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from workers.landscape import convex
from workers.landscape.convex import stationarity
from workers.landscape.convex.stationarity import clarke_stationarity, merge_neurons
from workers.landscape.geometry import datasets, network
from workers.landscape.geometry.patterns import enumerate_patterns

LAM = 0.01


def fd_gradient_norm(X, y, W, a, lam, h=1e-6):
    """Central finite differences of network.loss over all of (W, a)."""
    theta = np.concatenate([W.ravel(), a])
    m, d = W.shape

    def f(t):
        return network.loss(X, y, t[: m * d].reshape(m, d), t[m * d :], lam)

    grad = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])
    return float(np.linalg.norm(grad))


def test_kink_needs_an_intermediate_derivative():
    # One neuron w = e1 sits on the kink of x2 = e2; only relu'(0) = 1/2 zeroes the gradient.
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([1.45, 0.3, 0.85])
    W, a = np.array([[1.0, 0.0]]), np.array([1.0])
    found = clarke_stationarity(X, y, W, a, 0.1)
    assert found.stationary and found.residual < 1e-12 and found.num_kinks == 1
    fixed = clarke_stationarity(X, y, W, a, 0.1, kink_tol=-1.0)  # relu'(0) = 0 only
    assert not fixed.stationary and fixed.residual == pytest.approx(0.1, abs=1e-12)


def test_merging_parallel_copies_keeps_the_verdict():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([1.45, 0.3, 0.85])
    W, a = np.array([[0.6, 0.0], [0.8, 0.0]]), np.array([0.6, 0.8])  # |a| w sums to e1
    merged_W, merged_a = merge_neurons(X, W, a)
    assert merged_W.shape == (1, 2)
    np.testing.assert_allclose(merged_a[0] * merged_W[0], [1.0, 0.0], atol=1e-15)
    assert clarke_stationarity(X, y, W, a, 0.1).stationary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_finite_differences_away_from_kinks(seed):
    rng = np.random.default_rng(seed)
    X, y = datasets.teacher(5, 3, 2, seed)
    W, a = rng.standard_normal((4, 3)), rng.standard_normal(4)
    assert np.abs(X @ W.T).min() > 1e-3  # away from kinks
    found = clarke_stationarity(X, y, W, a, LAM)
    assert found.num_kinks == 0 and not found.stationary
    W, a = merge_neurons(X, W, a)  # the test is on the merged network (same signed cones)
    assert found.residual == pytest.approx(fd_gradient_norm(X, y, W, a, LAM), rel=1e-6)


def spurious_points(X, y, lam, count):
    """Networks recovered from single-cone restricted minimisers strictly inside their cone
    (no kinks) whose value is above the optimum: spurious local minima by construction."""
    patterns = enumerate_patterns(X)
    optimum = convex.global_optimum(X, y, lam, patterns=patterns).value
    points = []
    for pattern in patterns[1:]:
        for sign in (1, -1):
            sol = convex.solve_program(X, y, lam, pattern[None], np.array([sign]))
            u = sol.U[0]
            if np.linalg.norm(u) < 1e-4 or sol.value < optimum + 1e-4:
                continue
            cos = np.abs(X @ u) / (np.linalg.norm(X, axis=1) * np.linalg.norm(u))
            if cos.min() > 1e-3:
                points.append(network.recover_network(sol.U, np.array([sign])))
            if len(points) == count:
                return points
    return points


def test_spurious_points_are_stationary_and_perturbed_ones_are_not():
    X, y = datasets.teacher(5, 4, 3, 2)
    points = spurious_points(X, y, LAM, 4)
    assert len(points) == 4
    rng = np.random.default_rng(0)
    for W, a in points:
        found = clarke_stationarity(X, y, W, a, LAM)
        assert found.stationary, found
        assert fd_gradient_norm(X, y, W, a, LAM) < 1e-5
        W2, a2 = W + 1e-3 * rng.standard_normal(W.shape), a + 1e-3 * rng.standard_normal(a.shape)
        moved = clarke_stationarity(X, y, W2, a2, LAM)
        assert not moved.stationary
        assert moved.residual == pytest.approx(fd_gradient_norm(X, y, W2, a2, LAM), rel=1e-4)


@pytest.mark.parametrize("kinks", [1, 2])
def test_closed_form_box_least_squares_matches_bvls(kinks):
    """One or two kinks are solved in closed form; against scipy's BVLS (independent), on
    random, collinear, zero and already-in-box directions."""
    rng = np.random.default_rng(kinks)
    for trial in range(300):
        d = int(rng.integers(2, 6))
        directions = rng.standard_normal((kinks, d)) * rng.choice([0.1, 1.0, 10.0])
        base = rng.standard_normal(d)
        if trial % 5 == 1 and kinks == 2:
            directions[1] = -2.5 * directions[0]  # collinear, a line of minimisers
        if trial % 5 == 2:
            directions[0] = 0.0  # a kink whose direction vanishes (r_k = 0)
        if trial % 5 == 3:
            base = -directions.T @ rng.uniform(0.1, 0.9, kinks)  # the minimum 0 is inside
        fit = lsq_linear(directions.T, -base, bounds=(0.0, 1.0), method="bvls", tol=1e-14)
        rest = base + directions.T @ fit.x
        expected = float(rest @ rest)
        got = stationarity._min_block_norm_sq(base, directions)
        scale = float(base @ base) + float(np.sum(directions * directions))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-13 * scale)


def test_two_nearly_parallel_kinks_keep_a_zero_residual():
    """An ill-conditioned pair whose box holds an exact zero: the closed form must find
    about 0 (rounding), as BVLS does."""
    v = np.array([1.0, 0.0, 0.0])
    w = np.array([1.0, 1e-7, 0.0])
    base = -(0.3 * v + 0.6 * w)
    got = stationarity._min_block_norm_sq(base, np.stack([v, w]))
    assert got <= 1e-28
