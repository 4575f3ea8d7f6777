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
with kinks, solved exactly: in closed form for one or two kinks, else by the active-set BVLS
method (``scipy.optimize.lsq_linear``).

Stationarity at a fixed width can hide a saddle of the loss over all widths (SCIENCE §8, last
paragraph): a network with a zero or dead neuron, or two neurons in one signed cone (which can
shift their mass into one and free the other at no cost), can grow a small new neuron in any
signed cone (D, s). To first order that neuron, u = t e with ||e|| = 1 in the cone, changes L
by t (2 λ - (-s e . X^T D r)), so L drops iff some signed cone's projection norm
``||proj_K(-s X^T D r)||`` (the dual quantity of SCIENCE §3, ``certificate.py``) exceeds 2 λ.
:func:`birth_test` reports ``birth_margin = 2 λ - max`` over all signed cones, and calls the
point ``strict`` unless that margin is negative and a neuron is free (:func:`free_neuron`).

The tests here use absolute tolerances (``tol``, ``kink_tol`` and the 1e-6 of
``network.signed_cones_of``) meant for data at unit scale (``scaling.py``): callers that want
answers independent of the units of X and y (the census, ``verdicts.VerdictJudge``) pass the
data, weights and λ at unit scale and map the results back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from ..geometry.network import forward, signed_cones_of
from .certificate import pattern_sums, signed_values
from .small import lstsq, row_norms

__all__ = [
    "BIRTH_RTOL",
    "BirthTest",
    "StationarityResult",
    "birth_test",
    "clarke_stationarity",
    "free_neuron",
    "largest_cone_value",
    "merge_neurons",
]

#: A birth margin counts as negative below -BIRTH_RTOL 2 λ. Signed cones that carry a neuron
#: sit at 2 λ exactly at a stationary point: measured |value / 2 λ - 1| <= 2.5e-13 for the 214
#: neurons of 126 polished spurious census minimisers (teacher (4, 8), (6, 10), (6, 4) and
#: orthogonal (5, 8), λ = 0.01), and <= 1e-12 at gradient descent's end points on theorem2
#: (d = 4, λ = 1e-4, α = 1e-3, grad_tol 1e-16), where the cone a new neuron would grow in was
#: 21 % above 2 λ.
BIRTH_RTOL = 1e-6
#: Patterns whose exact cone values :func:`largest_cone_value` computes first; each further
#: block is twice as large, up to ``_MAX_BLOCK``.
_BLOCK = 64
_MAX_BLOCK = 4096


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
    for j in np.nonzero(alive)[0]:
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
    live_kinks = (kinks & (r != 0)[:, None]).T  # (m, n)
    for j in range(len(a)):
        ks = np.nonzero(live_kinks[j])[0]
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
    if len(directions) <= 2:
        return _min_box_norm_sq_small(base, directions)
    # The unconstrained least-squares minimiser, when it lies in the box, is the box's.
    theta = lstsq(directions.T, -base)
    if ((theta >= 0.0) & (theta <= 1.0)).all():
        rest = base + directions.T @ theta
        return float(rest @ rest)
    fit = lsq_linear(directions.T, -base, bounds=(0.0, 1.0), method="bvls", tol=1e-12)
    rest = base + directions.T @ fit.x
    return float(rest @ rest)


def _min_box_norm_sq_small(base: np.ndarray, directions: np.ndarray) -> float:
    """:func:`_min_block_norm_sq` for one or two kinks, in closed form.

    The objective is a convex quadratic in theta. With one kink its minimiser over [0, 1] is
    the clipped unconstrained one. With two, the box's minimiser is the unconstrained one
    when that lies in the box; otherwise it lies on an edge (a line of minimisers that
    crosses the box also crosses its boundary), where one theta is 0 or 1 and the other is
    the clipped minimiser along it. Every candidate is feasible, so the smallest value over
    them is the minimum.
    """

    def along(rest: np.ndarray, v: np.ndarray) -> np.ndarray:
        vv = float(v @ v)
        theta = min(1.0, max(0.0, -float(rest @ v) / vv)) if vv > 0.0 else 0.0
        return rest + theta * v

    if len(directions) == 1:
        rest = along(base, directions[0])
        return float(rest @ rest)
    v, w = directions
    candidates = [along(base + fixed * a, b) for a, b in ((v, w), (w, v)) for fixed in (0.0, 1.0)]
    theta = lstsq(directions.T, -base)  # backward stable
    if ((theta >= 0.0) & (theta <= 1.0)).all():
        candidates.append(base + directions.T @ theta)
    return min(float(rest @ rest) for rest in candidates)


def largest_cone_value(
    X: np.ndarray,
    residual: np.ndarray,
    patterns: np.ndarray,
    *,
    witnesses: np.ndarray | None = None,
) -> float:
    """The largest ``||proj_K(-s X^T D r)||`` over every signed cone (D, s) of ``patterns``.

    ``||X^T D r||`` bounds both signs' values of a pattern from above, so patterns are taken
    in decreasing order of that bound, in blocks of ``_BLOCK`` doubling up to ``_MAX_BLOCK``,
    and the search stops once the next bound is at most the largest exact value found. So on
    large pattern sets only the patterns that can matter are projected
    (``certificate.signed_values``, exact to 1e-11 relative above its floor, here the best
    value so far): 19,840 patterns of teacher (40, 4) took 0.01-0.03 s this way, 0.8 s all
    projected, at the optimum's residual and at the zero network's.

    ``witnesses`` start the search higher: a unit vector e in the closed cone of D bounds
    both signs' values from below by ``|e . X^T D r|``, so the largest such bound is a floor
    that only larger values need to beat (at a network's own neurons, which lie in their
    cones, it is about 2 λ at a stationary point, and most patterns fall below it).

    Args:
        X: (n, d) float64 data.
        residual: (n,) float64, r = (2/n)(prediction - y).
        patterns: (P, n) bool, every activation pattern of X.
        witnesses: (q, d) optional vectors (e.g. a network's W); zero rows are ignored.

    Returns:
        The largest value (0.0 when there are no patterns).
    """
    X = np.asarray(X, dtype=np.float64)
    r = np.asarray(residual, dtype=np.float64).reshape(-1)
    patterns = np.asarray(patterns, dtype=bool).reshape(-1, X.shape[0])
    G = pattern_sums(patterns, r[:, None] * X)  # (P, d)
    bound = row_norms(G)
    order = np.argsort(-bound, kind="stable")
    best, start, block = _witnessed(X, G, patterns, witnesses), 0, _BLOCK
    while start < len(order) and bound[order[start]] > best:
        idx = order[start : start + block]
        values = signed_values(X, patterns[idx], G[idx], best)  # exact above best
        best = max(best, float(values.max()))
        start, block = start + block, min(2 * block, _MAX_BLOCK)
    return best


def _witnessed(X, G, patterns, witnesses) -> float:
    """The largest ``|e . G_D|`` over unit witnesses e in the closed cone of pattern D (a
    lower bound on the largest value, see :func:`largest_cone_value`); 0.0 without any."""
    if witnesses is None:
        return 0.0
    W = np.asarray(witnesses, dtype=np.float64).reshape(-1, X.shape[1])
    norms = row_norms(W)
    E = W[norms > 0] / norms[norms > 0, None]
    if len(E) == 0:
        return 0.0
    Z = E @ X.T  # (q, n)
    inside = np.all(np.where(patterns[:, None, :], Z >= 0.0, Z <= 0.0), axis=2)  # (P, q)
    return float(np.max(np.where(inside, np.abs(G @ E.T), 0.0), initial=0.0))


def free_neuron(X: np.ndarray, W: np.ndarray, a: np.ndarray, *, width: int | None = None) -> bool:
    """Whether a network of width m has a neuron that could grow in another signed cone.

    True when its distinct signed cones of active, live neurons are fewer than m: some neuron
    has ``|a_j| ||w_j|| <= 1e-6`` (``network.signed_cones_of``; the zero network has only
    such neurons), or is inactive on every data point, or shares its signed cone with another
    (their mass can move into one of them at constant loss, freeing the other).

    Args:
        X: (n, d) float64 data (at unit scale; the 1e-6 is absolute).
        W: (k, d) float64 inner weights.
        a: (k,) float64 outer weights.
        width: m, when the network stands for a wider one whose other neurons are zero
            (default k).
    """
    patterns, _ = signed_cones_of(X, W, a)
    m = len(np.asarray(a).reshape(-1)) if width is None else width
    return int(np.count_nonzero(patterns.any(axis=1))) < m


@dataclass(frozen=True)
class BirthTest:
    """Outcome of :func:`birth_test`.

    Attributes:
        margin: 2 λ minus the largest signed cone's projection norm at the point's residual,
            in the units of λ; negative iff a small new neuron in that cone lowers L.
        strict: False when ``margin < -BIRTH_RTOL 2 λ`` and a neuron is free to grow
            (:func:`free_neuron`); the point is then a saddle of L at its width.
    """

    margin: float
    strict: bool


def birth_test(
    X: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    a: np.ndarray,
    weight_decay: float,
    patterns: np.ndarray,
    *,
    width: int | None = None,
) -> BirthTest:
    """Whether a new neuron can grow at ``(W, a)`` (module docstring; SCIENCE §3 and §8).

    Args:
        X: (n, d) float64 data, at unit scale.
        y: (n,) float64 labels.
        W: (k, d) float64 inner weights.
        a: (k,) float64 outer weights.
        weight_decay: λ > 0.
        patterns: (P, n) bool, every activation pattern of X (``patterns.enumerate_patterns``).
        width: m, as in :func:`free_neuron`.

    Returns:
        BirthTest.
    """
    X = np.asarray(X, dtype=np.float64)
    residual = (2.0 / X.shape[0]) * (forward(X, W, a) - np.asarray(y, dtype=np.float64))
    margin = 2.0 * weight_decay - largest_cone_value(X, residual, patterns, witnesses=W)
    negative = margin < -BIRTH_RTOL * 2.0 * weight_decay
    return BirthTest(margin, not (negative and free_neuron(X, W, a, width=width)))
