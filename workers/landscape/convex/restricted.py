"""The restricted program of SCIENCE §4, built directly for Clarabel (the census fast path).

For signed cones ``(D_i, s_i)``, i < k, the program is

    minimise   (1/n) ||sum_i s_i D_i X u_i - y||^2 + 2 weight_decay sum_i ||u_i||
    subject to (2 D_i - I) X u_i >= 0.

Two exact reductions make it small:

- Only the component of ``u_i`` in the row space of X reaches the data, and any other component
  only adds to ``||u_i||``, so every minimiser lies in that space. With an orthonormal basis Q
  (d, r) of it, ``u_i = Q v_i`` and ``||u_i|| = ||v_i||``: each block shrinks from d to
  r = rank(X) <= min(n, d) variables.
- The quadratic term is written with a residual variable ``e = sum_i s_i D_i X Q v_i - y``, so
  the Hessian is a diagonal ``(2/n) I`` on e and the constraint matrix stays sparse.
- With n several times r (and r <= ``working.MAX_HULL_RANK``), each signed cone keeps only
  the facet rows of its cone in the row-space coordinates, ``{v : (2 D_i - I) X Q v >= 0}``
  (``working.facet_rows``, Qhull; cached per pattern, both signs share it): the feasible set
  is unchanged, so the program is too. Teacher (70, 4): 70 rows a signed cone become about
  6. The solution is checked against all n rows, and solved again on them if it misses one
  (a cone that is not full-dimensional could fool the hull); the polish and the
  certificates use all rows as before.

The matrices are assembled as CSC arrays in one vectorised pass (no modelling layer), and
Clarabel runs single-threaded with QDLDL, which on these sizes (hundreds of variables) is
several times faster than its multi-threaded default.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import clarabel
import numpy as np
import scipy.sparse as sp

from .small import row_norms
from .working import MAX_HULL_RANK, facet_rows

__all__ = ["RestrictedSolution", "RestrictedSolver"]

_ACCEPTED = {"Solved", "AlmostSolved"}
#: With n >= this times rank X, :meth:`RestrictedSolver._sparse` builds the matrices, and
#: with rank X <= ``working.MAX_HULL_RANK`` too, :meth:`RestrictedSolver._facets` does.
SPARSE_ROWS_PER_DIM = 4
#: A facet-row solution may miss one of the other rows by this times ``||v_i|| max |XQ|``,
#: plus ``FEASIBILITY_ATOL max(1, max_i ||v_i||) max |XQ|``; else it is solved again on all
#: rows. A wrong facet set misses by O(||v_i||). A right one can miss too, by Clarabel's
#: slack times the weights that write a dropped row from facet rows (large in thin cones):
#: at tolerance 1e-10 on teacher (70, 4), idle members (||v_i|| ~ 1e-9) miss by up to ~1e-7
#: against ~1e-11 on all rows, and 2 of 20 programs of 40 members are solved again, so
#: that accepted points are as feasible as the all-row ones.
FEASIBILITY_RTOL = 1e-6
FEASIBILITY_ATOL = 1e-9


@dataclass(frozen=True)
class RestrictedSolution:
    """Minimiser of one restricted program.

    Attributes:
        value: the objective recomputed at U (mean squared error plus 2 λ sum ||u_i||).
        U: (k, d) float64, one u per signed cone, in the order given.
        prediction: (n,) float64, ``sum_i s_i D_i X u_i``.
        iterations: interior-point iterations Clarabel took.
        status: Clarabel's status string ("Solved" or "AlmostSolved"), or "Polished" for the
            polished working-set solution of ``ColumnSolver`` (then ``iterations`` are
            Clarabel's on the working set).
        dual: (k,) upper bounds on each member's projection norm ``||proj_K(-s X^T D r)||``
            at this solution's residual, exact where above 2 λ (inf where not computed), from
            the dual check of column generation (:mod:`convex.columns`); None without one.
    """

    value: float
    U: np.ndarray
    prediction: np.ndarray
    iterations: int
    status: str
    dual: np.ndarray | None = None


def _settings(tol: float) -> clarabel.DefaultSettings:
    """Quiet, single-threaded QDLDL, no presolve, gap and feasibility tolerances ``tol``."""
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.max_threads = 1
    settings.direct_solve_method = "qdldl"
    settings.presolve_enable = False
    settings.chordal_decomposition_enable = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tol
    return settings


class RestrictedSolver:
    """Solves restricted programs for one dataset, many sets of signed cones.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: λ >= 0.
        tol: Clarabel's gap and feasibility tolerances (absolute and relative); a solve that
            stalls at them is retried at Clarabel's defaults (1e-8).
        rank_tol: singular values below ``rank_tol * max(n, d) * s_max`` count as zero.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        weight_decay: float,
        *,
        tol: float = 1e-8,
        rank_tol: float = 1e-12,
    ) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64).reshape(-1)
        self.weight_decay = float(weight_decay)
        n, d = self.X.shape
        _, sv, Vt = np.linalg.svd(self.X, full_matrices=False)
        rank = int(np.sum(sv > rank_tol * max(n, d) * sv[0])) if sv.size and sv[0] > 0 else 0
        self.Q = Vt[: max(rank, 1)].T  # (d, r); r >= 1 keeps the program well formed for X = 0
        self.XQ = self.X @ self.Q  # (n, r)
        self.settings = _settings(tol)
        self._fallback = _settings(1e-8)
        self._structure: dict[int, tuple] = {}
        n, r = self.XQ.shape
        self.hull = n >= SPARSE_ROWS_PER_DIM * r and r <= MAX_HULL_RANK
        self._facet_rows: dict[bytes, np.ndarray] = {}
        self.refused = 0  # facet-row solutions that missed a row (diagnostics)

    def solve(self, patterns: np.ndarray, signs: np.ndarray) -> RestrictedSolution:
        """Minimise over the closure of the activation cone of the given signed cones.

        Args:
            patterns: (k, n) bool, k >= 1; rows need not be distinct.
            signs: (k,) entries in {+1, -1}.

        Returns:
            RestrictedSolution with U (k, d).

        Raises:
            RuntimeError: when Clarabel stops with a status other than Solved/AlmostSolved.
        """
        D = np.asarray(patterns, dtype=bool)
        s = np.asarray(signs, dtype=np.float64).reshape(-1)
        if self.hull:
            V, iterations, status = self._solve(*self._facets(D, s))
            orient = np.where(D, 1.0, -1.0)
            slack = np.einsum("ik,kr,ir->ik", orient, self.XQ, V).min(axis=1, initial=0.0)
            norms = row_norms(V)
            floor = FEASIBILITY_ATOL * max(1.0, float(norms.max(initial=0.0)))
            scale = float(np.abs(self.XQ).max(initial=0.0))
            if np.any(slack < -(FEASIBILITY_RTOL * norms + floor) * scale):
                self.refused += 1
                V, iterations, status = self._solve(*self._sparse(D, s))
        else:
            sparse = len(self.y) >= SPARSE_ROWS_PER_DIM * self.XQ.shape[1]
            V, iterations, status = self._solve(*(self._sparse if sparse else self._matrices)(D, s))
        n = len(self.y)
        prediction = np.einsum("i,ik,kr,ir->k", s, D.astype(np.float64), self.XQ, V)
        err = prediction - self.y
        norms = row_norms(V)
        value = float(err @ err) / n + 2.0 * self.weight_decay * float(norms.sum())
        return RestrictedSolution(value, V @ self.Q.T, prediction, iterations, status)

    def _solve(self, P, q, A, b, cones) -> tuple[np.ndarray, int, str]:
        """Clarabel on one program: the v blocks (k, r), iterations and status."""
        solution = clarabel.DefaultSolver(P, q, A, b, cones, self.settings).solve()
        status = str(solution.status)
        if status not in _ACCEPTED:  # stalled at the tight tolerances: retry at Clarabel's own
            solution = clarabel.DefaultSolver(P, q, A, b, cones, self._fallback).solve()
            status = str(solution.status)
        if status not in _ACCEPTED:
            raise RuntimeError(f"Clarabel stopped with status {status}")
        n, r = self.XQ.shape
        V = np.asarray(solution.x)[n:].reshape(-1, r + 1)[:, 1:]
        return V, int(solution.iterations), status

    def _matrices(self, D: np.ndarray, s: np.ndarray):
        """Clarabel data ``(P, q, A, b, cones)`` for ``min x'Px/2 + q'x, Ax + slack = b``.

        Variables are ``[e (n), then per signed cone: t_i, v_i (r)]``. Rows are the n
        equalities ``sum_i s_i D_i XQ v_i - e = y``, the k n inequalities
        ``(2 D_i - I) XQ v_i >= 0`` and k second-order cones ``(t_i, v_i)``. Every v column
        has the same 2n + 1 stored entries (zeros kept), so the structure depends on (n, r, k)
        only and is cached per k, with one CSC matrix whose values each call overwrites
        (Clarabel copies the data when a solver is built, so nothing holds on to them).
        """
        n, r = self.XQ.shape
        k = len(s)
        structure = self._structure.get(k)
        if structure is None:
            structure = self._structure[k] = self._build_structure(k)
        A, P, q, b, cones = structure
        Df = D.astype(np.float64)
        # Values of the r columns of v_i, each [s_i D_i XQ[:, c], -(2 D_i - 1) XQ[:, c], -1].
        vals = np.empty((k, r + 1, 2 * n + 1))
        vals[:, 0, 2 * n] = -1.0  # the t_i column: one entry, its other slots are dropped
        vals[:, 1:, :n] = (s[:, None] * Df)[:, None, :] * self.XQ.T[None]
        vals[:, 1:, n : 2 * n] = -(2.0 * Df - 1.0)[:, None, :] * self.XQ.T[None]
        vals[:, 1:, 2 * n] = -1.0
        flat = vals.reshape(k, -1)[:, 2 * n :]  # drop the t column's unused slots
        A.data[n:] = flat.ravel()  # the first n, the -e entries, never change
        return P, q, A, b, cones

    def _sparse(self, D: np.ndarray, s: np.ndarray):
        """:meth:`_matrices` without the zeros of the equalities (points outside D_i).

        Built for each call (the structure depends on D). With n several times rank X those
        zeros are about half of A and of the factorisation's work (teacher (70, 4), 198
        signed cones: 0.18 s -> 0.14 s CPU for one solve); on small n the cached
        structure of :meth:`_matrices` is cheaper.
        """
        n, r = self.XQ.shape
        k = len(s)
        block = r + 1
        soc0 = n + k * n
        v0 = n + np.arange(k) * block + 1  # first v column of each signed cone
        cols = np.arange(r)
        cone_of, point = np.nonzero(D)
        every = np.arange(k * n)
        entries = [
            (np.arange(n), np.arange(n), -np.ones(n)),  # -e
            (  # the equalities: s_i XQ[k] for the points k of D_i
                np.repeat(point, r),
                (v0[cone_of, None] + cols).ravel(),
                (s[cone_of, None] * self.XQ[point]).ravel(),
            ),
            (  # the inequalities -(2 D_ik - 1) XQ[k] v_i <= 0, row n + i n + k
                np.repeat(n + every, r),
                (v0[every // n, None] + cols).ravel(),
                (-np.where(D.ravel(), 1.0, -1.0)[:, None] * self.XQ[every % n]).ravel(),
            ),
            (soc0 + np.arange(k) * block, v0 - 1, -np.ones(k)),  # t_i
            (
                (soc0 + np.arange(k)[:, None] * block + 1 + cols).ravel(),
                (v0[:, None] + cols).ravel(),
                -np.ones(k * r),
            ),
        ]
        rows, columns, values = (np.concatenate(part) for part in zip(*entries, strict=True))
        structure = self._structure.get(k)
        if structure is None:
            structure = self._structure[k] = self._build_structure(k)
        _, P, q, b, cones = structure
        A = sp.csc_matrix((values, (rows, columns)), shape=(soc0 + k * block, n + k * block))
        return P, q, A, b, cones

    def facet_rows(self, pattern: np.ndarray) -> np.ndarray:
        """Rows of X that define the cone of ``pattern`` in the row space (cached)."""
        key = np.packbits(pattern).tobytes()
        rows = self._facet_rows.get(key)
        if rows is None:
            orient = np.where(pattern, 1.0, -1.0)
            rows = self._facet_rows[key] = facet_rows(orient[:, None] * self.XQ)
        return rows

    def _facets(self, D: np.ndarray, s: np.ndarray):
        """:meth:`_sparse` with only each signed cone's facet rows as inequalities."""
        n, r = self.XQ.shape
        k = len(s)
        block = r + 1
        v0 = n + np.arange(k) * block + 1
        cols = np.arange(r)
        facets = [self.facet_rows(pattern) for pattern in D]
        counts = np.array([len(f) for f in facets], dtype=np.intp)
        cone_of = np.repeat(np.arange(k), counts)  # the signed cone of each inequality
        point = np.concatenate(facets) if k else np.zeros(0, np.intp)
        num_ineq = len(point)
        soc0 = n + num_ineq
        eq_cone, eq_point = np.nonzero(D)
        entries = [
            (np.arange(n), np.arange(n), -np.ones(n)),  # -e
            (
                np.repeat(eq_point, r),
                (v0[eq_cone, None] + cols).ravel(),
                (s[eq_cone, None] * self.XQ[eq_point]).ravel(),
            ),
            (  # -(2 D_ik - 1) XQ[k] v_i <= 0 on the facet rows k of cone i
                np.repeat(n + np.arange(num_ineq), r),
                (v0[cone_of, None] + cols).ravel(),
                (-np.where(D[cone_of, point], 1.0, -1.0)[:, None] * self.XQ[point]).ravel(),
            ),
            (soc0 + np.arange(k) * block, v0 - 1, -np.ones(k)),  # t_i
            (
                (soc0 + np.arange(k)[:, None] * block + 1 + cols).ravel(),
                (v0[:, None] + cols).ravel(),
                -np.ones(k * r),
            ),
        ]
        rows, columns, values = (np.concatenate(part) for part in zip(*entries, strict=True))
        num_vars = n + k * block
        A = sp.csc_matrix((values, (rows, columns)), shape=(soc0 + k * block, num_vars))
        p_indptr = np.concatenate([np.arange(n + 1), np.full(k * block, n)])
        P = sp.csc_matrix((np.full(n, 2.0 / n), np.arange(n), p_indptr), shape=(num_vars,) * 2)
        q = np.zeros(num_vars)
        q[n + np.arange(k) * block] = 2.0 * self.weight_decay
        b = np.zeros(soc0 + k * block)
        b[:n] = self.y
        cones = [clarabel.ZeroConeT(n)]
        cones += [clarabel.NonnegativeConeT(num_ineq)] if num_ineq else []
        cones += [clarabel.SecondOrderConeT(block)] * k
        return P, q, A, b, cones

    def _build_structure(self, k: int):
        """A (values to fill in), P, q, b and cones of :meth:`_matrices` for k signed cones.

        The parts that depend on (n, r, k) only (A's sparsity, P, the cones) come from
        :func:`_layout`, shared by every solver of that shape while small (up to
        ``SHARED_LAYOUT_ENTRIES`` entries of A; teacher (70, 4) at width 1000 has 565,000);
        q and b hold λ and y.
        """
        n, r = self.XQ.shape
        small = k * r * (2 * n + 1) <= SHARED_LAYOUT_ENTRIES
        indices, indptr, P, cones = (_shared_layout if small else _layout)(n, r, k)
        q = np.zeros(P.shape[0])
        q[n + np.arange(k) * (r + 1)] = 2.0 * self.weight_decay
        b = np.zeros(n + k * n + k * (r + 1))
        b[:n] = self.y
        data = np.concatenate([-np.ones(n), np.zeros(len(indices) - n)])
        A = sp.csc_matrix((data, indices.copy(), indptr.copy()), shape=(len(b), P.shape[0]))
        return A, P, q, b, cones


def _layout(n: int, r: int, k: int):
    """(indices, indptr) of A, and P and the cones, of :meth:`RestrictedSolver._matrices`
    for n points, rank r and k signed cones (callers copy what they might modify)."""
    block = r + 1
    soc0 = n + k * n  # first second-order-cone row
    cone = np.arange(k)
    rows = np.concatenate(
        [
            np.broadcast_to(np.arange(n), (k, r, n)),
            np.broadcast_to((n + cone * n)[:, None, None] + np.arange(n), (k, r, n)),
            (soc0 + cone[:, None] * block + 1 + np.arange(r))[:, :, None],
        ],
        axis=2,
    )
    blk_rows = np.concatenate([(soc0 + cone * block)[:, None], rows.reshape(k, -1)], axis=1)
    counts = np.concatenate([np.ones(n, np.int64), np.tile(np.r_[1, np.full(r, 2 * n + 1)], k)])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([np.arange(n), blk_rows.ravel()])
    num_vars = n + k * block
    p_indptr = np.concatenate([np.arange(n + 1), np.full(k * block, n)])
    P = sp.csc_matrix((np.full(n, 2.0 / n), np.arange(n), p_indptr), shape=(num_vars,) * 2)
    cones = [clarabel.ZeroConeT(n), clarabel.NonnegativeConeT(k * n)]
    cones += [clarabel.SecondOrderConeT(block)] * k
    return indices, indptr, P, cones


#: Layouts up to this many entries of A are kept for every solver of their shape (at most
#: 256 of them, at most about 45 MB), by :func:`_shared_layout`.
SHARED_LAYOUT_ENTRIES = 20_000
_shared_layout = functools.lru_cache(maxsize=256)(_layout)
