"""Classifying a restricted minimiser: global, spurious, or no local minimum (SCIENCE §4).

Every tolerance here is absolute and meant for data at unit scale (``scaling.py``): the
census and ``verdicts.VerdictJudge`` call :func:`classify` on (X̂, ŷ, λ̂), with the optimum and
the loss tolerance divided by ``Scaling.value``, so its verdicts do not depend on the units of
X and y (gradients of L scale by ``Scaling.gradient``, c^1.5 when y and λ are multiplied by
c, and so would an absolute gradient tolerance in the user's units).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .polish import SUPPORT_REL, polish, support
from .small import row_norms
from .stationarity import clarke_stationarity

__all__ = [
    "FALLBACK_KINK_REL",
    "FALLBACK_STATIONARITY_TOL",
    "KINK_REL",
    "PRUNE_REL",
    "STATIONARITY_TOL",
    "Classification",
    "classify",
]

# The interior-point solution (Clarabel at 1e-10) is accurate to only ~1e-5 relative in u:
# constraints active with a zero multiplier (common on orthogonal data) sit at a slack of order
# sqrt(mu). So classify first polishes it to the exact minimiser (convex.polish: Newton on the
# identified faces, a primal active set, a KKT and dual check), and tests that point.
#
# Measured (tests/workers/landscape/test_census_polish.py, and 4234 minimisers of 2117 non-global
# cones, each solved by census.certify_samples and by convex.solve_program: teacher
# (n, d) = (4, 8), (5, 8), (6, 10), (8, 3), (10, 4), orthogonal (5, 8), (6, 6), theorem2
# d = 5, 6, at λ = 0.01, widths 3-120; teacher (6, 10) at λ = 0.1 and 1e-3; data with
# duplicated points, a point at the origin, collinear points; and a teacher (7, 4) with X
# scaled by 30, y by 100, λ = 1). Every point polished.
# - Clarke residual of stationary minimisers: 0..9.3e-15 at unit scale, up to 5.1e-12 on the
#   scaled data (before polishing: up to 7.9e-6, and 1.2e-5..3.3e-3 on the scaled data, where
#   the old test called 15 of 24 stationary points "no_local_min"). Non-stationary: 2.9e-5 and
#   above (1.0e-4 at λ = 0.01), the same before and after.
# - |x_k . u| / (||x_k|| ||u||) after polishing: at most 5.3e-16 on the identified faces; off
#   them 7.7e-5 and above, bar one constraint tight to 2e-16 (zero multiplier, not identified).
#: Neurons with ||u|| at or below this times max(1, max ||u||) are solver noise and dropped.
PRUNE_REL = SUPPORT_REL
#: A preactivation of a polished point with |x_k . u| <= KINK_REL ||x_k|| ||u|| lies on the
#: face x_k . u = 0: u is projected onto that face before the test.
KINK_REL = 1e-10
#: Absolute tolerance on the gradient norm for the stationarity verdict of a polished point.
STATIONARITY_TOL = 1e-9
#: KINK_REL for an interior point that could not be polished (the former value).
FALLBACK_KINK_REL = 1e-4
#: STATIONARITY_TOL for an interior point that could not be polished (the former value:
#: stationary minimisers measured up to 7.9e-6 unpolished, non-stationary 2.9e-5 and above).
FALLBACK_STATIONARITY_TOL = 1e-5


@dataclass(frozen=True)
class Classification:
    """Verdict on one restricted minimiser (see :func:`classify`).

    Attributes:
        verdict: "global", "spurious" or "no_local_min".
        residual: minimal Clarke gradient norm of the recovered network; NaN when "global".
        num_neurons: neurons of the recovered network (after pruning); 0 when "global".
        num_kinks: (neuron, point) pairs on a kink; 0 when "global".
        polished: whether the test ran on the polished minimiser (False when "global").
        network: (W (p, d), a (p,)), the network that was tested (balanced, one neuron per
            nonzero row, before merging); None when "global".
    """

    verdict: str
    residual: float
    num_neurons: int
    num_kinks: int
    polished: bool = False
    network: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)


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
    stationarity_tol: float | None = None,
    dual_bounds: np.ndarray | None = None,
    timings: dict[str, float] | None = None,
) -> Classification:
    """Classify the minimiser U of a restricted program (SCIENCE §4).

    Not global when ``value > optimum + tolerance``. Then U is polished to the exact minimiser
    (:func:`convex.polish.polish`), whose rows are snapped onto the faces ``x_k . u = 0`` they
    lie on within ``KINK_REL``; when the polish fails, U itself is used as before: rows with
    ``||u|| <= PRUNE_REL max(1, max ||u||)`` are dropped as solver noise and each kept u is
    projected onto the faces it lies on within ``FALLBACK_KINK_REL``. The network is
    ``w = u / sqrt(||u||)``, ``a = s sqrt(||u||)``, and it is "spurious" when
    :func:`clarke_stationarity` finds it stationary within ``stationarity_tol``.

    Args:
        X: (n, d) float64 data, at unit scale (module docstring).
        y: (n,) float64 labels, at unit scale.
        weight_decay: λ.
        patterns: (k, n) bool, the signed cones of U's rows.
        signs: (k,) in {+1, -1}.
        U: (k, d) float64 restricted minimiser.
        value: the restricted program's value at U.
        optimum: the global optimum.
        tolerance: absolute tolerance on value - optimum (``scaling.loss_tolerance`` divided
            by ``Scaling.value``).
        stationarity_tol: absolute tolerance on the gradient norm; by default
            ``STATIONARITY_TOL`` for a polished point, ``FALLBACK_STATIONARITY_TOL`` otherwise.
        dual_bounds: (k,) optional upper bounds on the rows' dual values at U's residual,
            passed to the polish (``polish(bounds=...)``); they change no verdict, only which
            rows its dual check projects.
        timings: when given, the seconds spent in the polish and in the stationarity test are
            added to its "polish" and "stationarity" entries.

    Returns:
        Classification.
    """
    if value <= optimum + tolerance:
        return Classification("global", math.nan, 0, 0)
    U = np.asarray(U, dtype=np.float64)
    start = time.perf_counter()
    found = polish(X, y, weight_decay, patterns, signs, U, value, bounds=dual_bounds)
    polished = time.perf_counter()
    if found is not None:
        W, a = _balanced(X, found.U, found.signs, KINK_REL)
        default = STATIONARITY_TOL
    else:
        keep = support(U)  # the polish's rule: PRUNE_REL is its SUPPORT_REL
        W, a = _balanced(X, U[keep], np.asarray(signs)[keep], FALLBACK_KINK_REL)
        default = FALLBACK_STATIONARITY_TOL
    tol = default if stationarity_tol is None else stationarity_tol
    result = clarke_stationarity(X, y, W, a, weight_decay, tol=tol, kink_tol=1e-12)
    if timings is not None:
        timings["polish"] = timings.get("polish", 0.0) + polished - start
        timings["stationarity"] = timings.get("stationarity", 0.0) + time.perf_counter() - polished
    verdict = "spurious" if result.stationary else "no_local_min"
    return Classification(
        verdict, result.residual, result.num_neurons, result.num_kinks, found is not None, (W, a)
    )


def _balanced(
    X: np.ndarray, U: np.ndarray, signs: np.ndarray, kink_rel: float
) -> tuple[np.ndarray, np.ndarray]:
    """Snap each row onto the faces it lies on within ``kink_rel``, then map u -> (w, a)."""
    U = U.copy()
    norms = row_norms(U)
    xnorm = row_norms(X)
    near = np.abs(U @ X.T) <= kink_rel * norms[:, None] * xnorm[None, :]  # (k, n)
    for i in np.nonzero(near.any(axis=1))[0]:
        faces = np.ascontiguousarray(X[near[i]], dtype=np.float64)
        U[i] = U[i] - _pinv(faces.shape, faces.tobytes()) @ (faces @ U[i])
    root = np.sqrt(row_norms(U))
    return U / root[:, None], np.where(signs > 0, 1.0, -1.0) * root


@functools.lru_cache(maxsize=4096)
def _pinv(shape: tuple[int, ...], data: bytes) -> np.ndarray:
    """``np.linalg.pinv`` of the rows given as bytes, cached (a census snaps many neurons of
    one dataset onto the same few faces); read-only."""
    inverse = np.linalg.pinv(np.frombuffer(data, dtype=np.float64).reshape(shape))
    inverse.flags.writeable = False
    return inverse
