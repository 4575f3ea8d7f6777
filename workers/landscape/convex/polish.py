"""Polishing a restricted minimiser to machine precision before it is classified (SCIENCE §4).

An interior-point solution (Clarabel at 1e-10) is accurate to only about 1e-5 relative in u: a
constraint active with a zero multiplier sits at a slack of order sqrt(mu), and a row that is
zero at the minimiser keeps a norm up to ~1e-3 relative. :func:`polish` recovers the exact
minimiser of the program (the objective of :mod:`convex.restricted`: mean squared error, no 1/2,
plus 2 λ sum ||u_i||):

1. Support and faces. Rows above ``SUPPORT_REL`` (relative) are the support; constraints with
   ``|x_k . u_i| <= FACE_REL ||x_k|| ||u_i||`` are active (``x_k . u_i = 0``). Rows of one sign
   on the same faces whose patterns agree off them are one neuron and are merged (this removes
   the program's flat directions).
2. Newton on the faces. With ``u_i = Q N_i z_i`` (Q a basis of the row space of X, N_i of the
   null space of the active rows of X Q) the program is ``min (1/n) ||sum_i A_i z_i - y||^2 +
   2 λ sum_i ||z_i||``, ``A_i = s_i D_i X Q N_i``: convex, smooth while every z_i != 0. Newton
   (damped by a line search far from the minimiser) takes 1-2 steps from the interior point.
3. Active set (primal). When the Newton point leaves the cone, the first constraint hit on the
   way joins the faces and Newton restarts there; a row whose face multipliers have no
   nonnegative choice (NNLS) releases its most negative least-squares one; a row that falls
   to zero, or stalls Newton below ``STALL_REL`` of the largest, leaves the support; a row
   outside it that fails the dual check of SCIENCE §3 (``||proj_K(-s X^T D r)|| <= 2 λ (1 +
   DUAL_RTOL)``) comes back from its interior-point value. At most ``MAX_ROUNDS`` solves (the
   caller may allow more).
   The dual check projects only the rows that upper bounds leave open (:func:`values_above`):
   ``||g||``, and, when the caller knows the values at the interior point's residual
   (``bounds``), those plus the shift of ``X^T D r`` to the polished residual.
4. Acceptance: a KKT point of the whole restricted program (gradient on the faces at most
   ``GRADIENT_RTOL`` relative, multipliers >= 0, feasible, the dual check passed off the
   support) whose value is at most the interior point's plus ``VALUE_RTOL`` (relative).
   Otherwise :func:`polish` returns None and the caller keeps the interior point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .certificate import cone_values, few_cone_values
from .newton import FaceObjective, null_space
from .small import lstsq, nnls, row_norms

__all__ = [
    "BATCH_MIN",
    "FACE_REL",
    "SUPPORT_REL",
    "Polished",
    "polish",
    "support",
    "values_above",
]

#: Rows with ||u|| at or below this times max(1, max ||u||) are taken to be zero.
SUPPORT_REL = 1e-6
#: A constraint with |x_k . u| <= FACE_REL ||x_k|| ||u|| at the interior point is taken active.
FACE_REL = 1e-4
#: When Newton does not converge, the smallest row leaves if its norm is at most this times
#: the largest (a row whose minimum is zero stalls Newton at the kink of ||u||).
STALL_REL = 1e-2
#: Largest gradient norm on the faces accepted, relative to ``2 λ + (2/n) ||A^T y||``.
GRADIENT_RTOL = 1e-11
#: Largest excess of the polished value over the interior point's, relative to max(1, value).
VALUE_RTOL = 1e-9
#: Relative excess over 2 λ of a zero row's dual value that is accepted.
DUAL_RTOL = 1e-8
#: A constraint off the faces is violated below -FEASIBILITY_REL ||x_k|| ||u||.
FEASIBILITY_REL = 1e-12
#: Newton solves per settling of the active set; rows brought back by the dual check.
MAX_ROUNDS, MAX_RESTORES = 16, 3
#: :func:`values_above` projects fewer open cones than this one by one (NNLS), more in a batch.
BATCH_MIN = 32


def values_above(
    X: np.ndarray, orient: np.ndarray, g: np.ndarray, floor: float, bound: np.ndarray | None = None
) -> np.ndarray:
    """``||proj_K(g)||`` for cones ``K = {u : (orient * X) u >= 0}``, exact where above ``floor``.

    Entries at or below ``floor`` may be upper bounds (still <= floor). ``||g||`` bounds the
    value from above, and so does ``bound`` when given (e.g. a known value at a nearby vector
    plus the distance to it: the projection is 1-Lipschitz); cones that either puts at or
    below ``floor`` are not projected. A few others get up to three half-space steps (upper
    bounds) and then one NNLS each (``certificate.few_cone_values``: on a handful of cones a
    batched active set costs several times more in per-call overhead), many go at once
    through ``certificate.cone_values``.

    Args:
        X: (n, d) float64 data.
        orient: (c, n) in {+1, -1}, the signs 2D - 1 of each cone's rows.
        g: (c, d) float64 vectors to project.
        floor: the level above which values are exact.
        bound: (c,) optional upper bounds on the values.

    Returns:
        (c,) float64.
    """
    values = np.sqrt(np.einsum("ij,ij->i", g, g))
    if bound is not None:
        values = np.minimum(values, bound)
    open_ = np.nonzero(values > floor)[0]
    if len(open_) >= BATCH_MIN:
        values[open_] = cone_values(X, orient[open_], g[open_], floor=floor)[0]
    elif len(open_):
        values[open_] = few_cone_values(X, orient[open_], g[open_], floor)
    return values


@dataclass(frozen=True)
class Polished:
    """The exact minimiser of a restricted program (see :func:`polish`).

    Attributes:
        U: (p, d) float64, the nonzero rows, in the row space of X and on their faces.
        patterns: (p, n) bool, their signed cones' patterns (in the order given).
        signs: (p,) float64 in {+1, -1}.
        faces: (p, n) bool, the active constraints ``x_k . u_i = 0`` of each row.
        value: the program's objective at U.
        gradient_norm: norm of the objective's gradient on the faces at U.
        rows: (p,) int, the indices of these rows among the rows given, increasing.
    """

    U: np.ndarray
    patterns: np.ndarray
    signs: np.ndarray
    faces: np.ndarray
    value: float
    gradient_norm: float
    rows: np.ndarray


def polish(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    patterns: np.ndarray,
    signs: np.ndarray,
    U: np.ndarray,
    value: float,
    *,
    bounds: np.ndarray | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> Polished | None:
    """Polish an interior-point minimiser of a restricted program (module docstring).

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: λ > 0.
        patterns: (k, n) bool, the signed cones of U's rows.
        signs: (k,) in {+1, -1}.
        U: (k, d) float64, the interior point.
        value: the program's value at U.
        bounds: (k,) optional upper bounds on each row's dual value ``||proj_K(-s X^T D r)||``
            at U's residual (``RestrictedSolution.dual``, inf where unknown). Plus the shift of
            ``X^T D r`` to the polished residual they bound it there too (the projection is
            1-Lipschitz), so rows far below 2 λ skip the projection in the dual check.
        max_rounds: the most Newton solves per active-set settling (step 3).

    Returns:
        Polished, or None when the steps of the module docstring do not reach an accepted
        KKT point.
    """
    problem = _Program(X, y, weight_decay, patterns, signs)
    U = np.asarray(U, dtype=np.float64).reshape(len(problem.s), np.shape(X)[1])
    if bounds is not None:
        problem.anchor(U, np.asarray(bounds, dtype=np.float64).reshape(-1))
    rows = np.nonzero(support(U))[0]
    state = problem.merge(rows, U[rows], problem.near_faces(U[rows]))
    for _ in range(MAX_RESTORES + 1):
        settled = _settle(problem, *state, max_rounds=max_rounds)
        if settled is None:
            return None
        rows, V, faces, gradient_norm = settled
        violator = problem.dual_violator(rows, V)
        if violator is None:
            return problem.accept(rows, V, faces, gradient_norm, value)
        if not np.any(U[violator]):  # no start to bring it back from
            return None
        faces = np.vstack([faces, problem.near_faces(U[[violator]])])
        state = np.append(rows, violator), np.vstack([V, U[violator]]), faces
    return None


def _settle(
    problem: _Program, rows: np.ndarray, V: np.ndarray, faces: np.ndarray, *, max_rounds: int
):
    """Steps 2-3 on the rows given: (rows, V, faces, gradient norm) at a KKT point of the
    program over them (with ``faces`` the active constraints), or None."""
    for _ in range(max_rounds):
        start, V, gradient_norm, scale = problem.newton(rows, faces, V)
        hit = problem.block(rows, faces, start, V)
        V = V if hit is None else hit  # stop where the first constraint is hit
        keep = support(V)
        if hit is None and keep.all() and gradient_norm > GRADIENT_RTOL * scale:
            fewer = _without_smallest(V)  # Newton stalls when a row heads for zero
            if fewer is None:
                return None
            keep = fewer
        if hit is not None or not keep.all():
            rows, V, faces = rows[keep], V[keep], faces[keep]
            continue
        released = problem.release(rows, V, faces)
        if released is None:
            return None
        if not released:
            return rows, V, faces, gradient_norm
    return None


def _without_smallest(V: np.ndarray) -> np.ndarray | None:
    """(p,) bool, all rows but the smallest if its norm is at most STALL_REL of the largest."""
    norms = row_norms(V)
    smallest = int(norms.argmin())
    return None if norms[smallest] > STALL_REL * norms.max() else np.arange(len(V)) != smallest


def support(U: np.ndarray) -> np.ndarray:
    """(k,) bool: rows with ``||u|| > SUPPORT_REL max(1, max ||u||)``."""
    norms = row_norms(U)
    return norms > SUPPORT_REL * max(1.0, float(norms.max(initial=0.0)))


class _Program:
    """The restricted program of one list of signed cones, in the row space of X."""

    def __init__(self, X, y, weight_decay, patterns, signs) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64).reshape(-1)
        self.lam = float(weight_decay)
        self.D = np.asarray(patterns, dtype=bool).reshape(-1, len(self.y))
        self.s = np.where(np.asarray(signs).reshape(-1) > 0, 1.0, -1.0)
        self.Q = null_space(self.X, complement=True)  # (d, r), the row space
        self.XQ = self.X @ self.Q  # (n, r)
        self.xnorm = row_norms(self.X)
        self.orient = np.where(self.D, 1.0, -1.0)  # (k, n): 2 D_i - 1
        self.bounds: tuple[np.ndarray, np.ndarray] | None = None

    def anchor(self, U: np.ndarray, bounds: np.ndarray) -> None:
        """Keep upper bounds on the rows' dual values at U's residual (see :func:`polish`)."""
        every = np.arange(len(self.s))
        self.bounds = (self.residual(every, U), bounds)

    def residual(self, rows: np.ndarray, V: np.ndarray) -> np.ndarray:
        """(n,) ``r = (2/n) (prediction - y)`` over the given rows."""
        return (2.0 / len(self.y)) * (self.prediction(rows, V) - self.y)

    def near_faces(self, V: np.ndarray) -> np.ndarray:
        """(p, n) bool: nonzero x_k with ``|x_k . v_i| <= FACE_REL ||x_k|| ||v_i||``."""
        scale = row_norms(V)[:, None] * self.xnorm[None, :]
        return (np.abs(V @ self.X.T) <= FACE_REL * scale) & (self.xnorm > 0)[None, :]

    def merge(self, rows: np.ndarray, V: np.ndarray, faces: np.ndarray):
        """Merge rows of one sign and faces whose patterns agree off the faces (step 1)."""
        keys = np.concatenate([self.s[rows, None] > 0, faces, self.D[rows] & ~faces], axis=1)
        groups: dict[bytes, list[int]] = {}
        for j, key in enumerate(keys):
            groups.setdefault(key.tobytes(), []).append(j)
        if len(groups) == len(rows):
            return rows, V, faces
        first = [g[0] for g in groups.values()]  # in order of first appearance
        merged = np.stack([V[g].sum(axis=0) for g in groups.values()])
        return rows[first], merged, faces[first]

    def prediction(self, rows: np.ndarray, V: np.ndarray) -> np.ndarray:
        """(n,) ``sum_i s_i D_i X v_i`` over the given rows."""
        return np.einsum("i,in,in->n", self.s[rows], self.D[rows], V @ self.X.T)

    def newton(self, rows, faces, V) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Minimise on the faces from the projection of V: (start, V, gradient norm, scale),
        the projection and the minimiser (p, d), the gradient norm there and its scale."""
        bases = [null_space(self.XQ[face]) for face in faces]
        blocks = [
            self.s[i] * (self.D[i][:, None] * (self.XQ @ N))
            for i, N in zip(rows, bases, strict=True)
        ]
        start = [N.T @ (self.Q.T @ v) for N, v in zip(bases, V, strict=True)]
        objective = FaceObjective(blocks, self.y, self.lam)
        z, gradient_norm = objective.minimise(start)
        lift = [self.Q @ (N @ b) for N, b in zip(bases + bases, start + z, strict=True)]
        lifted = np.reshape(lift, (2, len(bases), self.X.shape[1]))
        return lifted[0], lifted[1], gradient_norm, objective.scale

    def block(self, rows, faces, start, V) -> np.ndarray | None:
        """The point of the segment from ``start`` to V where it first leaves the cone.

        When some constraint off the faces is below ``-FEASIBILITY_REL ||x_k|| ||v_i||`` at V,
        the first of them hit along the segment joins ``faces`` (in place) and that point is
        returned (as in a primal active-set method); None when V is feasible.
        """
        scale = row_norms(V)[:, None] * self.xnorm[None, :]
        end = np.where(faces, 0.0, self.orient[rows] * (V @ self.X.T))
        violated = end < -FEASIBILITY_REL * scale
        if not violated.any():
            return None
        begin = np.maximum(self.orient[rows] * (start @ self.X.T), 0.0)
        t = np.where(violated, begin / np.where(violated, begin - end, 1.0), np.inf)
        j, k = np.unravel_index(np.argmin(t), t.shape)
        faces[j, k] = True
        return start + t[j, k] * (V - start)

    def release(self, rows, V, faces) -> bool | None:
        """Release from ``faces`` (in place) the most negative multiplier of a row whose face
        multipliers have no nonnegative choice (NNLS): True when released, False at a KKT
        point, None when that row has no negative least-squares multiplier."""
        norms = row_norms(V)
        r = self.residual(rows, V)
        for j in np.nonzero(faces.any(axis=1))[0]:
            i, k = rows[j], np.nonzero(faces[j])[0]
            grad = (
                self.s[i] * (self.XQ.T @ (self.D[i] * r))
                + 2 * self.lam * (self.Q.T @ V[j]) / norms[j]
            )
            M = (self.orient[i, k, None] * self.XQ[k]).T  # KKT: grad = M mu with mu >= 0
            if nnls(M, grad, 3 * M.shape[1])[1] <= 1e-9 * (math.sqrt(grad @ grad) + 2 * self.lam):
                continue
            mu = lstsq(M, grad)
            if mu.min() >= 0:
                return None
            faces[j, k[np.argmin(mu)]] = False
            return True
        return False

    def dual_violator(self, rows: np.ndarray, V: np.ndarray) -> int | None:
        """The row outside the support most above ``2 λ (1 + DUAL_RTOL)`` in the dual check of
        SCIENCE §3 (``||proj_K(-s X^T D r)||``), or None when every one passes."""
        outside = np.ones(len(self.s), dtype=bool)
        outside[rows] = False
        out = np.nonzero(outside)[0]
        if len(out) == 0:
            return None
        r = self.residual(rows, V)
        g = -self.s[out, None] * ((self.D[out] * r) @ self.X)
        bound = None
        if self.bounds is not None:
            moved = (self.D[out] * (r - self.bounds[0])) @ self.X
            bound = self.bounds[1][out] + np.sqrt(np.einsum("ij,ij->i", moved, moved))
        threshold = 2.0 * self.lam * (1.0 + DUAL_RTOL)
        values = values_above(self.X, self.orient[out], g, threshold, bound)
        worst = int(values.argmax())
        return int(out[worst]) if values[worst] > threshold else None

    def accept(self, rows, V, faces, gradient_norm: float, value: float) -> Polished | None:
        """Step 4's value check; the Polished result when it passes."""
        err = self.prediction(rows, V) - self.y
        polished = float(err @ err) / len(err) + 2 * self.lam * row_norms(V).sum()
        if polished > value + VALUE_RTOL * max(1.0, abs(value)):
            return None
        i = np.argsort(rows)
        return Polished(
            V[i], self.D[rows[i]], self.s[rows[i]], faces[i], polished, gradient_norm, rows[i]
        )
