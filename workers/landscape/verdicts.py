"""Verdicts of trained networks (SCIENCE.md section 6), certified by their own cone.

A converged run whose loss is within `tolerance` of the global optimum is a
global minimum. Otherwise the run's own activation cone (the distinct signed
cones of its active neurons) is solved as a restricted program: when that cone
holds a value below the run's loss the run sits at a saddle point, and when it
does not, the run is the minimiser of its cone and a spurious local minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.landscape.census_sampling import cone_keys
from workers.landscape.census_solver import RestrictedSolver
from workers.landscape.network import signed_cones_of
from workers.landscape.scaling import Scaling

VERDICTS = (
    "global_minimum",
    "spurious_local_minimum",
    "saddle_point",
    "not_converged",
    "diverged",
)


@dataclass(frozen=True)
class Verdict:
    """A run's verdict and the restricted value of its own cone (None when not solved)."""

    verdict: str
    cone_value: float | None


class VerdictJudge:
    """Classifies trained networks on one dataset, solving each distinct cone once.

    Args:
        X: (n, d) float64 data. y: (n,) float64 labels. weight_decay: λ > 0.
        optimum: the certified global optimum.
        tolerance: absolute tolerance on loss differences (default 1e-7).
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight_decay: float,
        *,
        optimum: float,
        tolerance: float = 1e-7,
    ) -> None:
        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.optimum, self.tolerance = float(optimum), float(tolerance)
        self.scaling = Scaling.of(self.X, self.y)  # cones are solved at unit size
        self.solver = RestrictedSolver(*self.scaling.data(self.X, self.y, weight_decay), tol=1e-10)
        self._cache: dict[bytes, float] = {}

    def cone_value(self, W: np.ndarray, a: np.ndarray) -> float:
        """The minimum of L over the closure of the network's activation cone."""
        patterns, signs = signed_cones_of(self.X, W, a)
        if len(signs) == 0:
            return float(np.mean(self.y**2))
        key = b"".join(sorted(cone_keys(patterns, signs).tolist()))
        if key not in self._cache:
            self._cache[key] = self.solver.solve(patterns, signs).value * self.scaling.value
        return self._cache[key]

    def judge(self, status: str, reg_loss: float, W: np.ndarray, a: np.ndarray) -> Verdict:
        """The verdict of one run from its stopping status, final loss and weights."""
        if status == "diverged" or not np.isfinite(reg_loss):
            return Verdict("diverged", None)
        if status != "converged":
            return Verdict("not_converged", None)
        if reg_loss - self.optimum <= self.tolerance:
            return Verdict("global_minimum", None)
        value = self.cone_value(W, a)
        if value < reg_loss - self.tolerance:
            return Verdict("saddle_point", value)
        return Verdict("spurious_local_minimum", value)
