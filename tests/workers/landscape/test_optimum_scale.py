"""The pieces that let the certified optimum scale (SCIENCE §2-§3), against direct computations.

Packed enumeration, chambers built once each, facet-only working programs and byte-table
pattern sums must give exactly what the straightforward computations give.
"""

import numpy as np
import pytest
from scipy.optimize import linprog, nnls

from workers.landscape.convex import global_optimum, solve_program
from workers.landscape.convex.colgen import Pricer, _rank_head, packed_patterns
from workers.landscape.convex.polish import polish
from workers.landscape.convex.working import WorkingProgram, facet_rows
from workers.landscape.geometry import datasets, patterns
from workers.landscape.geometry.patterns import (
    _chamber_blocks,
    _group_lines,
    _packed_rank3,
    cover_count,
    enumerate_packed,
    enumerate_patterns,
)


def degenerate(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((18, 3))
    X[5], X[7], X[8] = X[2], -2.0 * X[3], 0.0
    X[9], X[10] = X[1] + X[4], X[1] + 0.5 * X[4]  # three lines in one plane
    X[11:14, 2] = 0.0
    return X


@pytest.mark.parametrize("seed", range(4))
def test_chambers_are_built_once_each(seed):
    rng = np.random.default_rng(seed)
    for X in (rng.standard_normal((40, 3)), rng.standard_normal((16, 4)), degenerate(seed)):
        U = X[np.linalg.norm(X, axis=1) > 0]
        U = U / np.linalg.norm(U, axis=1, keepdims=True)
        line, _ = _group_lines(U, 1e-9)
        E = U[np.unique(line, return_index=True)[1]]
        rows = np.concatenate(list(_chamber_blocks(E, 1e-9)))
        assert len({row.tobytes() for row in rows}) == len(rows)  # no repeats
        assert len(rows) == len(enumerate_patterns(X))
    assert len(rows) < cover_count(18, 3)  # the degenerate data has fewer


def test_packed_enumeration_is_the_packed_bool_one():
    for X in (datasets.teacher(30, 3, 10, 0)[0], degenerate(5), np.zeros((3, 2))):
        packed = enumerate_packed(X)
        assert packed.dtype == np.uint8
        np.testing.assert_array_equal(packed, np.packbits(enumerate_patterns(X), axis=1))


def _projection_norm(A: np.ndarray, g: np.ndarray) -> float:
    """|| proj_{A u >= 0}(g) || by NNLS: g + A^T mu with mu >= 0 minimising its norm."""
    mu, _ = nnls(A.T, -g, maxiter=2000)
    return float(np.linalg.norm(g + A.T @ mu))


def test_facet_rows_define_the_same_cone():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 3))
    patterns = enumerate_patterns(X)
    for D in patterns[rng.choice(len(patterns), 6, replace=False)]:
        A = np.where(D, 1.0, -1.0)[:, None] * X
        rows = facet_rows(A)
        assert 3 <= len(rows) < 20
        for g in rng.standard_normal((5, 3)):
            assert _projection_norm(A[rows], g) == pytest.approx(
                _projection_norm(A, g), rel=1e-9, abs=1e-12
            )


def test_facet_rows_keep_every_constraint_that_binds():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((80, 3))
    patterns = enumerate_patterns(X)
    for D in patterns[rng.choice(len(patterns), 4, replace=False)]:
        A = np.where(D, 1.0, -1.0)[:, None] * X
        rows = facet_rows(A)
        # no point of the reduced cone {A_rows u >= 0, |u| <= 1} violates a dropped row
        for k in np.setdiff1d(np.arange(80), rows):
            lp = linprog(A[k], A_ub=-A[rows], b_ub=np.zeros(len(rows)), bounds=[(-1, 1)] * 3)
            assert lp.status == 0 and lp.fun >= -1e-9


def test_working_program_matches_the_cvxpy_program():
    X, y = datasets.teacher(40, 3, 10, 0)
    patterns = enumerate_patterns(X)
    rng = np.random.default_rng(0)
    index = rng.choice(len(patterns), 30, replace=False)
    signs = np.where(rng.random(30) < 0.5, 1, -1)
    direct = WorkingProgram(X, y, 0.01).solve(patterns[index], index, signs)
    cvxpy = solve_program(X, y, 0.01, patterns[index], signs)
    assert direct.value == pytest.approx(cvxpy.value, rel=1e-7)
    A = np.where(patterns[index], 1.0, -1.0)[:, :, None] * X[None]  # (k, n, d)
    scale = np.linalg.norm(direct.U, axis=1)[:, None] * np.linalg.norm(X, axis=1)[None]
    assert np.all(np.einsum("knd,kd->kn", A, direct.U) >= -1e-8 * (1.0 + scale))


def test_pricer_sums_are_the_pattern_sums():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((21, 3))  # 21 points: the last byte is partly padding
    patterns = enumerate_patterns(X)
    r = rng.standard_normal(21)
    pricer = Pricer(X, np.packbits(patterns, axis=1))
    idx = rng.permutation(len(patterns))
    expected = patterns[idx].astype(float) @ (r[:, None] * X)
    np.testing.assert_allclose(pricer.sums(r, idx), expected, atol=1e-12)
    np.testing.assert_array_equal(pricer.patterns(idx), patterns[idx])
    np.testing.assert_array_equal(packed_patterns(patterns, 21), np.packbits(patterns, axis=1))


def test_packed_and_bool_patterns_give_the_same_optimum():
    X, y = datasets.teacher(30, 3, 10, 0)
    patterns = enumerate_patterns(X)
    a = global_optimum(X, y, 0.01, patterns=patterns)
    b = global_optimum(X, y, 0.01, patterns=np.packbits(patterns, axis=1))
    assert a.value == pytest.approx(b.value, rel=1e-9)
    assert a.num_patterns == b.num_patterns == len(patterns)
    assert b.max_dual_violation <= 1e-9 and b.gap_bound <= 1e-9


def test_uncertified_rounds_are_checked_over_packed_patterns(monkeypatch):
    from workers.landscape.convex import colgen

    monkeypatch.setattr(colgen, "MAX_ROUNDS", 2)  # stop early: the optimum checks every cone
    X, y = datasets.teacher(30, 3, 10, 0)
    patterns = enumerate_patterns(X)
    a = global_optimum(X, y, 0.01, patterns=patterns, method="colgen")
    b = global_optimum(X, y, 0.01, patterns=np.packbits(patterns, axis=1), method="colgen")
    assert a.max_dual_violation > 1e-3  # far from optimal after two rounds
    assert b.max_dual_violation == pytest.approx(a.max_dual_violation, rel=1e-9)


def _general(X: np.ndarray) -> np.ndarray:
    """``enumerate_packed`` by the general method (rays of every pair of lines, chambers
    deduplicated), bypassing the rank-3 construction."""
    saved = patterns._packed_rank3
    patterns._packed_rank3 = lambda *args: None
    try:
        return enumerate_packed(X)
    finally:
        patterns._packed_rank3 = saved


def _rank3_inputs(X: np.ndarray):
    """The arguments ``enumerate_packed`` passes to ``_packed_rank3`` for rank-3 data."""
    active = np.linalg.norm(X, axis=1) > 1e-9 * np.linalg.norm(X, axis=1).max()
    U = X[active] / np.linalg.norm(X[active], axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(U, full_matrices=False)
    V = U @ vt[:3].T
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    line, sign = _group_lines(V, 1e-9)
    return V, line, sign, np.unique(line, return_index=True)[1], active, 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_rank3_chambers_are_the_general_methods(seed):
    # Gaussian points in R^3, with duplicated, antiparallel and zero rows, and the same
    # points in a 3-d subspace of R^5: the rank-3 construction applies (no three lines
    # through a ray) and gives the general method's patterns, Cover's count when distinct.
    rng = np.random.default_rng(seed)
    plain = rng.standard_normal((60, 3))
    mixed = plain.copy()
    mixed[5], mixed[7], mixed[9] = mixed[2], -3.0 * mixed[4], 0.0
    embedded = mixed @ np.linalg.qr(rng.standard_normal((5, 3)))[0].T
    for X in (plain, mixed, embedded):
        assert _packed_rank3(*_rank3_inputs(X)) is not None
        found = enumerate_packed(X)
        assert np.array_equal(found, _general(X))
    assert len(enumerate_packed(plain)) == cover_count(60, 3)


def test_rank3_construction_declines_three_lines_through_a_ray():
    # Rows 9 and 10 of ``degenerate`` lie in the plane of rows 1 and 4: the general method
    # handles that ray, and enumerate_packed falls back to it.
    X = degenerate(0)
    assert _packed_rank3(*_rank3_inputs(X)) is None
    assert np.array_equal(enumerate_packed(X), _general(X))


@pytest.mark.parametrize("size", [50, 5000, 200_000])
def test_rank_head_puts_the_largest_keys_first_in_order(size):
    rng = np.random.default_rng(size)
    keys = np.round(rng.exponential(size=size), 2)  # ties included
    idx = rng.permutation(10 * size)[:size]
    first = np.array([10 * size + 1, 10 * size + 2])
    for head in (1, 100, 8192):
        order, ranked = _rank_head(first, idx, keys, head)
        assert sorted(order) == sorted(np.concatenate([first, idx]))
        assert ranked >= min(head, size + 2)
        assert np.array_equal(order[:2], first)
        key_of = dict(zip(idx.tolist(), keys.tolist(), strict=True))
        head_keys = np.array([key_of[i] for i in order[2:ranked]])
        rest_keys = np.array([key_of[i] for i in order[ranked:]])
        assert np.all(np.diff(head_keys) <= 0)
        assert head_keys.min(initial=np.inf) >= rest_keys.max(initial=-np.inf)


def test_polish_takes_the_newton_budget_it_is_given():
    # The returned network's polish may take more solves than the census's (max_rounds);
    # with none it cannot settle and says so, with the default it reaches the minimiser.
    X, y = datasets.teacher(20, 3, 10, 0)
    opt = global_optimum(X, y, 0.01)
    cones, signs = opt.support_patterns, opt.support_signs
    solution = solve_program(X, y, 0.01, cones, signs)
    found = polish(X, y, 0.01, cones, signs, solution.U, solution.value)
    assert found is not None and abs(found.value - opt.value) <= 1e-9 * opt.value
    assert polish(X, y, 0.01, cones, signs, solution.U, solution.value, max_rounds=0) is None
