"""First-order (Clarke) stationarity of a two-layer ReLU network (SCIENCE §4).

The loss is ``L(W, a) = (1/n) ||relu(X W^T) a - y||^2 + weight_decay (||W||_F^2 + ||a||^2)``.
Away from kinks it is smooth, with gradient

    dL/da_j = sum_k r_k relu(w_j . x_k) + 2 weight_decay a_j,
    dL/dw_j = a_j sum_k r_k relu'(w_j . x_k) x_k + 2 weight_decay w_j,

where ``r = (2/n) (prediction - y)``. Where ``|w_j . x_k| <= kink_tol`` the derivative
``relu'`` may take any value in [0, 1] (Clarke subdifferential). The point is stationary when
some choice of those values makes the gradient vanish within ``tol``.

The choice enters only the ``w_j`` block of neuron ``j``, so the small convex QP
``min ||grad||`` over the box separates into one bounded least-squares problem per neuron
with kinks, solved exactly by the active-set BVLS method (``scipy.optimize.lsq_linear``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

__all__ = ["StationarityResult", "clarke_stationarity", "merge_neurons"]


@dataclass(frozen=True)
class StationarityResult:
    """Outcome of :func:`clarke_stationarity`.

    Attributes:
        stationary: True when ``residual <= tol``.
        residual: the smallest gradient norm over all Clarke choices at kinks, after merging.
        num_neurons: neurons left after merging neurons of the same signed cone.
        num_kinks: pairs (neuron, data point) with ``|w_j . x_k| <= kink_tol`` and ``a_j != 0``.
    """

    stationary: bool
    residual: float
    num_neurons: int = 0
    num_kinks: int = 0


def merge_neurons(
    X: np.ndarray, W: np.ndarray, a: np.ndarray, *, kink_tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Merge neurons that share a signed cone into one balanced neuron.

    Neurons are grouped by ``(1[X w_j > kink_tol], sign(a_j))``. A group of two or more
    neurons with ``a_j != 0`` and ``w_j != 0`` is replaced by ``u = sum_j |a_j| w_j`` as
    ``w = u / sqrt(||u||)``, ``a = s sqrt(||u||)``; the network function is unchanged (up to
    ``kink_tol`` at kinks). Single neurons and neurons with ``a_j = 0`` or ``w_j = 0`` are kept
    as they are, so an unbalanced lone neuron is judged as given.

    Args:
        X: (n, d) float64 data.
        W: (m, d) float64 inner weights.
        a: (m,) float64 outer weights.
        kink_tol: activations within this of 0 count as inactive for the grouping.

    Returns:
        (W', a'): (m', d) and (m',) with m' <= m, kept neurons first in their original order.
    """
    W = np.asarray(W, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    alive = (a != 0) & np.any(W != 0, axis=1)
    keys = np.concatenate([(kink_tol < X @ W.T).T, np.sign(a)[:, None] > 0], axis=1)
    groups: dict[bytes, list[int]] = {}
    for j in np.flatnonzero(alive):
        groups.setdefault(keys[j].tobytes(), []).append(int(j))
    merged = [g for g in groups.values() if len(g) > 1]
    if not merged:
        return W, a
    drop = np.zeros(len(a), dtype=bool)
    new_w, new_a = [], []
    for g in merged:
        drop[g] = True
        u = np.abs(a[g]) @ W[g]
        scale = np.sqrt(np.linalg.norm(u))
        new_w.append(u / scale)
        new_a.append(np.sign(a[g[0]]) * scale)
    return (
        np.concatenate([W[~drop], np.array(new_w)]),
        np.concatenate([a[~drop], np.array(new_a)]),
    )


def clarke_stationarity(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    a: np.ndarray,
    weight_decay: float,
    *,
    tol: float = 1e-6,
    kink_tol: float = 1e-9,
) -> StationarityResult:
    """Test Clarke stationarity of ``L`` at ``(W, a)``.

    Neurons of the same signed cone are merged first (:func:`merge_neurons`). Then the
    gradient norm is minimised over ``relu'(w_j . x_k) in [0, 1]`` at every kink
    ``|w_j . x_k| <= kink_tol``; elsewhere ``relu'`` is 1 above 0 and 0 below.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        W: (m, d) float64 inner weights.
        a: (m,) float64 outer weights.
        weight_decay: the λ of SCIENCE §1, >= 0.
        tol: absolute tolerance on the Euclidean norm of the full gradient (all of W and a).
        kink_tol: absolute tolerance on ``|w_j . x_k|`` under which a pair counts as a kink.

    Returns:
        StationarityResult with the minimal gradient norm as ``residual``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    W, a = merge_neurons(X, W, a, kink_tol=kink_tol)
    n = X.shape[0]
    Z = X @ W.T  # (n, m)
    H = np.maximum(Z, 0.0)
    r = (2.0 / n) * (H @ a - y)
    grad_a = H.T @ r + 2.0 * weight_decay * a
    kinks = (np.abs(Z) <= kink_tol) & (a != 0)[None, :]
    slope = (kink_tol < Z).astype(np.float64)
    grad_w = a[:, None] * ((slope * r[:, None]).T @ X) + 2.0 * weight_decay * W
    sq = float(grad_a @ grad_a)
    for j in range(len(a)):
        ks = np.flatnonzero(kinks[:, j] & (r != 0))
        if ks.size:
            sq += _min_block_norm_sq(grad_w[j], (a[j] * r[ks])[:, None] * X[ks])
        else:
            sq += float(grad_w[j] @ grad_w[j])
    residual = float(np.sqrt(sq))
    return StationarityResult(
        stationary=residual <= tol,
        residual=residual,
        num_neurons=len(a),
        num_kinks=int(kinks.sum()),
    )


def _min_block_norm_sq(base: np.ndarray, directions: np.ndarray) -> float:
    """``min ||base + directions^T theta||^2`` over ``theta in [0, 1]^K``.

    Args:
        base: (d,) gradient of one neuron's ``w`` with every kink derivative set to 0.
        directions: (K, d) the change ``a_j r_k x_k`` per unit of kink derivative.
    """
    # The unconstrained least-squares minimiser, when it lies in the box, is the box's.
    theta = np.linalg.lstsq(directions.T, -base, rcond=None)[0]
    if np.all((theta >= 0.0) & (theta <= 1.0)):
        rest = base + directions.T @ theta
        return float(rest @ rest)
    fit = lsq_linear(directions.T, -base, bounds=(0.0, 1.0), method="bvls", tol=1e-12)
    rest = base + directions.T @ fit.x
    return float(rest @ rest)
