"""Verdicts of trained networks (SCIENCE.md section 6), certified by their own cone.

A converged run whose loss is within the loss tolerance of the global optimum is a global
minimum. Otherwise the run's own activation cone (the distinct signed cones of its active
neurons) is solved as a restricted program: when that cone holds a value below the run's loss
the run sits at a saddle point, and when it does not, the run is the minimiser of its cone and
a spurious local minimum. A spurious run also gets the birth test of
``stationarity.birth_test`` (SCIENCE §8): its ``birth_margin`` is negative when a small new
neuron in some signed cone lowers the loss, and it is ``strict`` unless such a neuron has room
to grow.

A run that did not converge is judged where it stopped: its cone is solved as above, and
``projected_verdict`` says what the run would be if it converged inside that cone, to the
cone's minimiser: a global minimum when the cone holds one, else a spurious local minimum
when that minimiser is Clarke stationary (the census's test, ``convex.classify.classify``),
else a saddle point (the minimiser is not a local minimum, so the run would leave the cone).

A run stopped because it collapsed to the zero network (every neuron inactive on all data:
from there it can only decay to zero) is ``collapsed``; its cone value is the zero network's
loss, and ``projected_verdict`` says what the zero network is (``training.after``): a global
minimum when it attains the optimum, else a saddle point, never a spurious minimum.

Units. Every tolerance is relative (:func:`loss_tolerance`), and cones are found and solved at
unit scale (``scaling.py``), so the verdicts do not change when y and λ are multiplied by the
same c (which multiplies L by c²), nor when X is scaled with λ. The only absolute numbers are
an explicit ``tolerance`` (kept so stored specs replay as before) and the spec's grad_tol,
which decides ``converged`` in training, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..convex.classify import classify
from ..convex.restricted import RestrictedSolver
from ..convex.stationarity import birth_test
from ..geometry.network import signed_cones_of
from ..geometry.patterns import cone_keys
from ..geometry.scaling import RELATIVE_TOLERANCE, Scaling, loss_tolerance
from .after import zero_network_verdict

VERDICTS = (
    "global_minimum",
    "spurious_local_minimum",
    "saddle_point",
    "not_converged",
    "diverged",
    "collapsed",
)

#: Clarabel's gap and feasibility tolerances for the runs' cones, at unit scale.
SOLVER_TOL = 1e-10
#: The census's names of a non-global cone's minimiser, as training verdicts.
_PROJECTED = {"spurious": "spurious_local_minimum", "no_local_min": "saddle_point"}


@dataclass(frozen=True)
class Verdict:
    """A run's verdict and what it was judged on.

    Attributes:
        verdict: one of VERDICTS.
        cone_value: the restricted value of the run's own cone, in the units of y² (None for
            a global minimum, whose cone needs no solve, and for a diverged run).
        cone_global: whether that cone holds a global minimum (cone value <= optimum +
            tolerance; True for a global minimum; None for a diverged run).
        projected_verdict: for a not_converged run, the verdict it would get if it converged
            inside its cone (module docstring); None otherwise.
        birth_margin: for a spurious_local_minimum, 2 λ minus the largest projection norm over
            all signed cones at its residual, in the units of λ; None otherwise.
        strict: for a spurious_local_minimum, False when the margin is negative and a neuron
            is free to grow (``stationarity.birth_test``); None otherwise.
    """

    verdict: str
    cone_value: float | None
    cone_global: bool | None = None
    projected_verdict: str | None = None
    birth_margin: float | None = None
    strict: bool | None = None


@dataclass
class _Cone:
    """One solved cone, at unit scale: its signed cones, value, minimiser and census verdict."""

    patterns: np.ndarray
    signs: np.ndarray
    value: float
    U: np.ndarray
    projected: str | None = None


class VerdictJudge:
    """Classifies trained networks on one dataset, solving each distinct cone once.

    Args:
        X: (n, d) float64 data. y: (n,) float64 labels. weight_decay: λ > 0.
        optimum: the certified global optimum.
        tolerance: absolute tolerance on loss differences, in the units of y²; None (the
            default) for ``relative_tolerance`` times :func:`loss_scale`.
        relative_tolerance: see :func:`loss_tolerance`.
        patterns: (P, n) bool, every activation pattern of X, for the birth test of spurious
            runs; enumerated on first use when not given.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight_decay: float,
        *,
        optimum: float,
        tolerance: float | None = None,
        relative_tolerance: float = RELATIVE_TOLERANCE,
        patterns: np.ndarray | None = None,
    ) -> None:
        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.optimum = float(optimum)
        self.tolerance = loss_tolerance(
            self.optimum,
            self.X,
            self.y,
            weight_decay,
            tolerance=tolerance,
            relative_tolerance=relative_tolerance,
        )
        self.scaling = Scaling.of(self.X, self.y)  # cones are found and solved at unit size
        self.unit = self.scaling.data(self.X, self.y, weight_decay)
        self.solver = RestrictedSolver(*self.unit, tol=SOLVER_TOL)
        self.patterns = patterns
        self._cache: dict[bytes, _Cone] = {}

    def cone_value(self, W: np.ndarray, a: np.ndarray) -> float:
        """The minimum of L over the closure of the network's activation cone."""
        return self._cone(W, a).value * self.scaling.value

    def judge(self, status: str, reg_loss: float, W: np.ndarray, a: np.ndarray) -> Verdict:
        """The verdict of one run from its stopping status, final loss and weights."""
        if status == "diverged" or not np.isfinite(reg_loss):
            return Verdict("diverged", None)
        if status == "collapsed":  # it can only decay to the zero network (training.after)
            limit = zero_network_verdict(self.y, self.optimum, self.tolerance)
            zero = float(np.mean(self.y**2))
            return Verdict("collapsed", zero, limit == "global_minimum", limit)
        at_optimum = reg_loss - self.optimum <= self.tolerance
        if status == "converged" and at_optimum:
            return Verdict("global_minimum", None, True)
        cone = self._cone(W, a)  # found and solved once per run (its key alone costs a sort)
        value = cone.value * self.scaling.value
        cone_global = at_optimum or value <= self.optimum + self.tolerance
        if status != "converged":
            projected = "global_minimum" if cone_global else self._projected(cone)
            return Verdict("not_converged", value, cone_global, projected)
        if value < reg_loss - self.tolerance:
            return Verdict("saddle_point", value, cone_global)
        X, y, W, a = self._unit_network(W, a)
        born = birth_test(X, y, W, a, self.unit[2], self._all_patterns())
        margin = born.margin * self.scaling.dual
        return Verdict("spurious_local_minimum", value, cone_global, None, margin, born.strict)

    def _unit_network(
        self, W: np.ndarray, a: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(X̂, ŷ, Ŵ, â): the data and the network at unit scale."""
        k = self.scaling.weights
        X, y, _ = self.unit
        return X, y, np.asarray(W, dtype=np.float64) / k, np.asarray(a, dtype=np.float64) / k

    def _cone(self, W: np.ndarray, a: np.ndarray) -> _Cone:
        """The network's cone: its active neurons' signed cones at unit scale, solved once."""
        X, y, W, a = self._unit_network(W, a)
        patterns, signs = signed_cones_of(X, W, a)
        key = b"".join(sorted(cone_keys(patterns, signs).tolist()))
        if key not in self._cache:
            if len(signs) == 0:
                value, U = float(np.mean(y**2)), np.zeros((0, X.shape[1]))
            else:
                solution = self.solver.solve(patterns, signs)
                value, U = solution.value, solution.U
            self._cache[key] = _Cone(patterns, signs, value, U)
        return self._cache[key]

    def _projected(self, cone: _Cone) -> str:
        """The verdict of a non-global cone's minimiser (module docstring), at unit scale."""
        if cone.projected is None:
            useful = cone.patterns.any(axis=1)  # cones that can carry a neuron, as the census
            if not useful.any():  # the zero network: always Clarke stationary
                cone.projected = "spurious_local_minimum"
            else:
                X, y, weight_decay = self.unit
                found = classify(
                    X,
                    y,
                    weight_decay,
                    cone.patterns[useful],
                    cone.signs[useful],
                    cone.U[useful],
                    cone.value,
                    optimum=self.optimum / self.scaling.value,
                    tolerance=self.tolerance / self.scaling.value,
                )
                cone.projected = _PROJECTED.get(found.verdict, "global_minimum")
        return cone.projected

    def _all_patterns(self) -> np.ndarray:
        if self.patterns is None:
            from workers.landscape.geometry.patterns import enumerate_patterns

            self.patterns = enumerate_patterns(self.X)
        return self.patterns
