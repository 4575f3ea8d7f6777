"""What a trained network is worth, after training (SCIENCE §1, §3, §6).

Pure functions of a run's final weights: its error on held-out points, its
parameter norm against the optimal network's, and what the zero network is (the
limit of a run that collapsed).

Norms. Rescaling a neuron, w_j -> c w_j and a_j -> a_j / c (c > 0), leaves f
unchanged, and ||w_j||^2 + a_j^2 >= 2 |a_j| ||w_j||, with equality when the neuron
is balanced (||w_j|| = |a_j|; every stationary point of L is balanced). The
optimal network recovered from the convex program (network.recover_network) has
one balanced neuron per support cone, w_i = u_i / sqrt(||u_i||) and
a_i = ±sqrt(||u_i||), so

    ||θ*||^2 = sum_i (||w_i||^2 + a_i^2) = 2 sum_i ||u_i|| = (optimum - mse*) / λ,

the last because optimum = mse* + 2λ sum_i ||u_i|| (SCIENCE §3), with mse* the
optimal network's mean squared error. ``optimal_norm_sq`` computes it as
2 sum_j |a_j| ||w_j||, which is the same number for the balanced network and
does not depend on how a given optimal network is scaled.
"""

from __future__ import annotations

import numpy as np

from workers.landscape.geometry.network import forward

__all__ = [
    "held_out_mse",
    "norm_ratio",
    "optimal_norm_sq",
    "param_norm_sq",
    "zero_network_verdict",
]


def held_out_mse(W: np.ndarray, a: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Mean squared error of the network (W, a) on test points (no 1/2, as in SCIENCE §1).

    Args:
        W: (m, d) float64 inner weights. a: (m,) float64 outer weights.
        X_test: (t, d) float64 test inputs, t >= 1. y_test: (t,) float64 labels.

    Returns:
        (1/t) sum_k (f(x_k) - y_k)^2; NaN when the weights are not finite.
    """
    y_test = np.asarray(y_test, dtype=np.float64).reshape(-1)
    if len(y_test) == 0:
        raise ValueError("need at least one test point")
    with np.errstate(invalid="ignore", over="ignore"):
        err = forward(X_test, W, a) - y_test
        return float(np.mean(err * err))


def param_norm_sq(W: np.ndarray, a: np.ndarray) -> float:
    """||θ||^2 = ||W||_F^2 + ||a||^2 of a network as it is (not rebalanced)."""
    W, a = np.asarray(W, dtype=np.float64), np.asarray(a, dtype=np.float64)
    return float(np.sum(W * W) + np.sum(a * a))


def optimal_norm_sq(W_opt: np.ndarray, a_opt: np.ndarray) -> float:
    """||θ*||^2 of the optimal network: 2 sum_j |a_j| ||w_j|| (= 2 sum_i ||u_i||).

    Args:
        W_opt: (k, d) float64, a_opt: (k,) float64: the optimal network's neurons
            (convex.Optimum.W and .a, or the optimum output's "neurons").

    Returns:
        The squared norm of the balanced optimal network, (optimum - mse*) / λ.
    """
    W_opt, a_opt = np.asarray(W_opt, dtype=np.float64), np.asarray(a_opt, dtype=np.float64)
    if a_opt.size == 0:  # the zero network ("neurons": [] in the optimum's output)
        return 0.0
    W_opt = W_opt.reshape(len(a_opt), -1)
    return float(2.0 * np.sum(np.abs(a_opt) * np.linalg.norm(W_opt, axis=1)))


def norm_ratio(W: np.ndarray, a: np.ndarray, W_opt: np.ndarray, a_opt: np.ndarray) -> float:
    """||θ||^2 / ||θ*||^2: the run's parameter norm over the optimal network's.

    1 for a run at the global minimum (its neurons are balanced); a spurious
    point's ratio says whether it sits at larger or smaller weights than the
    optimum.

    Args:
        W: (m, d), a: (m,): the run's final weights.
        W_opt: (k, d), a_opt: (k,): the optimal network (see ``optimal_norm_sq``).

    Returns:
        The ratio; NaN when the optimal network is the zero network (its norm
        is 0) or the run's weights are not finite.
    """
    reference = optimal_norm_sq(W_opt, a_opt)
    value = param_norm_sq(W, a)
    if not (reference > 0.0 and np.isfinite(value)):
        return float("nan")
    return value / reference


def zero_network_verdict(y: np.ndarray, optimum: float, tolerance: float) -> str:
    """What the zero network is, and so where a collapsed run ends.

    The zero network is stationary with loss mean(y^2). Near it,
    L(εθ) = mean(y^2) + ε^2 sum_j [λ (||w_j||^2 + a_j^2) - (2/n) a_j <y, relu(X w_j)>]
    + O(ε^4), so it is a local minimum exactly when no neuron's bracket can be
    negative, i.e. when (2/n) max over unit w of |<y, relu(X w)>| <= 2λ: the dual
    certificate of SCIENCE §3 at the residual -y, which makes it a global
    minimum. So the zero network is either a global minimum or a saddle point,
    never a spurious local minimum.

    Args:
        y: (n,) labels. optimum: the certified global optimum. tolerance: as in
            the verdicts (absolute, on losses).

    Returns:
        "global_minimum" when mean(y^2) - optimum <= tolerance, else "saddle_point".
    """
    y = np.asarray(y, dtype=np.float64)
    return "global_minimum" if float(np.mean(y * y)) - optimum <= tolerance else "saddle_point"
