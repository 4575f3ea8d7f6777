"""The dual certificate of the convex program (shared/SCIENCE.md §3).

Given the residual r = (2/n)(prediction - y), the signed cone (D, s) is priced
by

    value(D, s) = max { -s u . (X^T D r) : (2D - I) X u >= 0, ||u|| <= 1 }
                = || proj_K(g) ||,   g = -s X^T D r,   K = {u : A u >= 0},  A = (2D - I) X.

The program's solution is optimal over all cones iff every value is at most
2 weight_decay.

By Moreau's decomposition proj_K(g) = g + A^T mu* where mu* >= 0 minimises
||g + A^T mu||, and ||g + A^T mu|| >= value for every mu >= 0. The values are
computed in stages, all vectorised over signed cones, each later stage only
for the cones the earlier ones left open:

1. Half-space step: project g onto the half-space {a_k . u >= 0} of the
   constraint that shortens g the most (one coordinate of mu). Its norm is an
   upper bound, and the value itself when the point already lies in K (in
   particular when g lies in K).
2. Only with a ``floor`` and n <= 4 d: a few Hildreth sweeps (cyclic
   coordinate descent on mu >= 0). Every iterate gives an upper bound, and
   the cones whose bound drops to the floor stop there.
3. Active set (Lawson-Hanson style, batched): keep at most d + 1 active rows
   J, starting from the half-space step's row; solve the least-squares
   problem v = g + A_J^T mu_J on J; drop the most negative mu_j or add the
   most violated row, until the KKT conditions (A v >= 0, mu_J >= 0) hold to
   1e-11 relative; then ||v|| is the value.
4. The few cones still open (about 1-2 % in tests) are solved one by one by
   scipy's NNLS.

For a handful of cones (the census's dual checks) :func:`few_cone_values` runs stage 1
a few times and then the NNLS. :func:`project` and :func:`projections` give the projected
vectors themselves (one NNLS each; the census's screen keeps them as its atoms).
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from cachetools import LRUCache

from .small import nnls, row_norms

#: Patterns processed together in the vectorised first stage.
_CHUNK = 4096
#: Relative slack in the KKT checks (scaled by ||g|| and ||x_k||).
_KKT_RTOL = 1e-11
_ACTIVE_SET_STEPS = 12
_SWEEPS = 6
#: Hildreth's sweeps cost n Python-level steps; used when n <= this * d.
_HILDRETH_MAX_ROWS_PER_DIM = 4
#: Half-space steps of :func:`few_cone_values` before its exact projections.
_GREEDY_STEPS = 3


def cone_values(
    X: np.ndarray, orient: np.ndarray, g: np.ndarray, *, floor: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """|| proj_K(g) || for a batch of cones K = {u : (orient * X) u >= 0}.

    Args:
        X: (n, d) float64 data.
        orient: (c, n) in {+1, -1}, the signs 2D - 1 of each cone's rows.
        g: (c, d) float64 vectors to project.
        floor: if given, cones found to have value <= floor stop early with an
            upper bound <= floor instead of the value.

    Returns:
        (values, exact): (c,) float64 and (c,) bool. Exact entries satisfy
        the KKT conditions to 1e-11 relative to ||g||.
    """
    X = np.asarray(X, dtype=np.float64)
    orient = np.asarray(orient, dtype=np.float64).reshape(-1, X.shape[0])
    g = np.asarray(g, dtype=np.float64).reshape(-1, X.shape[1])
    values, exact, first = _halfspace_step(X, orient, g, orient * (g @ X.T))
    open_ = ~exact if floor is None else ~exact & (values > floor)
    if np.any(open_):
        idx = np.flatnonzero(open_)
        values[idx], exact[idx] = _refine(X, orient[idx], g[idx], first[idx], floor)
    return values, exact


def few_cone_values(X: np.ndarray, orient: np.ndarray, g: np.ndarray, floor: float) -> np.ndarray:
    """:func:`cone_values` with a ``floor``, for a handful of cones.

    Upper bounds first: up to ``_GREEDY_STEPS`` half-space steps (stage 1 repeated from its
    point: each projects onto the half-space of the constraint that shortens the vector
    most, so the vector stays ``g + A^T mu`` with ``mu >= 0`` and its norm only falls), for
    the cones still above the floor. The cones they leave above it are projected one by
    one (:func:`projections`), which on a few cones costs less than the batched stages 2-3
    (their per-step overhead). On bench/census's dual checks (407 open cones, 15 above the
    floor) one step closed 170, three closed 351.

    Args:
        X: (n, d) float64 data.
        orient: (c, n) in {+1, -1}, the signs 2D - 1 of each cone's rows.
        g: (c, d) float64 vectors to project.
        floor: values above it are exact; the others are upper bounds at most ``floor``.

    Returns:
        (c,) float64.
    """
    _, inv, _ = _rows(X)
    values = np.sqrt(np.einsum("ij,ij->i", g, g))
    live = np.nonzero(values > floor)[0]
    u, o = g[live], orient[live]
    for _ in range(_GREEDY_STEPS):
        if len(live) == 0:
            break
        neg = o * (u @ X.T)
        np.minimum(neg, 0.0, out=neg)
        k = (neg * neg * inv).argmax(axis=1)
        rows = np.arange(len(live))
        u = u - (neg[rows, k] * inv[k] * o[rows, k])[:, None] * X[k]
        now = np.sqrt(np.einsum("ij,ij->i", u, u))
        values[live] = now
        keep = now > floor
        if not keep.all():
            live, u, o = live[keep], u[keep], o[keep]
    if len(live):
        values[live] = row_norms(projections(X, orient[live], g[live]))
    return values


def _rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(||x_k||^2, 1 / ||x_k||^2 or 0 for a zero row, x_k != 0)`` of X (n, d), each (n,).

    Cached by X's bytes (a census prices many cones of one dataset); read-only.
    """
    if not X.flags.c_contiguous or X.dtype != np.float64:
        return _row_data(X)
    return _cached_row_data(X.shape, X.tobytes())


def _row_data(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xnorm2 = np.einsum("kd,kd->k", X, X)
    inv = np.where(xnorm2 > 0, 1.0 / np.where(xnorm2 > 0, xnorm2, 1.0), 0.0)
    return xnorm2, inv, np.any(X != 0.0, axis=1)


@functools.lru_cache(maxsize=64)
def _cached_row_data(shape: tuple[int, ...], data: bytes):
    found = _row_data(np.frombuffer(data, dtype=np.float64).reshape(shape))
    for array in found:
        array.flags.writeable = False
    return found


def signed_values(
    X: np.ndarray, patterns: np.ndarray, G: np.ndarray, floor: float | None
) -> np.ndarray:
    """Values of both signed cones of each pattern, given G = X^T D r.

    Args:
        X: (n, d) float64 data.
        patterns: (c, n) bool.
        G: (c, d) float64, X^T D r per pattern.
        floor: as in ``dual_violations``.

    Returns:
        (c, 2) float64; column 0 is s = +1, column 1 is s = -1.
    """
    if floor is not None:
        return _signed_values_above(X, np.asarray(patterns, dtype=bool), G, floor)
    orient = np.where(patterns, 1.0, -1.0)
    XG = orient * (G @ X.T)  # a_k . G
    values = np.empty((len(G), 2))
    for col, s in enumerate((1.0, -1.0)):
        g = -s * G
        upper, exact, first = _halfspace_step(X, orient, g, -s * XG)
        open_ = ~exact if floor is None else ~exact & (upper > floor)
        idx = np.flatnonzero(open_)
        if len(idx):
            upper[idx] = _refine(X, orient[idx], g[idx], first[idx], floor)[0]
        values[:, col] = upper
    return values


def _signed_values_above(X, patterns, G, floor: float) -> np.ndarray:
    """``signed_values`` with a floor: the half-space step's norm first, without u.

    With unit rows e_k = x_k / ||x_k|| and c_k = (2D - I)_k e_k . G, the half-space step of
    s = +1 (g = -G) takes the largest c_k > 0 and of s = -1 the most negative, and since it
    removes one component of g, ||u1||^2 = ||G||^2 - c_k^2: one (c, n) product gives both
    signs' upper bounds. Only the signed cones whose bound exceeds the floor (with a
    rounding margin) go through the stages of ``_halfspace_step`` and ``_refine``; the rest
    keep the bound, which is what those stages would have returned for them.
    """
    xnorm = row_norms(X)
    unit = np.ascontiguousarray((X / np.where(xnorm > 0, xnorm, 1.0)[:, None]).T)
    C = np.where(patterns, 1.0, -1.0)
    C *= G @ unit  # (d, n) contiguous: BLAS is several times faster than with X.T at d = 3
    G2 = np.einsum("cd,cd->c", G, G)
    top = np.maximum(C.max(axis=1, initial=0.0), 0.0)
    low = np.minimum(C.min(axis=1, initial=0.0), 0.0)
    values = np.sqrt(np.maximum(np.stack([G2 - top * top, G2 - low * low], axis=1), 0.0))
    margin = 8.0 * np.finfo(np.float64).eps * G2[:, None] * X.shape[0]
    rows, cols = np.nonzero(values * values > floor * floor - margin)
    for col in (0, 1):
        idx = rows[cols == col]
        if len(idx) == 0:
            continue
        s = 1.0 if col == 0 else -1.0
        orient = np.where(patterns[idx], 1.0, -1.0)
        g = -s * G[idx]
        upper, exact, first = _halfspace_step(X, orient, g, orient * (g @ X.T))
        open_ = np.flatnonzero(~exact & (upper > floor))
        if len(open_):
            upper[open_] = _refine(X, orient[open_], g[open_], first[open_], floor)[0]
        values[idx, col] = upper
    return values


def _halfspace_step(X, orient, g, Ag) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1 for cones with rows orient * X (c, n), vectors g (c, d), Ag = A g (c, n)."""
    xnorm2 = np.einsum("kd,kd->k", X, X)
    inv = np.where(xnorm2 > 0, 1.0 / np.where(xnorm2 > 0, xnorm2, 1.0), 0.0)
    neg = np.minimum(Ag, 0.0)
    k = np.argmax(neg * neg * inv, axis=1)
    rows = np.arange(len(g))
    step = -neg[rows, k] * inv[k] * orient[rows, k]  # u1 = g + step x_k
    u1 = g + step[:, None] * X[k]
    Au1 = orient * (u1 @ X.T)
    slack = _KKT_RTOL * row_norms(g)[:, None] * np.sqrt(xnorm2)[None, :]
    return row_norms(u1), np.all(Au1 >= -slack, axis=1), k


def _refine(X, orient, g, first, floor) -> tuple[np.ndarray, np.ndarray]:
    """Stages 2-4 for cones (c, n) orient, (c, d) g, starting from the rows ``first`` (c,)."""
    values, exact = row_norms(g), np.zeros(len(g), dtype=bool)
    todo = np.arange(len(g))
    if floor is not None and X.shape[0] <= _HILDRETH_MAX_ROWS_PER_DIM * X.shape[1]:
        values = _hildreth(X, orient, g, floor)
        todo = np.flatnonzero(values > floor)
    sub = _dual_active_set(X, orient[todo], g[todo], first[todo], floor)
    values[todo], exact[todo] = sub[0], sub[1]
    for i in todo[~sub[2]]:
        values[i], exact[i] = project_norm(orient[i][:, None] * X, g[i]), True
    return values, exact


def _hildreth(X, orient, g, floor) -> np.ndarray:
    """Upper bounds (c,) from cyclic coordinate descent on mu >= 0 (Hildreth's method).

    Each coordinate step projects v = g + A^T mu onto one half-space, keeping
    mu >= 0, so every ||v|| is an upper bound. Cones stop once it is <= floor.
    """
    xnorm2 = _rows(X)[0]
    steps = [(k, X[k], xnorm2[k]) for k in np.nonzero(xnorm2 > 0)[0]]
    upper = row_norms(g)
    live = np.arange(len(g))
    # The live cones only, their signs and multipliers by row of X: (n, l).
    o, m, w = orient.T.copy(), np.zeros(orient.T.shape), g.copy()
    for sweep in range(_SWEEPS):
        for k, x, x2 in steps:
            old = m[k]
            new = np.maximum(0.0, old - o[k] * (w @ x) / x2)
            w += ((new - old) * o[k])[:, None] * x
            m[k] = new
        if sweep % 2 == 1:
            upper[live] = row_norms(w)
            keep = upper[live] > floor
            live, o, m, w = live[keep], o[:, keep], m[:, keep], w[keep]
            if len(live) == 0:
                break
    return upper


def _dual_active_set(X, orient, g, first, floor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched active-set method for min_{mu >= 0} ||g + A^T mu|| (Lawson-Hanson style).

    Each cone keeps at most d + 1 active rows J, starting from J = {first}. A
    step solves the least-squares problem on J; if some mu_j < 0 the most
    negative leaves J, else if some row has a_k . v < 0 the most violated
    joins J, else the KKT conditions hold and ||v|| is the value. With mu >= 0,
    ||v|| is an upper bound, so with a ``floor`` a cone stops once it is <= floor.

    Returns:
        (values, exact, settled), each (c,); unsettled cones need the fallback.
    """
    c, d = g.shape
    xnorm = row_norms(X)
    inv = np.where(xnorm > 0, 1.0 / np.where(xnorm > 0, xnorm, 1.0), 0.0)
    values, exact = row_norms(g), np.zeros(c, dtype=bool)
    settled = np.zeros(c, dtype=bool)
    slots = np.full((c, d + 1), -1)
    slots[:, 0] = first
    live = np.arange(c)
    for _ in range(_ACTIVE_SET_STEPS + 4 * d):
        S = slots[live]
        valid = S >= 0
        rows = np.where(valid, S, 0)
        B = (orient[live[:, None], rows] * valid)[..., None] * X[rows]  # (l, m, d)
        gram = B @ B.transpose(0, 2, 1)
        scale = np.einsum("lmm->l", gram)[:, None, None] + 1.0
        gram += np.eye(d + 1) * (~valid)[:, :, None] + 1e-15 * scale * np.eye(d + 1)
        gl = g[live]
        mu = np.linalg.solve(gram, -np.einsum("lmd,ld->lm", B, gl)[..., None])[..., 0]
        v = gl + np.einsum("lmd,lm->ld", B, mu)
        tol = _KKT_RTOL * row_norms(gl)
        mu_scaled = np.where(valid, mu * xnorm[rows], np.inf)
        drop = np.argmin(mu_scaled, axis=1)
        dual_ok = mu_scaled[np.arange(len(live)), drop] >= -tol
        slack = orient[live] * (v @ X.T) * inv
        add = np.argmin(slack, axis=1)
        primal_ok = slack[np.arange(len(live)), add] >= -tol
        vnorm = row_norms(v)
        done = dual_ok & primal_ok
        if floor is not None:
            done |= dual_ok & (vnorm <= floor)
        values[live[done]], settled[live[done]] = vnorm[done], True
        exact[live[done & primal_ok]] = True
        S[~dual_ok, drop[~dual_ok]] = -1
        grow = dual_ok & ~done
        free = np.argmin(S >= 0, axis=1)
        stuck = grow & np.all(S >= 0, axis=1)
        S[grow & ~stuck, free[grow & ~stuck]] = add[grow & ~stuck]
        slots[live] = S
        live = live[~done & ~stuck]
        if len(live) == 0:
            break
    return values, exact, settled


def project(A: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``proj_K(g)`` for one cone K = {u : A u >= 0}, by scipy's NNLS.

    Moreau's decomposition: ``proj_K(g) = g + A^T mu`` with ``mu >= 0`` minimising
    ``||g + A^T mu||`` (module docstring). Zero rows give no constraint and are dropped.

    Args:
        A: (n, d) float64 constraint rows (zero rows are allowed).
        g: (d,) float64.

    Returns:
        (d,) float64, a new array.
    """
    return _project(A[np.any(A != 0.0, axis=1)], g)


def _project(A: np.ndarray, g: np.ndarray) -> np.ndarray:
    """:func:`project` with the zero rows of A already dropped."""
    if len(A) == 0:
        return np.array(g, dtype=np.float64)
    mu, _ = nnls(A.T, -g, 50 * max(A.shape))
    return g + A.T @ mu


def project_norm(A: np.ndarray, g: np.ndarray) -> float:
    """|| proj_K(g) || for one cone K = {u : A u >= 0} (:func:`project`).

    Args:
        A: (n, d) float64 constraint rows (zero rows are allowed).
        g: (d,) float64.

    Returns:
        The norm of the projection.
    """
    return float(np.linalg.norm(project(A, g)))


def projections(
    X: np.ndarray, orient: np.ndarray, G: np.ndarray, *, memo: bool = False
) -> np.ndarray:
    """(c, d) ``proj_K(G[i])`` for the cones ``K = {u : (orient[i] * X) u >= 0}``.

    :func:`project` for many cones: a vector already in its cone (checked in one product) is
    its own projection, the others take one NNLS each. For a handful of cones this is
    cheaper than the batched stages of :func:`cone_values` (their per-step overhead).

    Args:
        X: (n, d) float64 data.
        orient: (c, n) in {+1, -1}, the signs 2D - 1 of each cone's rows.
        G: (c, d) float64 vectors to project.
        memo: keep each NNLS projection by the exact bytes of its cone's signs and vector,
            per X (:func:`_memo_of`), and reuse it: for vectors that recur across calls on
            one problem (a census screen's atoms at the optimal residual, by every chunk).
            A pure function of those bytes, so the result is the same to the bit.

    Returns:
        (c, d) float64, a new array.
    """
    P = np.array(G, dtype=np.float64)
    nonzero = _rows(X)[2]
    if not nonzero.all():
        X = X[nonzero]
        orient = orient[:, nonzero]
    outside = np.nonzero(np.any(orient * (P @ X.T) < 0.0, axis=1))[0]
    if not memo:
        for i in outside:
            P[i] = _project(orient[i][:, None] * X, P[i])
        return P
    kept = _memo_of(X) if len(outside) else {}
    limit = MEMO_BYTES // (8 * (orient.shape[1] + 2 * P.shape[1]) + 200)
    for i in outside:
        key = orient[i].tobytes() + P[i].tobytes()
        found = kept.get(key)
        if found is None:
            found = _project(orient[i][:, None] * X, P[i])
            if len(kept) >= limit:
                kept.clear()
            kept[key] = found
        P[i] = found
    return P


#: About the bytes of projections :func:`projections` keeps per X (the entries are cleared
#: when full; an entry takes about 8 (n + 2 d) + 200 bytes), and the X it keeps them for
#: (least recently used dropped first).
MEMO_BYTES, MEMO_DATASETS = 16 << 20, 2
_memos: LRUCache[tuple, dict[bytes, np.ndarray]] = LRUCache(maxsize=MEMO_DATASETS)
_memo_lock = threading.Lock()


def _memo_of(X: np.ndarray) -> dict[bytes, np.ndarray]:
    """The projections kept for the data X (its shape and bytes)."""
    key = (X.shape, np.ascontiguousarray(X, dtype=np.float64).tobytes())
    with _memo_lock:
        kept = _memos.get(key)
        if kept is None:
            kept = _memos[key] = {}
    return kept


def dual_violations(
    X: np.ndarray,
    residual: np.ndarray,
    patterns: np.ndarray,
    *,
    floor: float | None = None,
) -> np.ndarray:
    """Projection norms of -s X^T D r onto every signed cone (D, s).

    Args:
        X: (n, d) float64 data.
        residual: (n,) float64, r = (2/n)(prediction - y).
        patterns: (P, n) bool.
        floor: if given, only values above it are computed exactly; an entry
            found to be at most ``floor`` may be returned as an upper bound
            (still <= floor). With floor = 2 weight_decay,
            max(0, max(result) - floor) is the exact certificate at a fraction
            of the cost.

    Returns:
        (P, 2) float64; column 0 is s = +1, column 1 is s = -1. Exact entries
        satisfy the projection's KKT conditions to 1e-11 relative to
        ||X^T D r||.
    """
    X, patterns, G = _setup(X, residual, patterns)
    gnorm = row_norms(G)
    values = np.repeat(gnorm[:, None], 2, axis=1)  # ||proj_K g|| <= ||g||
    todo = np.arange(len(G)) if floor is None else np.flatnonzero(gnorm > floor)
    for start in range(0, len(todo), _CHUNK):
        idx = todo[start : start + _CHUNK]
        values[idx] = signed_values(X, patterns[idx], G[idx], floor)
    return values


def _setup(X, residual, patterns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    r = np.asarray(residual, dtype=np.float64).reshape(-1)
    patterns = np.asarray(patterns, dtype=bool).reshape(-1, X.shape[0])
    return X, patterns, pattern_sums(patterns, r[:, None] * X)


def pattern_sums(patterns: np.ndarray, M: np.ndarray) -> np.ndarray:
    """sum_{k in D} M_k for every pattern D: (P, n) bool or 0/1 float, (n, d) -> (P, d)."""
    if patterns.dtype != np.float64:
        patterns = patterns.astype(np.float64)
    return patterns @ M


def gap_bound(value: float, residual: np.ndarray, y: np.ndarray, excess: float) -> float:
    """Certified bound on value - (global minimum) from weak duality.

    The dual of the full program is max_nu -nu . y - (n/4) ||nu||^2 subject to
    every signed cone's value at nu being <= 2 lambda. If the largest value at
    the residual r is 2 lambda (1 + excess), nu = r / (1 + excess) is feasible,
    so the global minimum is at least the dual objective there.

    Args:
        value: a primal objective value (attained by the solution).
        residual: (n,) r = (2/n)(prediction - y) of that solution.
        y: (n,) labels.
        excess: max(0, max value / (2 lambda) - 1) at r.

    Returns:
        max(0, value - dual objective at r / (1 + excess)).
    """
    nu = np.asarray(residual, dtype=np.float64) / (1.0 + excess)
    dual = -float(nu @ np.asarray(y, dtype=np.float64)) - len(nu) / 4.0 * float(nu @ nu)
    return max(0.0, value - dual)
