"""Column generation for one restricted program (SCIENCE §3, restricted to a cone's members).

The restricted program of a cone S rarely uses more than a few of its signed cones (at most
about n + 1 carry a neuron). So it is solved on a small working subset W of S first, and the
dual certificate of SCIENCE §3, restricted to the members of S, decides whether that is the
optimum over all of S: with r = (2/n)(prediction - y) the minimiser over W is optimal over S
iff every member i outside W has ``||proj_{K_i}(-s_i X^T D_i r)|| <= 2 λ`` (members in W
satisfy it by optimality over W). Violators are added to W and the program is solved again.

- The first W is the members with the largest projection norm at the global optimal residual
  r*; those norms are deterministic functions of each signed cone, cached per key, and
  computed one signed cone at a time so the ranking does not depend on which other cones
  were seen (chunked runs give identical records).
- A violation counts when the norm exceeds ``2 λ (1 + VIOLATION_RTOL)``. A member left out at
  a smaller excess ``δ 2 λ`` changes the value by O(δ²): far below the 1e-7 tolerance.
- After ``MAX_ROUNDS`` rounds the whole of S is solved at once (never reached in tests).
"""

from __future__ import annotations

import numpy as np

from .census_solver import RestrictedSolution, RestrictedSolver
from .certificate import cone_values

__all__ = ["ColumnSolver", "INITIAL", "MAX_ROUNDS", "VIOLATION_RTOL"]

#: Members in the first working set.
INITIAL = 4
#: Relative excess over 2 λ above which an outside member is added to the working set.
VIOLATION_RTOL = 1e-8
#: Rounds before falling back to one solve over all members.
MAX_ROUNDS = 12


class ColumnSolver:
    """Restricted programs by column generation, for one dataset and many cones.

    Args:
        solver: the direct Clarabel solver of the restricted program.
        residual: (n,) the global optimal residual r* (ranks members for the first W).
        initial: size of the first working set.
    """

    def __init__(
        self, solver: RestrictedSolver, residual: np.ndarray, *, initial: int = INITIAL
    ) -> None:
        self.solver = solver
        self.X, self.y = solver.X, solver.y
        self.residual = np.asarray(residual, dtype=np.float64)
        self.initial = initial
        self.threshold = 2.0 * solver.weight_decay * (1.0 + VIOLATION_RTOL)
        self._rank: dict[bytes, float] = {}

    def solve(self, patterns: np.ndarray, signs: np.ndarray, keys: np.ndarray) -> RestrictedSolution:
        """Minimise over the closure of the activation cone of the given signed cones.

        Args:
            patterns: (k, n) bool, distinct signed cones, k >= 1.
            signs: (k,) in {+1, -1}.
            keys: (k,) their ``cone_keys``.

        Returns:
            RestrictedSolution with U (k, d); rows outside the final working set are zero.
        """
        k = len(signs)
        if k <= self.initial:
            return self.solver.solve(patterns, signs)
        D = np.asarray(patterns, dtype=bool)
        s = np.asarray(signs, dtype=np.float64)
        orient = np.where(D, 1.0, -1.0)
        rank = np.array([self._ranking(key, D[i], s[i]) for i, key in enumerate(keys)])
        inside = np.zeros(k, dtype=bool)
        inside[np.argsort(-rank, kind="stable")[: self.initial]] = True
        for _ in range(MAX_ROUNDS):
            members = np.flatnonzero(inside)
            solution = self.solver.solve(D[members], s[members])
            r = (2.0 / len(self.y)) * (solution.prediction - self.y)
            out = np.flatnonzero(~inside)
            g = -s[out, None] * ((D[out] * r) @ self.X)
            values, _ = cone_values(self.X, orient[out], g, floor=self.threshold)
            violators = out[values > self.threshold]
            if len(violators) == 0:
                U = np.zeros((k, self.X.shape[1]))
                U[members] = solution.U
                return RestrictedSolution(
                    solution.value, U, solution.prediction, solution.iterations, solution.status
                )
            inside[violators] = True
        return self.solver.solve(patterns, signs)

    def _ranking(self, key: bytes, pattern: np.ndarray, sign: float) -> float:
        """Projection norm of -s X^T D r* onto the signed cone (cached per key)."""
        found = self._rank.get(key)
        if found is None:
            g = -sign * ((pattern * self.residual) @ self.X)
            values, _ = cone_values(self.X, np.where(pattern, 1.0, -1.0)[None], g[None])
            found = self._rank[key] = float(values[0])
        return found
