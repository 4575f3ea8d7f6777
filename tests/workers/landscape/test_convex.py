"""The convex program, the recovered network and the global optimum (SCIENCE §1, §3, §4, §8)."""

import itertools

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

from workers.landscape.convex import global_optimum, residual_of, solve_program
from workers.landscape.convex.certificate import dual_violations
from workers.landscape.geometry import datasets, network
from workers.landscape.geometry.network import caratheodory, loss

REL = 1e-7


def brute_patterns(X: np.ndarray) -> np.ndarray:
    """Every realisable pattern of a tiny dataset, by one LP per bit vector.

    D is realisable iff some u has x_k . u >= 1 on D and x_k . u <= 0 off D
    (scale a u with x_k . u > 0 on D).
    """
    n, d = X.shape
    found = []
    for bits in itertools.product([False, True], repeat=n):
        D = np.array(bits)
        A_ub = np.concatenate([-X[D], X[~D]])
        b_ub = np.concatenate([-np.ones(D.sum()), np.zeros((~D).sum())])
        res = linprog(np.zeros(d), A_ub=A_ub, b_ub=b_ub, bounds=[(None, None)] * d)
        if res.status == 0:
            found.append(D)
    return np.array(found)


def reference_optimum(X: np.ndarray, y: np.ndarray, lam: float) -> float:
    """The program of SCIENCE §3 written out plainly, one u_i and v_i per pattern."""
    n, d = X.shape
    fit, penalty, constraints = 0, 0, []
    for D in brute_patterns(X):
        u, v = cp.Variable(d), cp.Variable(d)
        orient = np.diag(2.0 * D - 1.0) @ X
        fit = fit + np.diag(D.astype(float)) @ X @ (u - v)
        penalty = penalty + cp.norm(u) + cp.norm(v)
        constraints += [orient @ u >= 0, orient @ v >= 0]
    objective = cp.sum_squares(fit - y) / n + 2 * lam * penalty
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return float(problem.value)


def small_dataset(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 7)), int(rng.integers(2, 4))
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    return X, y, float(rng.uniform(0.005, 0.2))


def n1_closed_form(x: np.ndarray, y: float, lam: float) -> float:
    """SCIENCE §8 for y >= 0; for y < 0 the negative neuron gives the same with |y|."""
    norm = np.linalg.norm(x)
    t = max(0.0, (abs(y) * norm - lam) / norm**2)
    return (t * norm - abs(y)) ** 2 + 2 * lam * t


def test_forward_and_loss_follow_the_convention():
    X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
    W = np.array([[1.0, 1.0], [-1.0, 0.5]])
    a = np.array([2.0, -1.0])
    y = np.array([1.0, 0.0, 0.5])
    pred = network.forward(X, W, a)
    expected = np.array([2.0 * 1.0 - 0.0, 2.0 * 2.0 - 1.0, 0.0 - 0.0])
    np.testing.assert_allclose(pred, expected)
    lam = 0.3
    mse = np.mean((expected - y) ** 2)
    assert network.loss(X, y, W, a, lam) == pytest.approx(mse + lam * (np.sum(W**2) + a @ a))


def test_recover_network_reproduces_the_programs_terms():
    U = np.array([[3.0, 4.0], [0.0, 0.0], [1e-12, 0.0], [0.0, -2.0]])
    signs = np.array([1, 1, -1, -1])
    W, a = network.recover_network(U, signs)
    assert W.shape == (2, 2) and a.shape == (2,)
    np.testing.assert_allclose(a[:, None] * W, [[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(np.abs(a) * np.linalg.norm(W, axis=1), [5.0, 2.0])
    np.testing.assert_allclose(a**2 + np.sum(W**2, axis=1), 2 * np.array([5.0, 2.0]))


def test_signed_cones_of_merges_neurons_and_ignores_dead_ones():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    W = np.array([[1.0, 0.5], [2.0, 1.0], [1.0, 0.5], [0.0, 1.0], [1.0, 1.0]])
    a = np.array([1.0, 3.0, -1.0, 1e-9, 0.0])
    patterns, signs = network.signed_cones_of(X, W, a)
    np.testing.assert_array_equal(patterns, [[True, True, False], [True, True, False]])
    np.testing.assert_array_equal(signs, [-1, 1])


@pytest.mark.parametrize(
    ("x", "y", "lam"),
    [((0.6, 0.8, 0.0), 1.5, 0.1), ((1.0, -2.0), 0.7, 0.05), ((0.3, 0.1), -1.2, 0.02)],
)
def test_single_point_closed_form(x, y, lam):
    X, target = np.array([x]), np.array([y])
    patterns = np.array([[False], [True]])
    opt = global_optimum(X, target, lam, patterns=patterns, method="full")
    assert opt.value == pytest.approx(n1_closed_form(X[0], y, lam), rel=REL, abs=1e-10)
    assert network.loss(X, target, opt.W, opt.a, lam) == pytest.approx(opt.value, rel=REL)


def test_science_example_is_029():
    X, y = np.array([[0.6, 0.8, 0.0]]), np.array([1.5])
    opt = global_optimum(X, y, 0.1, patterns=np.array([[False], [True]]))
    assert opt.value == pytest.approx(0.29, rel=REL)


def test_single_point_random_cases():
    rng = np.random.default_rng(11)
    for _ in range(4):
        x = rng.standard_normal(3)
        y, lam = float(rng.normal(scale=2.0)), float(rng.uniform(0.01, 0.5))
        opt = global_optimum(x[None], np.array([y]), lam, patterns=np.array([[False], [True]]))
        assert opt.value == pytest.approx(n1_closed_form(x, y, lam), rel=REL, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_optimum_matches_an_independent_formulation(seed):
    X, y, lam = small_dataset(seed)
    reference = reference_optimum(X, y, lam)
    patterns = brute_patterns(X)
    for method in ("full", "colgen"):
        opt = global_optimum(X, y, lam, patterns=patterns, method=method)
        assert opt.value == pytest.approx(reference, rel=REL)
        assert network.loss(X, y, opt.W, opt.a, lam) == pytest.approx(reference, rel=REL)
        assert opt.max_dual_violation <= 1e-6
        assert opt.gap_bound <= REL * opt.value


def test_certificate_flags_a_wrong_solution():
    X, y, lam = small_dataset(7)
    patterns = brute_patterns(X)
    opt = global_optimum(X, y, lam, patterns=patterns, method="full")
    assert opt.max_dual_violation <= 1e-6
    biggest = np.argmax(np.abs(opt.a) * np.linalg.norm(opt.W, axis=1))
    keep = np.arange(len(opt.a)) != biggest
    wrong = network.forward(X, opt.W[keep], opt.a[keep])
    values = dual_violations(X, residual_of(wrong, y), patterns)
    assert values.max() - 2 * lam > 1e-3


def test_restricted_program_over_all_cones_is_the_optimum_and_subsets_are_never_below():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((6, 3)), rng.standard_normal(6)
    lam = 0.05
    patterns = brute_patterns(X)
    optimum = global_optimum(X, y, lam, patterns=patterns).value
    cones = np.repeat(patterns, 2, axis=0)
    signs = np.tile([1, -1], len(patterns))
    assert solve_program(X, y, lam, cones, signs).value == pytest.approx(optimum, rel=REL)
    for _ in range(8):
        pick = rng.choice(len(cones), size=int(rng.integers(1, 8)), replace=False)
        restricted = solve_program(X, y, lam, cones[pick], signs[pick])
        assert restricted.value >= optimum * (1 - REL)
        W, a = network.recover_network(restricted.U, restricted.signs)
        assert network.loss(X, y, W, a, lam) == pytest.approx(restricted.value, rel=REL)


def test_solve_program_keeps_rows_for_repeats_and_the_zero_pattern():
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((5, 2)), rng.standard_normal(5)
    patterns = brute_patterns(X)
    cones = np.concatenate([patterns[:1], patterns, patterns[-1:]])
    signs = np.concatenate([[1], np.ones(len(patterns), dtype=int), [1]])
    solution = solve_program(X, y, 0.05, cones, signs)
    assert solution.U.shape == (len(cones), 2)
    assert not np.any(solution.U[-1])  # a repeat gets no variable
    assert solution.value == pytest.approx(
        solve_program(X, y, 0.05, patterns, np.ones(len(patterns))).value, rel=REL
    )


@pytest.mark.parametrize(("n", "d", "method"), [(30, 3, "full"), (8, 8, "full"), (40, 3, "colgen")])
def test_recovered_network_has_at_most_n_plus_one_neurons(n, d, method):
    X, y = datasets.teacher(n, d, 10, 1)
    opt = global_optimum(X, y, 0.01, method=method)
    assert 1 <= len(opt.a) <= n + 1
    assert len(opt.support_signs) == len(opt.a)
    assert loss(X, y, opt.W, opt.a, 0.01) == pytest.approx(opt.value, rel=1e-7)


def test_caratheodory_keeps_prediction_and_penalty():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 3))
    patterns = rng.random((12, 4)) < 0.5
    signs = np.where(rng.random(12) < 0.5, 1, -1)
    U = rng.standard_normal((12, 3))
    reduced = caratheodory(X, U, patterns, signs)

    def terms(V):
        pred = np.einsum("k,kn,kn->n", signs, patterns, V @ X.T)
        return pred, np.linalg.norm(V, axis=1).sum()

    assert np.count_nonzero(np.linalg.norm(reduced, axis=1)) <= 5
    for before, after in zip(terms(U), terms(reduced), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9)
