"""Activation-pattern enumeration against independent computations (SCIENCE.md sections 2, 8).

A pattern is 1[X u > 0] for a generic direction u (x_k . u != 0 on every nonzero
row), i.e. one per chamber of the hyperplane arrangement; patterns of
lower-dimensional faces only (u = 0 included) are not counted.

The brute forces here share no code with workers.landscape.patterns:
(a) dense random generic directions u: Gaussian ones, plus small perturbations of
directions drawn inside the null space of every subset of rows (the faces), so
that small chambers next to rays and faces are hit; directions that are not
clearly generic are discarded;
(b) a chamber LP of every 0/1 vector: some u with x_k . u >= 1 on active rows and
x_k . u <= -1 on inactive nonzero rows, zero rows inactive.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linprog

from workers.landscape.geometry.patterns import (
    count_patterns,
    cover_count,
    enumerate_patterns,
    is_feasible,
    theory_bound,
)

U_BOX = 1e7  # |u_i| bound in the chamber LP; thin Gaussian chambers need ~1e4 at margin 1


def chamber_lp(X: np.ndarray, bits: np.ndarray) -> bool:
    """Is there u with x_k . u >= 1 (bit 1) and x_k . u <= -1 (bit 0, nonzero row)?"""
    on = np.asarray(bits, dtype=bool)
    nonzero = np.linalg.norm(X, axis=1) > 0
    if (on & ~nonzero).any():
        return False
    if not nonzero.any():
        return True
    s = np.where(on, 1.0, -1.0)[nonzero]
    A = -s[:, None] * X[nonzero]
    b = -np.ones(len(s))
    res = linprog(
        np.zeros(X.shape[1]), A_ub=A, b_ub=b, bounds=[(-U_BOX, U_BOX)] * X.shape[1], method="highs"
    )
    assert res.status in (0, 2), res.message
    return res.status == 0


def lp_patterns(X: np.ndarray) -> set[tuple[bool, ...]]:
    """Brute force (b): every 0/1 vector of length n that the chamber LP accepts."""
    n = X.shape[0]
    vectors = itertools.product((False, True), repeat=n)
    return {bits for bits in vectors if chamber_lp(X, np.array(bits))}


def null_space(A: np.ndarray, rel_tol: float = 1e-10) -> np.ndarray:
    """(d, k) orthonormal basis of {u : A u = 0}."""
    if A.shape[0] == 0:
        return np.eye(A.shape[1])
    _, s, vt = np.linalg.svd(A)
    rank = int(np.sum(s > rel_tol * max(s.max(initial=0.0), 1.0)))
    return vt[rank:].T


def sampled_patterns(X: np.ndarray, seed: int, per_face: int = 40) -> set[tuple[bool, ...]]:
    """Brute force (a): patterns of many generic directions u.

    Gaussian directions find the large chambers. For every subset Z of rows,
    directions inside the null space of X_Z, perturbed at several small scales,
    find the chambers around that face. A direction is kept only when it is
    clearly generic: |x . u| > 1e-7 ||x|| ||u|| for every nonzero row x.
    """
    rng = np.random.default_rng(seed)
    n, d = X.shape
    dirs = [rng.standard_normal((20_000, d))]
    for size in range(1, n + 1):
        for Z in itertools.combinations(range(n), size):
            N = null_space(X[list(Z)])
            if N.shape[1] == 0:
                continue
            on_face = rng.standard_normal((per_face, N.shape[1])) @ N.T
            for scale in (1e-1, 1e-2, 1e-4):
                dirs.append(on_face + scale * rng.standard_normal((per_face, d)))
    u = np.concatenate(dirs)
    norms = np.linalg.norm(X, axis=1)
    values = u @ X.T
    generic = (np.abs(values) > 1e-7 * norms[None, :] * np.linalg.norm(u, axis=1)[:, None])[
        :, norms > 0
    ].all(axis=1)
    assert generic.mean() > 0.5
    bits = values[generic] > 0
    return {tuple(bool(b) for b in row) for row in np.unique(bits, axis=0)}


def as_set(P: np.ndarray) -> set[tuple[bool, ...]]:
    return {tuple(bool(b) for b in row) for row in P}


def zero_is_a_chamber(X: np.ndarray) -> bool:
    """Whether some u has X u < 0 on every nonzero row (chamber LP of the zero vector)."""
    return chamber_lp(X, np.zeros(X.shape[0], dtype=bool))


def gaussian(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


# Tiny degenerate data sets: rows are exact (small integers or exact products).
_rng = np.random.default_rng(7)
_B = np.array([[1.0, 2.0, 0.0, -1.0], [0.0, 1.0, 3.0, 1.0]])
DEGENERATE = {
    "two identical points": np.array(
        [[1.0, 2.0, -1.0], [1.0, 2.0, -1.0], [0.5, -1.0, 2.0], [-2.0, 1.0, 1.0]]
    ),
    "parallel and antiparallel": np.array(
        [[1.0, -2.0], [2.0, -4.0], [-1.0, 2.0], [3.0, 1.0], [-1.0, -1.0]]
    ),
    "antiparallel pair only": np.array([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]]),
    "two antiparallel pairs": np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -2.0]]),
    "three affinely collinear points": np.array(
        [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 2.0, 1.0], [0.0, 1.0, -2.0], [1.0, -1.0, 0.0]]
    ),
    "three points on a line through 0, one antiparallel": np.array(
        [[1.0, -1.0, 2.0], [2.0, -2.0, 4.0], [-0.5, 0.5, -1.0], [0.0, 1.0, 1.0], [1.0, 0.0, -1.0]]
    ),
    "zero row": np.array(
        [[0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 1.0]]
    ),
    "zero row, independent rest": np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, -1.0]]),
    "2-d subspace of R^4": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [-1.0, 3.0]])
    @ _B,
    "coplanar triples in R^3": np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 0.0, 1.0],
            [0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0],
        ]
    ),
    "integer grid R^3": _rng.integers(-1, 2, size=(6, 3)).astype(float),
    "integer grid R^4": _rng.integers(-1, 2, size=(7, 4)).astype(float),
    "all zero": np.zeros((3, 2)),
    "one point": np.array([[0.6, 0.8, 0.0]]),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_matches_both_brute_forces_on_degenerate_data(name: str) -> None:
    X = DEGENERATE[name]
    P = enumerate_patterns(X)
    found = as_set(P)
    assert len(found) == len(P)
    assert found == lp_patterns(X)
    assert found == sampled_patterns(X, seed=1)
    assert (not P[0].any()) == zero_is_a_chamber(X)


def test_degenerate_counts_by_hand() -> None:
    # Duplicates, a zero row and the line e1 held in both orientations (2-d):
    # three distinct lines in the plane cut it into 6 chambers.
    X = np.array([[1.0, 0], [1, 0], [2, 0], [-1, 0], [0, 0], [0, 1], [1, 1]])
    assert count_patterns(X) == 6
    # An antiparallel pair: (0, 0) occurs only on the hyperplane, never in a chamber.
    assert as_set(enumerate_patterns(DEGENERATE["antiparallel pair only"])) == {
        (False, True),
        (True, False),
    }
    assert enumerate_patterns(DEGENERATE["two antiparallel pairs"]).tolist() == [
        [False, True, False, True],
        [False, True, True, False],
        [True, False, False, True],
        [True, False, True, False],
    ]
    # Independent nonzero rows: all 2^2 sign choices, the zero pattern first; zero row off.
    P = enumerate_patterns(DEGENERATE["zero row, independent rest"])
    assert P.tolist() == [[False, False, False], [False, False, True], [True, False, False],
                          [True, False, True]]  # fmt: skip
    assert enumerate_patterns(DEGENERATE["all zero"]).tolist() == [[False, False, False]]
    assert enumerate_patterns(DEGENERATE["one point"]).tolist() == [[False], [True]]


@pytest.mark.parametrize(("n", "d"), [(6, 10), (10, 3), (12, 4), (40, 3), (16, 16), (5, 5)])
def test_gaussian_counts_are_cover_counts(n: int, d: int) -> None:
    X = gaussian(n, d)
    assert count_patterns(X) == cover_count(n, d)
    if d >= n:
        assert count_patterns(X) == 2**n


def test_gaussian_100_3_is_cover_count() -> None:
    assert count_patterns(gaussian(100, 3, seed=3)) == cover_count(100, 3) == 9902


@pytest.mark.parametrize(("n", "d", "seed"), [(10, 3, 0), (12, 4, 1), (9, 2, 2), (8, 3, 11)])
def test_returned_patterns_are_realised_unique_sorted(n: int, d: int, seed: int) -> None:
    X = gaussian(n, d, seed)
    P = enumerate_patterns(X)
    assert P.dtype == bool and P.shape == (cover_count(n, d), n)
    assert len(np.unique(P, axis=0)) == len(P)
    keys = [tuple(row) for row in P.astype(int)]
    assert keys == sorted(keys)
    assert (not P[0].any()) == zero_is_a_chamber(X)
    assert all(chamber_lp(X, row) for row in P)
    found = as_set(P)
    rng = np.random.default_rng(seed)
    others = [row for row in rng.integers(0, 2, (300, n)).astype(bool) if tuple(row) not in found]
    assert others and not any(chamber_lp(X, row) for row in others)


def test_zero_pattern_present_iff_points_in_an_open_half_space() -> None:
    # Gaussian points in R^3: some seeds lie in an open half-space, most (n = 10) do not.
    seen = set()
    for seed in range(30):
        X = gaussian(10, 3, seed)
        has_zero = not enumerate_patterns(X)[0].any()
        assert has_zero == zero_is_a_chamber(X)
        seen.add(has_zero)
    assert seen == {True, False}


def test_invariant_to_row_scaling_and_permutation() -> None:
    X = DEGENERATE["integer grid R^4"]
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(X))
    Y = X[perm] * rng.uniform(1e-3, 1e3, size=(len(X), 1)) * 1e5
    assert as_set(enumerate_patterns(Y)) == as_set(enumerate_patterns(X)[:, perm])


def test_rank_deficient_gaussian_matches_its_subspace() -> None:
    # 12 Gaussian points in a random 3-d subspace of R^6: the count is that of R^3.
    rng = np.random.default_rng(5)
    coeffs = rng.standard_normal((12, 3))
    X = coeffs @ np.linalg.qr(rng.standard_normal((6, 3)))[0].T
    assert as_set(enumerate_patterns(X)) == as_set(enumerate_patterns(coeffs))
    assert count_patterns(X) == cover_count(12, 3)


@pytest.mark.parametrize(
    "name",
    [
        "parallel and antiparallel",
        "zero row",
        "2-d subspace of R^4",
        "antiparallel pair only",
        "three points on a line through 0, one antiparallel",
        "all zero",
    ],
)
def test_is_feasible_agrees_with_chamber_lp(name: str) -> None:
    X = DEGENERATE[name]
    truth = lp_patterns(X)
    for bits in itertools.product((False, True), repeat=len(X)):
        assert is_feasible(X, np.array(bits)) == (bits in truth), (name, bits)


def test_is_feasible_on_gaussian_data() -> None:
    for n, d, seed in [(10, 3, 0), (6, 10, 1), (12, 4, 2)]:
        X = gaussian(n, d, seed)
        found = as_set(enumerate_patterns(X))
        rng = np.random.default_rng(seed)
        for bits in [*enumerate_patterns(X)[::7], *rng.integers(0, 2, (100, n)).astype(bool)]:
            assert is_feasible(X, bits) == (tuple(bool(b) for b in bits) in found)


def test_is_feasible_rejects_wrong_shape_and_active_zero_rows() -> None:
    with pytest.raises(ValueError):
        is_feasible(np.eye(3), np.ones(2, dtype=bool))
    X = DEGENERATE["zero row, independent rest"]
    assert is_feasible(X, np.array([True, False, True]))
    assert not is_feasible(X, np.array([True, True, True]))


def test_cover_count_and_theory_bound() -> None:
    assert cover_count(6, 10) == 64
    assert cover_count(10, 3) == 92
    assert cover_count(12, 4) == 464
    assert cover_count(40, 3) == 1562
    assert cover_count(100, 3) == 9902
    assert cover_count(16, 16) == 65536
    assert cover_count(200, 50) == 2 * sum(math.comb(199, i) for i in range(50))
    assert theory_bound(6, 10) == 64 and theory_bound(40, 3) == 64_000
    assert theory_bound(300, 200) == 2**300  # exact int, no overflow
    with pytest.raises(ValueError):
        cover_count(0, 3)
