"""Column generation agrees with the full program (SCIENCE §3)."""

import numpy as np
import pytest

from tests.workers.landscape.reference import projection_norms as reference_values
from workers.landscape.convex import global_optimum
from workers.landscape.convex.colgen import Pricer, column_generation
from workers.landscape.geometry import network
from workers.landscape.geometry.patterns import enumerate_patterns

REL = 1e-7


def dataset(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Random data, every other seed made degenerate in one of four ways."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(5, 11)), int(rng.integers(2, 5))
    X = rng.standard_normal((n, d))
    kind = seed % 8
    if kind == 1:  # repeated points
        X[1] = X[0]
        X[3] = X[2]
    elif kind == 3:  # collinear points, on both sides of the origin
        X[1] = 2.5 * X[0]
        X[2] = -0.5 * X[0]
    elif kind == 5:  # a point at the origin
        X[0] = 0.0
    elif kind == 7:  # all points in a 2-dimensional subspace
        X = rng.standard_normal((n, 2)) @ rng.standard_normal((2, max(d, 3)))
    y = np.maximum(X @ rng.standard_normal(X.shape[1]), 0) - 0.5 * rng.standard_normal(n)
    return X, y, float(rng.choice([0.003, 0.01, 0.05, 0.2]))


@pytest.mark.parametrize("seed", range(24))
def test_column_generation_matches_full_program(seed):
    X, y, lam = dataset(seed)
    patterns = enumerate_patterns(X)
    full = global_optimum(X, y, lam, patterns=patterns, method="full")
    colgen = global_optimum(X, y, lam, patterns=patterns, method="colgen")
    assert colgen.value == pytest.approx(full.value, rel=REL)
    assert colgen.max_dual_violation <= 1e-6 and full.max_dual_violation <= 1e-6
    assert colgen.working_set_size <= 2 * len(patterns)
    for opt in (full, colgen):
        assert network.loss(X, y, opt.W, opt.a, lam) == pytest.approx(opt.value, rel=REL)
        assert len(opt.a) == len(opt.support_signs)


def test_column_generation_never_builds_the_full_program():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.maximum(X @ rng.standard_normal(3), 0) + 0.1 * rng.standard_normal(40)
    patterns = enumerate_patterns(X)
    solution, rounds, max_value = column_generation(X, y, 0.01, patterns)
    assert max_value is not None and max_value <= 0.02 + 1e-7
    assert rounds >= 1
    assert len(solution.signs) < len(patterns) // 4


def test_zero_labels_give_the_zero_network():
    X = np.random.default_rng(1).standard_normal((6, 3))
    opt = global_optimum(X, np.zeros(6), 0.1, patterns=enumerate_patterns(X), method="colgen")
    assert opt.value == 0.0 and len(opt.a) == 0 and opt.max_dual_violation == 0.0


def test_auto_picks_a_method_by_pattern_count():
    rng = np.random.default_rng(2)
    small, big = rng.standard_normal((4, 2)), rng.standard_normal((30, 3))
    assert global_optimum(small, rng.standard_normal(4), 0.05).method == "full"
    assert global_optimum(big, rng.standard_normal(30), 0.05).method == "colgen"


def test_pricer_finds_violators_and_certifies_when_none():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((15, 3))
    patterns = enumerate_patterns(X)
    pricer = Pricer(X, patterns)
    for step in range(3):  # a moving residual exercises the carried bounds
        r = rng.standard_normal(15) * (1 + step)
        expected = reference_values(X, r, patterns)
        ordered = np.sort(expected.ravel())
        k = int(0.9 * len(ordered))
        k += int(np.argmax(np.diff(ordered[k:]) > 1e-6))  # a threshold no value is near
        threshold = float(ordered[k] + ordered[k + 1]) / 2
        pricing = pricer.price(r, threshold, limit=5)
        assert 1 <= len(pricing.rows) <= 5
        got = expected[pricing.rows, pricing.cols]
        np.testing.assert_allclose(pricing.values, got, atol=1e-9)
        assert np.all(pricing.values > threshold) and np.all(np.diff(pricing.values) <= 0)
        exclude = np.zeros_like(expected, dtype=bool)
        exclude[np.unravel_index(np.argmax(expected), expected.shape)] = True
        pricing = pricer.price(r, threshold, limit=10**6, exclude=exclude)
        assert not np.any(exclude[pricing.rows, pricing.cols])
        assert len(pricing.rows) == int(np.sum(expected > threshold)) - 1
        top = expected.max()
        pricing = pricer.price(r, top + 1e-6, limit=5, floor=0.5 * top)
        assert len(pricing.rows) == 0 and pricing.complete
        assert pricing.max_value == pytest.approx(top, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_signed_values_with_a_floor_are_exact_above_it(seed):
    """The floor's shortcut (half-space bounds of both signs from one product) keeps every
    value above the floor exact and every other one an upper bound no larger than it."""
    from workers.landscape.convex.certificate import signed_values

    X, _, _ = dataset(seed)
    rng = np.random.default_rng(100 + seed)
    patterns = enumerate_patterns(X)
    r = rng.standard_normal(len(X)) / len(X)
    G = (patterns * r) @ X
    exact = reference_values(X, r, patterns)
    for floor in np.quantile(exact, [0.0, 0.3, 0.7, 0.95]):
        values = signed_values(X, patterns, G, float(floor))
        above = exact > floor
        assert np.allclose(values[above], exact[above], rtol=1e-9, atol=1e-12)
        assert np.all(values[~above] <= floor + 1e-12)
        assert np.all(values[~above] >= exact[~above] - 1e-12)
