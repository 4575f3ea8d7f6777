"""Screening cones for a global minimum without solving their restricted program.

Let p* be the global optimal prediction (unique: the loss is strictly convex in the
prediction) and r* = (2/n)(p* - y). By duality every global solution puts its mass only on
*tight* signed cones, those where ``||proj_K(g)|| = 2 λ`` for ``g = -s X^T D r*`` and
``K = {u : (2D - I) X u >= 0}``, and only along the unit direction ``e = proj_K(g) / 2λ``.
Conversely any ``c >= 0`` with ``sum_i c_i s_i D_i X e_i = p*`` is a global solution.

So a set S of signed cones holds a global minimum iff its tight members can reproduce p*
with nonnegative weights: one small nonnegative least-squares problem. The screen uses this
as a *sufficient* test only: it exhibits the point ``u_i = c_i e_i`` (feasible for S by
construction), evaluates the objective there exactly, and answers True only when that value
is at most ``optimum + margin``. Anything else falls through to a solve. Two cheap cases come
first: S containing the given support, and S with no tight member.

The atoms are projections onto the signed cones, ``proj_K(g) = g + A^T mu`` with ``mu >= 0``
minimising ``||g + A^T mu||`` (SCIENCE §3): the certificate's own ``certificate.projections``
(the vectors; the dual checks use their norms), computed once per signed cone and call, and
kept as arrays by key. Their NNLS are memoised across calls by the exact bytes of the cone and
vector (``projections(memo=True)``): the same numbers, computed once per problem.
"""

from __future__ import annotations

import numpy as np

from ..convex.certificate import projections
from ..convex.small import nnls, row_norms

__all__ = ["GlobalScreen"]

#: A signed cone is taken as tight when its projection norm is >= (1 - TIGHT_RTOL) 2 λ.
#: A false "tight" is harmless (the exhibited point's value is checked exactly).
TIGHT_RTOL = 1e-5


class GlobalScreen:
    """Sufficient test "S holds a global minimum", for many S on one problem.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: λ > 0.
        prediction: (n,) float64, the global optimal prediction p*.
        optimum: the global optimum.
        margin: the exhibited point must have value <= optimum + margin.
        support_keys: ``cone_keys`` of a known global support (S containing it passes at once);
            None when no support is known to reach the optimum.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight_decay: float,
        *,
        prediction: np.ndarray,
        optimum: float,
        margin: float,
        support_keys: set | None,
    ) -> None:
        self.X, self.y = X, y
        self.weight_decay = float(weight_decay)
        self.prediction = np.asarray(prediction, dtype=np.float64)
        self.residual = (2.0 / len(y)) * (self.prediction - y)
        self.limit = optimum + margin
        self.support_keys = support_keys
        # Atoms by key: the row of each key in the unit directions (c, d) and norms (c,);
        # the arrays' first len(_index) rows are in use, their capacity grows by doubling.
        self._index: dict[bytes, int] = {}
        self._directions = np.empty((16, X.shape[1]))
        self._norms = np.empty(16)

    def holds_global(self, patterns: np.ndarray, signs: np.ndarray, keys: np.ndarray) -> bool:
        """True only if S = {(patterns[i], signs[i])} provably holds a global minimum.

        Args:
            patterns: (k, n) bool, distinct signed cones.
            signs: (k,) in {+1, -1}.
            keys: (k,) their ``cone_keys``.
        """
        if self.support_keys is not None and self.support_keys <= set(keys):
            return True
        floor = 2.0 * self.weight_decay * (1.0 - TIGHT_RTOL)
        directions, norms = self.atoms(keys, patterns, signs)
        tight = norms >= floor
        if not tight.any():
            return False
        # (n, t): prediction per unit weight
        M = (signs[tight, None] * patterns[tight] * (directions[tight] @ self.X.T)).T
        weights, _ = nnls(M, self.prediction, 50 * M.shape[1] + 100)
        costs = weights.sum()  # each direction has unit norm
        err = M @ weights - self.y
        value = float(err @ err) / len(self.y) + 2.0 * self.weight_decay * float(costs)
        return value <= self.limit

    def atom(self, key: bytes, pattern: np.ndarray, sign: int) -> tuple[np.ndarray, float]:
        """``(e, ||proj_K(g)||)`` with ``g = -s X^T D r*`` and ``e`` its unit direction.

        Computed for one signed cone at a time and cached per key, so the answer never
        depends on which other cones were seen.
        """
        row = self._index.get(key)
        if row is None:
            self.atoms([key], pattern[None, :], np.array([sign]))
            row = self._index[key]
        return self._directions[row], float(self._norms[row])

    def atoms(self, keys, patterns: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`atom` of many signed cones: ((k, d) unit directions, (k,) norms), new arrays.

        The missing ones are computed together (one product for their ``X^T D r*``).
        """
        index = self._index
        missing = [i for i, key in enumerate(keys) if key not in index]
        if missing:
            D, s = patterns[missing], np.asarray(signs)[missing]
            G = -s[:, None] * ((D * self.residual) @ self.X)
            P = projections(self.X, np.where(D, 1.0, -1.0), G, memo=True)
            norms = row_norms(P)
            P[norms > 0] /= norms[norms > 0, None]
            start, stop = len(index), len(index) + len(missing)
            if stop > len(self._norms):  # a census adds atoms sample by sample: grow by doubling
                size = max(stop, 2 * len(self._norms))
                directions, kept_norms = np.empty((size, P.shape[1])), np.empty(size)
                directions[:start], kept_norms[:start] = (
                    self._directions[:start],
                    self._norms[:start],
                )
                self._directions, self._norms = directions, kept_norms
            self._directions[start:stop], self._norms[start:stop] = P, norms
            for offset, i in enumerate(missing):
                index[keys[i]] = start + offset
        rows = [index[key] for key in keys]
        return self._directions[rows], self._norms[rows]
