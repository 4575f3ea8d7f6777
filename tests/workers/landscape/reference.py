"""Independent reference computations shared by the core's tests."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


def projection_norms(X: np.ndarray, r: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """|| proj_K(-s X^T D r) || per signed cone (P, 2), one NNLS each, KKT checked."""
    out = np.empty((len(patterns), 2))
    for i, D in enumerate(patterns):
        A = np.where(D, 1.0, -1.0)[:, None] * X
        for col, s in enumerate((1.0, -1.0)):
            g = -s * X.T @ (D * r)
            mu, _ = nnls(A.T, -g, maxiter=1000)
            u = g + A.T @ mu
            scale = 1e-10 * (1 + np.linalg.norm(g)) * (1 + np.linalg.norm(X))
            assert np.all(A @ u >= -scale) and np.all(mu >= 0)
            assert np.all(np.abs(mu * (A @ u)) <= scale)
            out[i, col] = np.linalg.norm(u)
    return out
