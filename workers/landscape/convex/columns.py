"""Column generation for one restricted program (SCIENCE §3, restricted to a cone's members).

The restricted program of a cone S rarely uses more than a few of its signed cones (at most
about n + 1 carry a neuron). So it is solved on a small working subset W of S first, and the
dual certificate of SCIENCE §3, restricted to the members of S, decides whether that is the
optimum over all of S: with r = (2/n)(prediction - y) the minimiser over W is optimal over S
iff every member i outside W has ``||proj_{K_i}(-s_i X^T D_i r)|| <= 2 λ`` (members in W
satisfy it by optimality over W). The ``ADD_MAX`` worst violators are added to W and the
program is solved again (on teacher (70, 4) at width 200 a round found up to 50 violators;
adding all of them made the next solve 4x the first, and the cone often ended in a solve
over all ~200 members).

- The first W is a guess at the members that carry a neuron (see ``_first_set``): each
  member's atom at the global optimal residual r* (its unit direction and norm, cached per
  signed cone by the screen) gives a one-NNLS fit of the program with each u_i held to its
  ray (from ``GRAM_NNLS_MIN`` members in Gram form, :func:`gram_nnls`); its support plus
  the ``INITIAL`` largest norms. On bench/census with 60 samples per
  width (68 solved cones, mostly width 40 with about 34 members) the first W averages 6.6
  members, with 18 extra rounds, 2 polished working sets and no solve over all members
  (before the polished working sets: 15 rounds and 3 such solves).
- A violation counts when the norm exceeds ``2 λ (1 + VIOLATION_RTOL)``. The check projects
  only the members that two upper bounds leave open: ``||g||``, and the atom's norm at r*
  plus ``||g - g*||`` (the projection is 1-Lipschitz); see ``polish.values_above``.
- Clarabel occasionally reports "Solved" on a small W at a point whose value is ~1e-9 high;
  that is enough to flip a stationarity verdict. So before accepting, the members carrying a
  neuron must satisfy complementarity ``g_i . u_i = 2 λ ||u_i||`` to ``COMPLEMENTARITY_RTOL``
  and the idle members of W must pass the dual check. Otherwise (1-5 % of solved cones in
  tests) W's solution is polished (``convex.polish``: the exact minimiser over W) and
  accepted when the members outside W pass the dual check at its residual (it is then the
  exact minimiser over S); failing that, the cone is solved over all its members, as the
  path without column generation did. After ``MAX_ROUNDS`` rounds likewise.
- Everything depends only on the cone's own members and per-signed-cone caches, so records
  do not depend on how samples are chunked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .polish import polish, values_above
from .restricted import RestrictedSolution, RestrictedSolver
from .small import cholesky, nnls, row_norms, solve_lower

__all__ = [
    "ADD_MAX",
    "GRAM_NNLS_MIN",
    "gram_nnls",
    "CARRY_REL",
    "COMPLEMENTARITY_RTOL",
    "INITIAL",
    "MAX_ROUNDS",
    "VIOLATION_RTOL",
    "ColumnSolver",
]

#: Members of largest norm at r* always put in the first working set (see _first_set).
INITIAL = 2
#: Relative excess over 2 λ above which an outside member is added to the working set.
VIOLATION_RTOL = 1e-8
#: Members with ||u|| above this times max(1, max ||u||) count as carrying a neuron.
CARRY_REL = 1e-6
#: Largest |g_i . u_i / (2 λ ||u_i||) - 1| accepted for those members (see _converged).
COMPLEMENTARITY_RTOL = 1e-8
#: Rounds before falling back to one solve over all members.
MAX_ROUNDS = 12
#: Members from which the first working set's NNLS runs in Gram form (:func:`gram_nnls`);
#: below, scipy's nnls on a Cholesky factor of G is cheaper (per-step overhead; about even
#: at 300 members of teacher (70, 4), 8.7x faster at 975).
GRAM_NNLS_MIN = 300
#: Violators added per round at most, the most violated first (on teacher (70, 4) a round
#: at width 200 found up to 50, and the next solve over all of them cost 4x the first).
ADD_MAX = 8


class ColumnSolver:
    """Restricted programs by column generation, for one dataset and many cones.

    Args:
        solver: the direct Clarabel solver of the restricted program.
        atom: ``atom(key, pattern, sign) -> (e, norm)``, the unit direction and norm of
            ``proj_K(-s X^T D r*)`` at the global optimal residual r*
            (``GlobalScreen.atom``, which caches it per key).
        initial: members of largest norm always put in the first working set.
        anchor: the residual r* of the atoms (enables the dual check's Lipschitz bound).
        atoms: optionally ``atoms(keys, patterns, signs) -> ((k, d) e, (k,) norms)``, the same
            for many members at once (``GlobalScreen.atoms``), used instead of ``atom``.

    Attributes:
        rounds: working-set enlargements so far (diagnostics).
        fallbacks: cones solved over all members after the checks failed (diagnostics).
        polished: cones whose working-set solution failed the KKT check but was accepted
            polished (see ``_polished``; diagnostics).
    """

    def __init__(
        self,
        solver: RestrictedSolver,
        atom: Callable[[bytes, np.ndarray, int], tuple[np.ndarray, float]],
        *,
        initial: int = INITIAL,
        anchor: np.ndarray | None = None,
        atoms: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.solver = solver
        self.X, self.y = solver.X, solver.y
        self.atom, self.atoms = atom, atoms
        self.initial = initial
        self.anchor = None if anchor is None else np.asarray(anchor, dtype=np.float64)
        self.threshold = 2.0 * solver.weight_decay * (1.0 + VIOLATION_RTOL)
        self.rounds = 0
        self.fallbacks = 0
        self.polished = 0

    def solve(
        self, patterns: np.ndarray, signs: np.ndarray, keys: np.ndarray
    ) -> RestrictedSolution:
        """Minimise over the closure of the activation cone of the given signed cones.

        Args:
            patterns: (k, n) bool, distinct signed cones, k >= 1.
            signs: (k,) in {+1, -1}.
            keys: (k,) their ``cone_keys``.

        Returns:
            RestrictedSolution with U (k, d); rows outside the final working set are zero.
            Its ``dual`` holds the dual check's upper bounds at its residual (inf for the
            members carrying a neuron), or None after a solve over all members.
        """
        k = len(signs)
        if k <= self.initial:
            return self.solver.solve(patterns, signs)
        D = np.asarray(patterns, dtype=bool)
        s = np.asarray(signs, dtype=np.float64)
        orient = np.where(D, 1.0, -1.0)
        inside, atom_norms = self._first_set(D, s, signs, keys)
        for _ in range(MAX_ROUNDS):
            members = np.nonzero(inside)[0]
            solution = self.solver.solve(D[members], s[members])
            r = (2.0 / len(self.y)) * (solution.prediction - self.y)
            dual = np.full(k, np.inf)
            check = _Check(self, D, s, orient, r, atom_norms, dual)
            violators = check.violators(np.nonzero(~inside)[0])
            if len(violators) == 0 and not self._converged(check, members, solution):
                exact = self._polished(check, members, np.nonzero(~inside)[0], solution)
                if exact is not None:
                    return exact
                break
            if len(violators) == 0:
                U = np.zeros((k, self.X.shape[1]))
                U[members] = solution.U
                return replace(solution, U=U, dual=dual)
            worst = np.argsort(-dual[violators], kind="stable")[:ADD_MAX]
            inside[violators[worst]] = True
            self.rounds += 1
        self.fallbacks += 1
        return self.solver.solve(patterns, signs)

    def _polished(
        self, check: _Check, members: np.ndarray, out: np.ndarray, solution: RestrictedSolution
    ) -> RestrictedSolution | None:
        """The working set's solution polished (:func:`convex.polish.polish`: the exact
        minimiser over W, a KKT point with the dual check passed at W's idle members), when
        the members outside W pass the dual check at its residual too; else None.

        Then it is the exact minimiser over all members (the program is convex), and the
        solve over all of them that the failed check would call for is not needed.
        """
        D, s = check.D, check.s
        lam = self.solver.weight_decay
        found = polish(
            self.X, self.y, lam, D[members], s[members], solution.U, solution.value,
            bounds=check.dual[members],
        )  # fmt: skip
        if found is None:
            return None
        U = np.zeros((len(s), self.X.shape[1]))
        U[members[found.rows]] = found.U
        prediction = np.einsum("in,in->n", s[:, None] * D, U @ self.X.T)
        r = (2.0 / len(self.y)) * (prediction - self.y)
        dual = np.full(len(s), np.inf)
        again = _Check(self, D, s, check.orient, r, check.atom_norms, dual)
        if len(again.violators(out)):
            return None
        self.polished += 1
        value, iterations = float(found.value), solution.iterations
        return RestrictedSolution(value, U, prediction, iterations, "Polished", dual)

    def _converged(self, check: _Check, members, solution: RestrictedSolution) -> bool:
        """KKT conditions of the working set's solution, at the members of W.

        At the minimiser every member carrying a neuron has ``-s_i (X^T D_i r) . u_i / ||u_i||
        = 2 λ`` exactly (complementarity), and the idle members of W pass the dual check like
        the members outside. Clarabel occasionally reports "Solved" at a point that misses
        the first by 1e-7 relative (value off by ~1e-9, enough to flip a stationarity
        verdict); those cones are solved again over all members.
        """
        norms = row_norms(solution.U)
        big = norms > CARRY_REL * max(1.0, float(norms.max(initial=0.0)))
        if len(check.violators(members[~big])):
            return False
        if not big.any():
            return True
        carry = members[big]
        g = -check.s[carry, None] * ((check.D[carry] * check.r) @ self.X)
        ratio = (
            np.einsum("ij,ij->i", g, solution.U[big])
            / norms[big]
            / (2.0 * self.solver.weight_decay)
        )
        return bool((np.abs(ratio - 1.0) <= COMPLEMENTARITY_RTOL).all())

    def _first_set(
        self, D: np.ndarray, s: np.ndarray, signs: np.ndarray, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first working set (a guess at the members that carry a neuron) and the
        members' atom norms at r*.

        Each member i gets its atom at r*: the unit direction ``e_i`` of
        ``proj_{K_i}(-s_i X^T D_i r*)`` and that projection's norm. The guess is the support
        of ``c >= 0`` minimising ``(1/n) ||sum_i c_i s_i D_i X e_i - y||^2 + 2 λ sum_i c_i``
        (the program with each u_i held to its ray; one small NNLS), plus the ``initial``
        members of largest norm. A poor guess costs rounds, never accuracy.
        """
        k = len(s)
        if self.atoms is not None:
            E, norms = self.atoms(keys, D, signs)  # (k, d), (k,)
        else:
            found = [self.atom(key, D[i], signs[i]) for i, key in enumerate(keys)]
            E, norms = np.stack([e for e, _ in found]), np.array([norm for _, norm in found])
        inside = np.zeros(k, dtype=bool)
        inside[np.argsort(-norms, kind="stable")[: self.initial]] = True
        M = (s[:, None] * D * (E @ self.X.T)).T  # (n, k): s_i D_i X e_i
        n = len(self.y)
        ridge = 1e-10 * (1.0 + float(np.einsum("ij,ij->", M, M)) / n)
        b = M.T @ self.y / n - self.solver.weight_decay
        if k >= GRAM_NNLS_MIN:
            weights = gram_nnls(M / np.sqrt(n), ridge, b, max_iter=3 * k + 10)
        else:
            G = M.T @ M / n
            G.flat[:: k + 1] += ridge
            try:
                L = cholesky(G)
            except np.linalg.LinAlgError:
                return inside, norms
            target = solve_lower(L, b)
            weights, _ = nnls(L.T, target, 50 * k + 100)
        inside |= weights > 0
        return inside, norms


def gram_nnls(M: np.ndarray, ridge: float, b: np.ndarray, *, max_iter: int) -> np.ndarray:
    """``argmin_{c >= 0} c^T G c / 2 - b^T c`` with ``G = M^T M + ridge I``, Lawson-Hanson
    on the passive set, without forming G.

    Each step solves ``G_PP z = b_P`` on the passive set P (at most about n + 1 members
    carry weight) and takes the gradient ``b - G c`` through M, so a step costs O(n k + n p^2)
    instead of the O(k^2) of an NNLS on a k x k factor of G (and no O(k^3) Cholesky): at
    k = 975, n = 70, 14 ms against 124 ms.

    Args:
        M: (n, k) float64.
        ridge: > 0, makes G positive definite (the minimiser unique).
        b: (k,) float64.
        max_iter: members added at most (the weights found so far are returned then).

    Returns:
        (k,) float64 weights, exactly 0 outside the passive set.
    """
    k = len(b)
    c = np.zeros(k)
    passive = np.zeros(k, dtype=bool)
    tol = 1e-12 * (1.0 + float(np.abs(b).max(initial=0.0)))
    w = b.copy()
    for _ in range(max_iter):
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        if passive[j] or w[j] <= tol:
            break
        passive[j] = True
        while True:
            P = np.nonzero(passive)[0]
            G = M[:, P].T @ M[:, P]
            G[np.diag_indices(len(P))] += ridge
            z = np.linalg.solve(G, b[P])
            if np.all(z > 0):
                c[P] = z
                break
            low = z <= 0  # step back to the boundary, drop who reaches zero
            alpha = float(np.min(c[P][low] / (c[P][low] - z[low])))
            c[P] += alpha * (z - c[P])
            passive[P[(c[P] <= 0) | (low & (c[P] <= tol))]] = False
            c[~passive] = 0.0
            if not passive.any():
                break
        w = b - M.T @ (M[:, passive] @ c[passive]) - ridge * c
    return c


class _Check:
    """The dual check of one working set's solution (residual r) on members of the cone.

    With the anchor r* of the atoms, ``||proj_K(g*)|| + ||g - g*||`` bounds each member's
    value from above (the projection is 1-Lipschitz; ``g - g* = -s X^T D (r - r*)``), so
    members whose atom lies well below 2 λ are not projected. The values found (upper
    bounds, exact above the threshold) are written into ``dual``.
    """

    def __init__(self, owner: ColumnSolver, D, s, orient, r, atom_norms, dual) -> None:
        self.owner, self.D, self.s, self.orient, self.r = owner, D, s, orient, r
        self.atom_norms, self.dual = atom_norms, dual
        self.shift = None if owner.anchor is None else r - owner.anchor

    def violators(self, out: np.ndarray) -> np.ndarray:
        """Members of ``out`` whose value exceeds the threshold (:func:`values_above`)."""
        X = self.owner.X
        g = -self.s[out, None] * ((self.D[out] * self.r) @ X)
        bound = None
        if self.shift is not None:
            moved = (self.D[out] * self.shift) @ X
            bound = self.atom_norms[out] + np.sqrt(np.einsum("ij,ij->i", moved, moved))
        values = values_above(X, self.orient[out], g, self.owner.threshold, bound)
        self.dual[out] = values
        return out[values > self.owner.threshold]
