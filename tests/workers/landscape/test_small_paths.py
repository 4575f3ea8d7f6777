"""The census's fast paths return what the library calls and the slower paths return, bit for bit.

``convex.small`` calls the routines behind numpy's and scipy's wrappers; the screen's atoms
memoise their projections; ``distinct_keyed`` finds small-n cones by a table; the support
solve is cached per problem. Each must leave every number as it was, so each is compared
with ``np.array_equal`` (not a tolerance) against the path it replaces.
"""

import numpy as np
import pytest
from scipy.linalg import solve_triangular
from scipy.optimize import nnls as scipy_nnls

from workers.landscape.census import sampling
from workers.landscape.census.certify import _support_solve
from workers.landscape.convex import certificate, small
from workers.landscape.convex.restricted import RestrictedSolver
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import enumerate_patterns


@pytest.mark.parametrize(("m", "k"), [(6, 10), (10, 6), (3, 3), (40, 1), (1, 5)])
def test_small_routines_equal_the_library_calls(m, k):
    rng = np.random.default_rng(m * 100 + k)
    for _ in range(20):
        A = rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-3, 3)
        b = rng.standard_normal(m)
        x, rnorm = small.nnls(A, b, 3 * k)
        want = scipy_nnls(A, b)
        assert np.array_equal(x, want[0]) and rnorm == want[1]
        x, _ = small.nnls(A.T.T[:, ::-1], b, 50 * k)  # a non-contiguous A is copied the same
        assert np.array_equal(x, scipy_nnls(A[:, ::-1], b, maxiter=50 * k)[0])
        for rcond in (None, 1e-14):
            assert np.array_equal(small.lstsq(A, b, rcond), np.linalg.lstsq(A, b, rcond)[0])
        assert np.array_equal(small.lstsq(A.T, A[0]), np.linalg.lstsq(A.T, A[0])[0])
        assert np.array_equal(small.row_norms(A), np.linalg.norm(A, axis=1))
        G = A.T @ A + 1e-3 * np.eye(k)
        L = small.cholesky(G)
        assert np.array_equal(L, np.linalg.cholesky(G))
        target = rng.standard_normal(k)
        assert np.array_equal(
            small.solve_lower(L, target),
            solve_triangular(L, target, lower=True, check_finite=False),
        )
    with pytest.raises(np.linalg.LinAlgError):
        small.cholesky(-np.eye(3))


def test_memoised_projections_equal_the_plain_ones():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((8, 4))
    X[2] = 0.0  # a zero row is dropped before the projections, memoised or not
    orient = np.where(rng.random((50, 8)) < 0.5, 1.0, -1.0)
    G = rng.standard_normal((50, 4))
    plain = certificate.projections(X, orient, G)
    first = certificate.projections(X, orient, G, memo=True)
    again = certificate.projections(X, orient[::-1], G[::-1], memo=True)  # from the memo
    assert np.array_equal(first, plain)
    assert np.array_equal(again, plain[::-1])


@pytest.mark.parametrize(("n", "m"), [(6, 40), (6, 640), (11, 300), (3, 2)])
def test_table_and_sort_find_the_same_cones(monkeypatch, n, m):
    rng = np.random.default_rng(n + m)
    patterns = rng.random((m, n)) < 0.5
    signs = np.where(rng.random(m) < 0.5, 1, -1).astype(np.int8)
    table = sampling.distinct_keyed(patterns, signs)
    monkeypatch.setattr(sampling, "TABLE_BITS", 0)
    sort = sampling.distinct_keyed(patterns, signs)
    for a, b in zip(table, sort, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_cached_support_solve_equals_a_fresh_one():
    X, y = datasets.teacher(6, 5, 2, seed=1)
    patterns = enumerate_patterns(X)[:3]
    signs = np.array([1, -1, 1])
    solver = RestrictedSolver(X, y, 0.01, tol=1e-10)
    fresh = RestrictedSolver(X, y, 0.01, tol=1e-10).solve(patterns, signs)
    for _ in range(2):
        prediction, value = _support_solve(solver, patterns, signs)
        assert value == fresh.value and np.array_equal(prediction, fresh.prediction)
