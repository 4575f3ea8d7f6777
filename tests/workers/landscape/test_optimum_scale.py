"""The pieces that let the certified optimum scale (SCIENCE §2-§3), against direct computations.

Packed enumeration, chambers built once each, facet-only working programs and byte-table
pattern sums must give exactly what the straightforward computations give.
"""

import numpy as np
import pytest
from scipy.optimize import linprog, nnls

from workers.landscape.convex import global_optimum, solve_program
from workers.landscape.convex.colgen import Pricer, packed_patterns
from workers.landscape.convex.working import WorkingProgram, facet_rows
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import (
    _chamber_blocks,
    _group_lines,
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
