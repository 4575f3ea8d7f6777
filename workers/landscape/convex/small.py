"""Exact fast paths of numpy and scipy routines for the small dense systems of a census.

A census cone's linear algebra runs on arrays of a few rows (n points, d <= ~10 unknowns),
where the library wrappers' argument checks cost more than the arithmetic. Each function
here calls the same routine on the same data as the library call it names, so it returns
the same result to the bit; only the checks are left out (inputs are computed here, never
given by a user, and finite).
"""

from __future__ import annotations

import numpy as np
from numpy.linalg import LinAlgError, _umath_linalg
from scipy.linalg import lapack
from scipy.optimize import _slsqplib

__all__ = ["cholesky", "lstsq", "nnls", "row_norms", "solve_lower"]


def nnls(A: np.ndarray, b: np.ndarray, maxiter: int) -> tuple[np.ndarray, float]:
    """``scipy.optimize.nnls(A, b, maxiter=maxiter)``: the same Lawson-Hanson routine on the
    same C-contiguous float64 copy of A.

    Args:
        A: (m, k) float64.
        b: (m,) float64.
        maxiter: iterations at most (> 0).

    Returns:
        (x (k,), ||A x - b||).

    Raises:
        RuntimeError: when the iterations run out (as scipy's).
    """
    x, rnorm, info = _slsqplib.nnls(
        np.ascontiguousarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64), maxiter
    )
    if info == 3:
        raise RuntimeError("Maximum number of iterations reached.")
    return x, rnorm


def lstsq(A: np.ndarray, b: np.ndarray, rcond: float | None = None) -> np.ndarray:
    """``np.linalg.lstsq(A, b, rcond)[0]`` for float64 A (m, k) and b (m,): the same LAPACK
    routine (gelsd) through numpy's own gufunc.

    Raises:
        LinAlgError: when the SVD does not converge (numpy raises; here its NaNs are caught).
    """
    m, k = A.shape
    if rcond is None:
        rcond = np.finfo(np.float64).eps * max(m, k)
    with np.errstate(invalid="ignore"):
        x = _umath_linalg.lstsq(A, b[:, None], rcond, signature="ddd->ddid")[0][:, 0]
    if m == 0:
        x[...] = 0.0
    elif not np.isfinite(x).all():
        raise LinAlgError("SVD did not converge in Linear Least Squares")
    return x


def row_norms(A: np.ndarray) -> np.ndarray:
    """``np.linalg.norm(A, axis=1)`` for float64 A (m, d): the same sum of squares."""
    return np.sqrt(np.add.reduce(A * A, axis=1))


def cholesky(G: np.ndarray) -> np.ndarray:
    """``np.linalg.cholesky(G)`` for float64 G (k, k): the same LAPACK routine (potrf)
    through numpy's own gufunc.

    Raises:
        LinAlgError: when G is not positive definite (numpy's gufunc leaves NaNs then).
    """
    with np.errstate(invalid="ignore"):
        L = _umath_linalg.cholesky_lo(G, signature="d->d")
    if np.isnan(L).any():
        raise LinAlgError("Matrix is not positive definite")
    return L


def solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``scipy.linalg.solve_triangular(L, b, lower=True)`` for a C-contiguous float64 L (k, k)
    and b (k,): the same LAPACK call (trtrs on L^T, transposed) that scipy makes for it."""
    x, info = lapack.dtrtrs(L.T, b, lower=0, trans=1)
    if info != 0:
        raise LinAlgError(f"singular matrix: resolution failed at diagonal {info - 1}")
    return x
