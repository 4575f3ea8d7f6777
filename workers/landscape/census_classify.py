"""Classifying a restricted minimiser: global, spurious, or no local minimum (SCIENCE §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .stationarity import clarke_stationarity

__all__ = ["KINK_REL", "PRUNE_REL", "STATIONARITY_TOL", "Classification", "classify"]

# The interior-point solution leaves constraints that are active with a zero multiplier
# (common on orthogonal data) at a slack of order sqrt(mu), about 1e-5 relative at
# Clarabel's 1e-10 tolerances, and the rest of u carries an error of that order. Hence:
#: Neurons with ||u|| at or below this times max(1, max ||u||) are solver noise and dropped.
PRUNE_REL = 1e-6
#: A preactivation with |x_k . u| <= KINK_REL ||x_k|| ||u|| is taken to lie on the face
#: x_k . u = 0 (an active cone constraint): u is projected onto that face before the test.
KINK_REL = 1e-4
#: Absolute tolerance on the gradient norm for the stationarity verdict. Stationary
#: minimisers measure 1e-14..2e-6 here; non-stationary ones 3e-4 and above.
STATIONARITY_TOL = 1e-5


@dataclass(frozen=True)
class Classification:
    """Verdict on one restricted minimiser (see :func:`classify`).

    Attributes:
        verdict: "global", "spurious" or "no_local_min".
        residual: minimal Clarke gradient norm of the recovered network; NaN when "global".
        num_neurons: neurons of the recovered network (after pruning); 0 when "global".
        num_kinks: (neuron, point) pairs on a kink; 0 when "global".
    """

    verdict: str
    residual: float
    num_neurons: int
    num_kinks: int


def classify(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    patterns: np.ndarray,
    signs: np.ndarray,
    U: np.ndarray,
    value: float,
    *,
    optimum: float,
    tolerance: float = 1e-7,
    stationarity_tol: float = STATIONARITY_TOL,
) -> Classification:
    """Classify the minimiser U of a restricted program (SCIENCE §4).

    Not global when ``value > optimum + tolerance``. Then the network is recovered from U:
    rows with ``||u|| <= PRUNE_REL max(1, max ||u||)`` are dropped as solver noise, each kept u
    is projected onto the faces ``x_k . u = 0`` it lies on within ``KINK_REL`` (relative), and
    ``w = u / sqrt(||u||)``, ``a = s sqrt(||u||)``. It is "spurious" when
    :func:`clarke_stationarity` finds it stationary within ``stationarity_tol``.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: λ.
        patterns: (k, n) bool, the signed cones of U's rows.
        signs: (k,) in {+1, -1}.
        U: (k, d) float64 restricted minimiser.
        value: the restricted program's value at U.
        optimum: the global optimum.
        tolerance: absolute tolerance on value - optimum.
        stationarity_tol: absolute tolerance on the gradient norm.

    Returns:
        Classification.
    """
    if value <= optimum + tolerance:
        return Classification("global", math.nan, 0, 0)
    W, a = _recover(X, np.asarray(U, dtype=np.float64), np.asarray(signs))
    result = clarke_stationarity(X, y, W, a, weight_decay, tol=stationarity_tol, kink_tol=1e-12)
    verdict = "spurious" if result.stationary else "no_local_min"
    return Classification(verdict, result.residual, result.num_neurons, result.num_kinks)


def _recover(X: np.ndarray, U: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prune, snap onto active faces, and map u -> (w, a); see :func:`classify`."""
    norms = np.linalg.norm(U, axis=1)
    keep = norms > PRUNE_REL * max(1.0, float(norms.max(initial=0.0)))
    U, signs, norms = U[keep], signs[keep], norms[keep]
    xnorm = np.linalg.norm(X, axis=1)
    near = np.abs(U @ X.T) <= KINK_REL * norms[:, None] * xnorm[None, :]  # (k, n)
    for i in np.flatnonzero(near.any(axis=1)):
        faces = X[near[i]]
        U[i] = U[i] - np.linalg.pinv(faces) @ (faces @ U[i])
    norms = np.linalg.norm(U, axis=1)
    root = np.sqrt(norms)
    return U / root[:, None], np.where(signs > 0, 1.0, -1.0) * root
