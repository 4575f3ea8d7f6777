"""After training (issue 10): held-out error, the norm ratio, and the zero network."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.landscape.convex import global_optimum
from workers.landscape.geometry.datasets import teacher, teacher_test_points, theorem2
from workers.landscape.geometry.network import forward, loss
from workers.landscape.training import RunSpec, init_network, train_sweep
from workers.landscape.training.after import (
    held_out_mse,
    norm_ratio,
    optimal_norm_sq,
    param_norm_sq,
    zero_network_verdict,
)

# SCIENCE §8: one point x = (0.6, 0.8, 0), y = 1.5, weight decay 0.1 -> optimum 0.29.
X1, Y1, LAM1, OPT1 = np.array([[0.6, 0.8, 0.0]]), np.array([1.5]), 0.1, 0.29


def test_held_out_mse_by_hand() -> None:
    W = np.array([[1.0, 1.0], [-1.0, 2.0]])
    a = np.array([2.0, -1.0])
    X_test = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    y_test = np.array([0.5, 1.0, 2.0])
    # f(x1) = 2 relu(1) - relu(-1) = 2; f(x2) = 2 relu(1) - relu(2) = 0;
    # f(x3) = 2 relu(0) - relu(-3) = 0: errors 1.5, -1, -2.
    assert held_out_mse(W, a, X_test, y_test) == pytest.approx((2.25 + 1.0 + 4.0) / 3, abs=1e-15)
    assert np.isnan(held_out_mse(W * np.inf, a, X_test, y_test))
    with pytest.raises(ValueError):
        held_out_mse(W, a, X_test[:0], y_test[:0])


@pytest.mark.parametrize(
    "data, lam",
    [((X1, Y1), LAM1), (theorem2(4, 1e-3, 0), 1e-4), (teacher(6, 3, 4, 0), 1e-2)],
    ids=["one-point", "theorem2", "teacher"],
)
def test_the_optimal_network_has_norm_ratio_one(data, lam: float) -> None:
    """||θ*||^2 = ||W*||^2 + ||a*||^2 = 2 sum ||u_i|| = (optimum - mse*) / λ."""
    X, y = data
    opt = global_optimum(X, y, lam)
    assert norm_ratio(opt.W, opt.a, opt.W, opt.a) == pytest.approx(1.0, abs=1e-12)
    reference = optimal_norm_sq(opt.W, opt.a)
    mse = float(np.mean((forward(X, opt.W, opt.a) - y) ** 2))
    assert reference == pytest.approx(param_norm_sq(opt.W, opt.a), rel=1e-12)
    assert reference == pytest.approx(2 * np.linalg.norm(opt.U, axis=1).sum(), rel=1e-9)
    assert reference == pytest.approx((opt.value - mse) / lam, rel=1e-6)
    # rescaling neurons leaves f and the reference alone, but not the raw norm
    c = np.linspace(0.5, 2.0, len(opt.a))
    assert optimal_norm_sq(opt.W * c[:, None], opt.a / c) == pytest.approx(reference, rel=1e-12)
    assert norm_ratio(opt.W * c[:, None], opt.a / c, opt.W, opt.a) > 1.0


def test_a_run_at_the_global_minimum_has_norm_ratio_one() -> None:
    def reaches_the_optimum(seed: int) -> bool:  # a neuron with a_j > 0 and w_j . x > 0
        W, a = init_network(3, 6, 1.0, seed)
        return bool(np.any((a > 0) & (W @ X1[0] > 0)))

    seeds = list(itertools.islice(filter(reaches_the_optimum, itertools.count()), 3))
    runs = [RunSpec(6, 1.0, s) for s in seeds]
    opt = global_optimum(X1, Y1, LAM1)
    for out in train_sweep(X1, Y1, LAM1, runs, lr=0.05, max_epochs=20_000, optimum=OPT1):
        assert out.status == "converged" and abs(out.gap) < 1e-7
        assert norm_ratio(out.W, out.a, opt.W, opt.a) == pytest.approx(1.0, abs=1e-6)
        assert held_out_mse(out.W, out.a, X1, Y1) == pytest.approx(out.mse, rel=1e-9)


def test_norm_ratio_is_undefined_against_the_zero_network() -> None:
    W, a = init_network(3, 4, 1.0, 0)
    assert np.isnan(norm_ratio(W, a, np.zeros((0, 3)), np.zeros(0)))
    assert np.isnan(norm_ratio(W * np.inf, a, W, a))


def test_the_zero_network_is_a_saddle_unless_it_is_the_global_minimum() -> None:
    # λ = 0.1: optimum 0.29 < mean(y^2) = 2.25, and a small neuron along x lowers L
    assert zero_network_verdict(Y1, OPT1, 1e-7) == "saddle_point"
    w = 1e-3 * X1[0] / np.linalg.norm(X1[0])
    small = loss(X1, Y1, w[None], np.array([1e-3]), LAM1)
    assert small < float(np.mean(Y1**2))
    # λ = 2: t = max(0, (1.5 - 2) / 1) = 0, so the zero network is optimal (SCIENCE §8)
    big = global_optimum(X1, Y1, 2.0).value
    assert big == pytest.approx(2.25, abs=1e-7)
    assert zero_network_verdict(Y1, big, 1e-7) == "global_minimum"


def test_teacher_test_points_come_from_the_training_teacher() -> None:
    """The test points' labels come from the training data's teacher, its
    test inputs are fresh, and the teacher network itself has held-out error 0."""
    X, y = teacher(6, 3, 4, seed=5)
    X_same, y_same = teacher_test_points(6, 3, 4, 5, n_test=6, test_seed=5)
    assert not np.allclose(X_same, X)  # test_seed == seed still gives fresh points
    rng = np.random.default_rng(5)
    rng.standard_normal((6, 3))
    T, b = rng.standard_normal((4, 3)), rng.standard_normal(4)
    np.testing.assert_array_equal(forward(X, T, b), y)
    X_test, y_test = teacher_test_points(6, 3, 4, 5, n_test=200, test_seed=1)
    assert held_out_mse(T, b, X_test, y_test) == pytest.approx(0.0, abs=1e-28)
    np.testing.assert_array_equal(forward(X_same, T, b), y_same)
    out = train_sweep(X, y, 1e-2, [RunSpec(20, 0.5, 0)], lr=0.05, max_epochs=2_000, optimum=0.0)
    error = held_out_mse(out[0].W, out[0].a, X_test, y_test)
    assert np.isfinite(error) and error > out[0].mse  # 6 points do not pin down the teacher
