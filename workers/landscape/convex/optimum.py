"""The certified global optimum over all widths (shared/SCIENCE.md §3-§4).

``global_optimum`` solves the program of ``program.py`` over all signed cones, either
directly ("full") or by column generation ("colgen", see ``colgen.py``), and certifies the
network it returns with the dual check of ``certificate.py``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ..geometry.network import recover_network
from ..geometry.scaling import Scaling
from .certificate import dual_violations, gap_bound
from .colgen import column_generation, packed_patterns
from .program import AUTO_COLGEN_MIN_PATTERNS, network_solution, residual_of, solve_program


@dataclass(frozen=True)
class Optimum:
    """A certified global optimum of L over all widths.

    Every field describes the returned network (W, a): its loss, its outputs, and the
    dual check and gap bound at its own residual.

    Attributes:
        value: L(W, a), the optimal value of the convex program (= min L) to solver
            tolerance: within ``gap_bound`` of it from above.
        W: (m, d) float64 inner weights of the recovered network, m <= n + 1.
        a: (m,) float64 outer weights; loss(X, y, W, a, weight_decay) equals
            ``value`` to rounding.
        num_patterns: P, the number of patterns priced (as given or enumerated).
        num_signed_cones: 2 P.
        max_dual_violation: max(0, max over all signed cones of the projection
            norm - 2 weight_decay) at the residual r = (2/n)(f(X) - y) of (W, a);
            0 up to solver tolerance certifies optimality.
        method: "full" or "colgen".
        prediction: (n,) float64, f(X) of (W, a).
        support_patterns: (m, n) bool, the signed cone of each neuron (row j is
            neuron j of W and a).
        support_signs: (m,) int8 in {+1, -1}, the sign of each a_j.
        iterations: number of restricted solves (1 for "full").
        gap_bound: a certified upper bound on value - (global minimum), from
            weak duality at the dual point r / (1 + max_dual_violation / (2 lambda)).
        U: (m, d) float64, |a_j| w_j: the program's u for each support signed cone.
        working_set_size: signed cones in the final program solved.
        seconds: wall time.
    """

    value: float
    W: np.ndarray
    a: np.ndarray
    num_patterns: int
    num_signed_cones: int
    max_dual_violation: float
    method: str
    prediction: np.ndarray
    support_patterns: np.ndarray
    support_signs: np.ndarray
    iterations: int
    gap_bound: float
    U: np.ndarray
    working_set_size: int
    seconds: float


def global_optimum(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    *,
    patterns: np.ndarray | None = None,
    method: str = "auto",
    tol: float = 1e-7,
    gap_tol: float = 1e-9,
) -> Optimum:
    """The global minimum of L over all widths, with its dual certificate.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: lambda > 0.
        patterns: (P, n) bool, all activation patterns of X, or the same packed
            ((P, ceil(n / 8)) uint8, ``patterns.enumerate_packed``); defaults to
            ``patterns.enumerate_packed(X)``.
        method: "full" (one program over all 2P signed cones), "colgen"
            (column generation, never builds the full program) or "auto"
            ("colgen" when P > AUTO_COLGEN_MIN_PATTERNS).
        tol: column generation stops when no signed cone's value exceeds
            2 weight_decay + tol, at unit scale (``scaling.Scaling``: the program is
            solved on X / max ||x_k|| and y / rms(y), and its answer mapped back) ...
        gap_tol: ... and, tighter when needed, 2 weight_decay + eps with
            eps = gap_tol * value / sum_i ||u_i||, so that the optimality gap is
            at most ~gap_tol relative (see ``colgen.column_generation``).

    Returns:
        Optimum, in the units of X and y. ``max_dual_violation`` is computed exactly
        over all signed cones in both methods, at the returned network's residual.
    """
    start = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if weight_decay <= 0:
        raise ValueError("weight_decay must be positive")
    if patterns is None:
        from ..geometry.patterns import enumerate_packed

        patterns = enumerate_packed(X)
    patterns = packed_patterns(patterns, X.shape[0])
    if method == "auto":
        method = "colgen" if len(patterns) > AUTO_COLGEN_MIN_PATTERNS else "full"
    scaling = Scaling.of(X, y)
    X, y, weight_decay = scaling.data(X, y, weight_decay)
    if method == "full":
        patterns = np.unpackbits(patterns, axis=1, count=X.shape[0]).astype(bool)
        cones = np.repeat(patterns, 2, axis=0)
        signs = np.tile(np.array([1, -1], dtype=np.int8), len(patterns))
        solution = network_solution(
            X, y, weight_decay, solve_program(X, y, weight_decay, cones, signs)
        )
        iterations, max_value = 1, None
    elif method == "colgen":
        solution, iterations, max_value = column_generation(
            X, y, weight_decay, patterns, tol=tol, gap_tol=gap_tol
        )
    else:
        raise ValueError(f"unknown method {method!r}")
    floor = 2.0 * weight_decay
    residual = residual_of(solution.prediction, y)
    if max_value is None:
        max_value = _max_value(X, residual, patterns, floor)
    violation = max(0.0, max_value - floor)
    gap = gap_bound(solution.value, residual, y, violation / floor)
    unit = _optimum(solution, len(patterns), violation, gap, method, iterations, start)
    return _in_units(unit, scaling)


def _max_value(X: np.ndarray, residual: np.ndarray, patterns: np.ndarray, floor: float) -> float:
    """The largest value over all signed cones if above ``floor`` (``dual_violations``), for
    patterns bool or packed, unpacked 65,536 at a time."""
    if patterns.dtype == bool:
        return float(dual_violations(X, residual, patterns, floor=floor).max(initial=0.0))
    top = 0.0
    for start in range(0, len(patterns), 1 << 16):
        chunk = np.unpackbits(patterns[start : start + (1 << 16)], axis=1, count=X.shape[0])
        values = dual_violations(X, residual, chunk.astype(bool), floor=floor)
        top = max(top, float(values.max(initial=0.0)))
    return top


def _in_units(unit: Optimum, scaling: Scaling) -> Optimum:
    """An optimum of the unit-size problem, in the units of the user's data."""
    return dataclasses.replace(
        unit,
        value=unit.value * scaling.value,
        W=unit.W * scaling.weights,
        a=unit.a * scaling.weights,
        max_dual_violation=unit.max_dual_violation * scaling.dual,
        prediction=unit.prediction * scaling.y,
        gap_bound=unit.gap_bound * scaling.value,
        U=unit.U * scaling.cone,
    )


def _optimum(solution, num_patterns, violation, gap, method, iterations, start) -> Optimum:
    """The Optimum of a ``network_solution``: its nonzero rows are the neurons."""
    support = np.linalg.norm(solution.U, axis=1) > 0
    U = solution.U[support]
    W, a = recover_network(U, solution.signs[support], threshold=0.0)
    return Optimum(
        value=solution.value,
        W=W,
        a=a,
        num_patterns=num_patterns,
        num_signed_cones=2 * num_patterns,
        max_dual_violation=violation,
        method=method,
        prediction=solution.prediction,
        support_patterns=solution.patterns[support],
        support_signs=solution.signs[support],
        iterations=iterations,
        gap_bound=gap,
        U=U,
        working_set_size=len(solution.signs),
        seconds=time.perf_counter() - start,
    )
