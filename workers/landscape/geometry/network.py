"""Two-layer ReLU networks: forward pass, the regularised loss, and the map from
the convex program's variables back to neurons, with the Carathéodory reduction to at
most n + 1 of them (shared/SCIENCE.md §1-§3).

Conventions: X is (n, d), W is (m, d) with rows w_j, a is (m,), and

    f(x) = sum_j a_j relu(w_j . x),
    L(W, a) = (1/n) sum_k (f(x_k) - y_k)^2 + weight_decay (||W||_F^2 + ||a||^2).
"""

from __future__ import annotations

import numpy as np

#: Neurons with |a_j| ||w_j|| at or below this are treated as absent (SCIENCE §6).
ACTIVE_NEURON_THRESHOLD = 1e-6


def forward(X: np.ndarray, W: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Evaluate the network on every row of X.

    Args:
        X: (n, d) float64 data.
        W: (m, d) float64 inner weights.
        a: (m,) float64 outer weights.

    Returns:
        (n,) float64 predictions f(x_k).
    """
    X, W, a = _as_arrays(X, W, a)
    return np.maximum(X @ W.T, 0.0) @ a


def loss(X: np.ndarray, y: np.ndarray, W: np.ndarray, a: np.ndarray, weight_decay: float) -> float:
    """The regularised loss L(W, a) of SCIENCE §1 (mean squared error, no 1/2).

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        W: (m, d) float64 inner weights.
        a: (m,) float64 outer weights.
        weight_decay: lambda >= 0, applied to both layers.

    Returns:
        L(W, a) as a Python float.
    """
    X, W, a = _as_arrays(X, W, a)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    err = forward(X, W, a) - y
    mse = float(err @ err) / len(y)
    return mse + weight_decay * (float(np.sum(W * W)) + float(a @ a))


def recover_network(
    U: np.ndarray, signs: np.ndarray, *, threshold: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the convex program's variables into neurons (SCIENCE §3).

    Each u with ||u|| > threshold becomes one neuron w = u / sqrt(||u||),
    a = s sqrt(||u||), so that |a| ||w|| = ||u|| and a w = s u. Inside the
    signed cone of u this neuron computes s relu(u . x) and costs
    weight_decay (||w||^2 + a^2) = 2 weight_decay ||u||, exactly the program's
    terms.

    Args:
        U: (k, d) float64, one u per signed cone.
        signs: (k,) entries in {+1, -1}, the sign of each signed cone.
        threshold: rows with ||u|| <= threshold are dropped.

    Returns:
        (W, a): W (m, d) float64 and a (m,) float64, m = number of kept rows.
    """
    U = np.atleast_2d(np.asarray(U, dtype=np.float64))
    signs = np.asarray(signs, dtype=np.float64).reshape(-1)
    if U.shape[0] != signs.shape[0]:
        raise ValueError(f"U has {U.shape[0]} rows but signs has {signs.shape[0]} entries")
    norms = np.linalg.norm(U, axis=1)
    keep = norms > threshold
    root = np.sqrt(norms[keep])
    W = U[keep] / root[:, None]
    a = np.sign(signs[keep]) * root
    return W, a


def signed_cones_of(
    X: np.ndarray, W: np.ndarray, a: np.ndarray, *, tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct signed cones (D(w_j), sign a_j) of a network's active neurons.

    A neuron is active when |a_j| ||w_j|| > 1e-6 (SCIENCE §6). Its pattern is
    D_k = 1[x_k . w_j > tol ||w_j|| ||x_k||], i.e. a preactivation counts as
    positive only beyond a relative tolerance, so that a neuron on a face of its
    cone (x_k . w = 0 up to rounding) gets the pattern of that face.

    Args:
        X: (n, d) float64 data.
        W: (m, d) float64 inner weights.
        a: (m,) float64 outer weights.
        tol: relative tolerance on the preactivations.

    Returns:
        (patterns, signs): patterns (k, n) bool and signs (k,) int8 in {+1, -1},
        the distinct pairs in lexicographic order of (pattern, sign); k = 0
        when no neuron is active.
    """
    X, W, a = _as_arrays(X, W, a)
    active = np.abs(a) * np.linalg.norm(W, axis=1) > ACTIVE_NEURON_THRESHOLD
    W, a = W[active], a[active]
    if len(a) == 0:
        return np.zeros((0, X.shape[0]), dtype=bool), np.zeros(0, dtype=np.int8)
    scale = np.linalg.norm(X, axis=1)[None, :] * np.linalg.norm(W, axis=1)[:, None]
    patterns = (W @ X.T - tol * scale) > 0.0
    signs = np.where(a > 0, 1, -1).astype(np.int8)
    keys = np.concatenate([patterns.astype(np.int8), signs[:, None]], axis=1)
    keys = np.unique(keys, axis=0)
    return keys[:, :-1].astype(bool), keys[:, -1].astype(np.int8)


def _as_arrays(X, W, a) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    W = np.asarray(W, dtype=np.float64).reshape(-1, X.shape[1])
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if W.shape[0] != a.shape[0]:
        raise ValueError(f"W has {W.shape[0]} rows but a has {a.shape[0]} entries")
    return X, W, a


def caratheodory(
    X: np.ndarray, U: np.ndarray, patterns: np.ndarray, signs: np.ndarray, *, rtol: float = 1e-12
) -> np.ndarray:
    """Rescale the u's of a solution so that at most n + 1 stay nonzero, at the same value.

    Scaling u_i by t_i >= 0 keeps it in its cone. The prediction sum_i t_i s_i D_i X u_i
    and the penalty sum_i t_i ||u_i|| are linear in t, so while the k columns
    [s_i D_i X u_i; ||u_i||] (n + 1 rows) are dependent, moving t along a null
    vector keeps both, hence the objective, until some t_i reaches 0 (SCIENCE.md
    section 3: the minimum is reached by at most n + 1 neurons).

    Memory is O(n k), never O(n^2): the (n + 1, k) matrix M of those columns is
    reduced once to the triangular factor R of its QR decomposition (r = min(n + 1, k)
    rows). For any subset of columns and any z, ||M z|| = ||R z||, and both have the
    same null vectors and singular values, so the steps below work on R alone.
    While more than r columns are alive, each step takes the null vector of the first
    r + 1 of them (an SVD of r x (r + 1), so O(k r^3) in all; an SVD of all alive
    columns took 130-170 s for 1880 interior-point rows at n = 17, this 0.2-0.3 s).

    Args:
        X: (n, d). U: (k, d) the u of each signed cone. patterns: (k, n) bool. signs: (k,).
        rtol: singular values below rtol * the largest count as zero, and a step along
            such a direction is taken only while it moves [prediction; penalty] by at most
            rtol relative. (At 1e-10, steps along such directions moved the prediction of
            1880 interior-point rows by 3e-10, enough to matter to the dual check of the
            returned network when 2 weight_decay is 1e-8; at 1e-12 it moved by 1e-14.)

    Returns:
        (k, d) float64: the rescaled U, with at most rank([..]) <= n + 1 nonzero rows.
    """
    X = np.asarray(X, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64).reshape(-1, X.shape[1])
    t = np.ones(len(U))
    alive = np.flatnonzero(np.linalg.norm(U, axis=1) > 0)
    if len(alive) <= 1:
        return U.copy()
    _, R = np.linalg.qr(_caratheodory_columns(X, U, patterns, signs))  # Q: (n + 1, r)
    while len(alive) > 1:
        block = alive[: R.shape[0] + 1]  # dependent whenever it is not all of alive
        _, sv, Vt = np.linalg.svd(R[:, block])
        if len(sv) >= len(block) and sv[-1] > rtol * sv[0]:
            break
        z = Vt[-1]
        z = z if z.min() < 0 else -z
        ratios = np.where(z < 0, t[block] / np.where(z < 0, -z, 1.0), np.inf)
        step = ratios.min()
        # A nearly null z moved far would change the prediction and penalty by
        # step ||M z||: stop unless that stays at rounding level.
        if step * np.linalg.norm(R[:, block] @ z) > rtol * np.linalg.norm(R[:, block] @ t[block]):
            break
        t[block] += step * z
        t[block[np.argmin(ratios)]] = 0.0
        alive = alive[t[alive] > 0]
    return U * np.clip(t, 0.0, None)[:, None]


def _caratheodory_columns(
    X: np.ndarray, U: np.ndarray, patterns: np.ndarray, signs: np.ndarray
) -> np.ndarray:
    """The (n + 1, k) matrix with columns [s_i D_i X u_i; ||u_i||], built in O(n k) memory."""
    n = X.shape[0]
    M = np.empty((n + 1, len(U)))
    M[:n] = X @ U.T
    M[:n] *= np.asarray(patterns, dtype=bool).reshape(len(U), n).T
    M[:n] *= np.asarray(signs, dtype=np.float64).reshape(1, -1)
    M[n] = np.linalg.norm(U, axis=1)
    return M
