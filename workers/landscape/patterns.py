"""Activation patterns of a dataset (SCIENCE.md section 2).

A pattern is D(u) = 1[X u > 0] for some u in R^d. Because the inequality is
strict, a pattern S is realisable iff some u has x_k . u > 0 for k in S and
x_k . u <= 0 otherwise; points on the hyperplane x_k . u = 0 count as inactive.

Enumeration works on the central hyperplane arrangement of the rows:

1. Zero rows are never active and are set aside. The other rows are
   normalised, projected onto their row space (dimension r = rank X) and
   grouped into lines: rows that are parallel up to sign. Rows on one line
   have equal bits when they point the same way; a line holding both
   orientations ("double" line) has three states: +, 0 (both bits off), -.
2. If the L lines are linearly independent (L = r), every state combination
   occurs, and the patterns are built directly (2^n for generic d >= n).
3. Otherwise every nonzero face of the arrangement has an extreme ray in its
   closure. At a ray rho the lines off rho have fixed signs, and the lines
   through rho (the set Z) can take every sign vector of their own
   arrangement, which lives in rho's orthogonal complement (rank r - 1).
   Rays are null spaces of independent (r - 1)-subsets of lines. A generic
   ray (|Z| = r - 1) contributes all 2^(r - 1) combinations, vectorised; a
   degenerate ray recurses into its (r - 1)-dimensional local arrangement.
   The union over rays, plus the zero pattern, is every pattern, exactly.

No linear program is needed for enumeration; :func:`is_feasible` is an LP
check of a single pattern (scipy HiGHS).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
from scipy.optimize import linprog

__all__ = ["count_patterns", "cover_count", "enumerate_patterns", "is_feasible", "theory_bound"]

_CHUNK_ELEMENTS = 1 << 22  # int8 entries of candidate patterns materialised per chunk


def _as_data(X: np.ndarray, tol: float) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or not np.isfinite(X).all():
        raise ValueError(f"X must be a finite (n, d) array, got shape {X.shape}")
    if not 0 <= tol < 1:
        raise ValueError(f"tol must be in [0, 1), got {tol!r}")
    return X


def _nonzero_rows(X: np.ndarray, tol: float) -> np.ndarray:
    """(n,) bool: rows whose norm exceeds tol times the largest row norm."""
    norms = np.linalg.norm(X, axis=1)
    return norms > tol * norms.max(initial=0.0) if norms.size else norms > 0


def _unique_rows(A: np.ndarray) -> np.ndarray:
    """Unique rows of a C-contiguous uint8/int8 (N, w) array, sorted bytewise."""
    if A.shape[1] == 0:
        return A[:1]
    A = np.ascontiguousarray(A)
    keys = np.unique(A.view(np.dtype((np.void, A.shape[1]))).ravel())
    return keys.view(A.dtype).reshape(-1, A.shape[1])


def _group_lines(U: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Group unit rows into lines: rows equal up to sign within distance tol.

    Args:
        U: (m, r) float64 unit rows.
        tol: distance under which u_i and +-u_j are the same line.

    Returns:
        line: (m,) int index of each row's line (first member is the line's
        representative), sign: (m,) int8, +1 if a row points as its
        representative, -1 if opposite.
    """
    m = U.shape[0]
    line = np.full(m, -1, dtype=np.intp)
    sign = np.ones(m, dtype=np.int8)
    count = 0
    for i in range(m):
        if line[i] >= 0:
            continue
        free = np.flatnonzero(line < 0)
        same = np.linalg.norm(U[free] - U[i], axis=1) <= tol
        opposite = np.linalg.norm(U[free] + U[i], axis=1) <= tol
        line[free[same | opposite]] = count
        sign[free[opposite & ~same]] = -1
        count += 1
    return line, sign


def _product_states(double: np.ndarray) -> np.ndarray:
    """All state vectors of independent lines: (P, L) int8, states {1, 0} or {1, 0, -1}."""
    if double.size == 0:
        return np.zeros((1, 0), dtype=np.int8)
    shape = tuple(3 if dbl else 2 for dbl in double)
    return (1 - np.indices(shape).reshape(len(shape), -1).T).astype(np.int8)


def _collapse(states: np.ndarray, double: np.ndarray) -> np.ndarray:
    """Map sign vectors (N, L) in {-1, 0, 1} to line states: a single line's - becomes 0."""
    states[:, ~double] = np.maximum(states[:, ~double], 0)
    return states


def _subset_chunks(L: int, k: int, size: int) -> Iterator[np.ndarray]:
    """Yield (c, k) intp arrays of the k-subsets of range(L), lexicographic, c <= size."""
    combos = itertools.combinations(range(L), k)
    while True:
        flat = np.fromiter(
            itertools.chain.from_iterable(itertools.islice(combos, size)), dtype=np.intp
        )
        if flat.size == 0:
            return
        yield flat.reshape(-1, k)


def _rays(E: np.ndarray, subsets: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Null directions of independent (r - 1)-subsets of lines.

    Args:
        E: (L, r) unit line representatives.
        subsets: (c, r - 1) indices into E.
        tol: a subset is independent iff its smallest singular value exceeds tol.

    Returns:
        rays: (c', r) unit vectors, subsets: (c', r - 1), the independent ones.
    """
    _, s, vt = np.linalg.svd(E[subsets], full_matrices=True)
    keep = s[:, -1] > tol
    return vt[keep, -1, :], subsets[keep]


def _generic_candidates(signs: np.ndarray, subsets: np.ndarray, double: np.ndarray) -> np.ndarray:
    """Patterns near generic rays +-rho, whose Z is an independent set of single lines.

    Args:
        signs: (R, L) int8 sign of each line at rho (0 exactly on Z).
        subsets: (R, k) the lines of Z.
        double: (L,) bool, lines holding both orientations.

    Returns:
        (2 R 2^k, L) int8 line states, with repeats.
    """
    base = np.concatenate([signs, -signs])
    zidx = np.concatenate([subsets, subsets])
    combos = 2 * _product_states(np.zeros(subsets.shape[1], dtype=bool)) - 1
    cand = np.repeat(base[:, None, :], combos.shape[0], axis=1)
    rows = np.arange(base.shape[0])[:, None, None]
    cols = np.arange(combos.shape[0])[None, :, None]
    cand[rows, cols, zidx[:, None, :]] = combos[None, :, :]
    return _collapse(cand.reshape(-1, base.shape[1]), double)


def _ray_candidates(
    E: np.ndarray, double: np.ndarray, ray: np.ndarray, zero: np.ndarray, tol: float
) -> np.ndarray:
    """Patterns near +-rho for any ray, by recursion into its local arrangement.

    Args:
        E: (L, r) unit line representatives.
        double: (L,) bool.
        ray: (r,) unit vector rho.
        zero: (L,) bool, the lines Z through rho.
        tol: geometric tolerance.

    Returns:
        (N, L) int8 line states, with repeats.
    """
    signs = np.sign(E @ ray).astype(np.int8)
    signs[zero] = 0
    complement = np.linalg.svd(ray[None, :], full_matrices=True)[2][1:]  # (r - 1, r)
    local_E = E[zero] @ complement.T
    local_E /= np.linalg.norm(local_E, axis=1, keepdims=True)
    local = _line_states(local_E, double[zero], tol)
    blocks = []
    for base in (signs, -signs):
        cand = np.repeat(base[None, :], local.shape[0], axis=0)
        cand[:, zero] = local
        blocks.append(_collapse(cand, double))
    return np.concatenate(blocks)


def _line_states(E: np.ndarray, double: np.ndarray, tol: float) -> np.ndarray:
    """Every state vector of an arrangement of distinct lines of full rank.

    Args:
        E: (L, r) unit line representatives, pairwise non-parallel, rank r.
        double: (L,) bool, lines whose states are {1, 0, -1} rather than {1, 0}.
        tol: geometric tolerance (unit-scale).

    Returns:
        (P, L) int8 unique state vectors, including the zero vector.
    """
    L, r = E.shape
    if r == 1:  # u > 0, u < 0, u = 0
        signs = np.sign(E[:, 0]).astype(np.int8)
        states = np.stack([signs, -signs, np.zeros_like(signs)])
        return _unique_rows(_collapse(states, double))
    if r == E.shape[0]:  # independent lines: every combination occurs
        return _product_states(double)
    blocks = [np.zeros((1, L), dtype=np.int8)]
    degenerate: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    size = max(1, _CHUNK_ELEMENTS // (L << r))
    for subsets in _subset_chunks(L, r - 1, size):
        rays, subsets = _rays(E, subsets, tol)
        values = rays @ E.T  # (R, L)
        zero = np.abs(values) <= tol
        generic = (zero.sum(axis=1) == r - 1) & ~double[subsets].any(axis=1)
        signs = np.where(zero, 0, np.sign(values)).astype(np.int8)
        blocks.append(_unique_rows(_generic_candidates(signs[generic], subsets[generic], double)))
        for ray, mask in zip(rays[~generic], zero[~generic], strict=True):
            degenerate.setdefault(mask.tobytes(), (ray, mask))
    blocks += [_ray_candidates(E, double, ray, mask, tol) for ray, mask in degenerate.values()]
    return _unique_rows(np.concatenate(blocks))


def enumerate_patterns(X: np.ndarray, *, tol: float = 1e-9) -> np.ndarray:
    """All distinct activation patterns D(u) = 1[X u > 0], u in R^d.

    Exact for any data, including repeated, parallel or antiparallel points,
    zero rows and points in a lower-dimensional subspace, with these
    tolerance semantics (all relative, so the result is invariant to scaling
    X or any of its rows):

    - a row with norm <= tol * (largest row norm) is a zero row (never active);
    - the rank of X counts singular values of the row-normalised X above
      tol times the largest;
    - two normalised rows within distance tol of each other (or of each
      other's negative) are parallel (antiparallel);
    - a normalised row x and a unit direction rho with |x . rho| <= tol are
      incident (x . rho = 0).

    Data whose non-degeneracies are all well above tol (e.g. Gaussian data,
    or exact degenerate constructions perturbed only by rounding) is handled
    exactly. Every pattern u = 0 realises is included, so the all-zero
    pattern is always present, also when no open cell has X u < 0 (then the
    count of Gaussian data with d < n is Cover's count plus one).

    Cost: for L distinct lines of rank r < L, about C(L, r - 1) 2^r candidate
    rows of length L, processed in chunks; for L = r it is the output size.

    Args:
        X: (n, d) float64 data, rows x_k.
        tol: geometric tolerance, see above; default 1e-9.

    Returns:
        (P, n) bool, the distinct patterns as unique rows, sorted
        lexicographically (False < True, column 0 most significant), so the
        first row is the all-zero pattern.
    """
    X = _as_data(X, tol)
    n = X.shape[0]
    active = _nonzero_rows(X, tol)
    if not active.any():
        return np.zeros((1, n), dtype=bool)
    U = X[active] / np.linalg.norm(X[active], axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(U, full_matrices=False)
    V = U @ vt[: int(np.sum(s > tol * s[0]))].T
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    line, sign = _group_lines(V, tol)
    first = np.unique(line, return_index=True)[1]
    double = np.zeros(first.size, dtype=bool)
    double[line[sign < 0]] = True
    states = _line_states(V[first], double, tol)
    bits = np.zeros((states.shape[0], n), dtype=bool)
    bits[:, active] = states[:, line] * sign == 1
    packed = _unique_rows(np.packbits(bits, axis=1))
    return np.unpackbits(packed, axis=1, count=n).astype(bool)


def count_patterns(X: np.ndarray, *, tol: float = 1e-9) -> int:
    """Number of distinct activation patterns of X; see :func:`enumerate_patterns`."""
    return int(enumerate_patterns(X, tol=tol).shape[0])


def cover_count(n: int, d: int) -> int:
    """Pattern count of n points in general position in R^d (Cover), exact.

    2^n if d >= n, else 2 * sum_{i=0}^{d-1} C(n-1, i). Requires n, d >= 1.
    """
    if n < 1 or d < 1:
        raise ValueError(f"cover_count needs n, d >= 1, got n={n}, d={d}")
    if d >= n:
        return 2**n
    return 2 * sum(math.comb(n - 1, i) for i in range(d))


def theory_bound(n: int, d: int) -> int:
    """The order min(n^d, 2^n) of the pattern count, as an exact Python int."""
    return min(n**d, 2**n)


def is_feasible(X: np.ndarray, pattern: np.ndarray, *, tol: float = 1e-9) -> bool:
    """Whether a 0/1 vector is an activation pattern of X, by one LP.

    Rows are normalised and u is confined to the box [-1, 1]^d; the LP
    maximises a margin t <= 1 with x_k . u >= t for k in the pattern and
    x_k . u <= 0 otherwise (scipy HiGHS, feasibility tolerances 1e-10). The
    pattern is realisable iff the optimal margin exceeds tol. Zero rows (norm
    <= tol times the largest) can only be inactive.

    Args:
        X: (n, d) float64 data.
        pattern: (n,) bool or 0/1.
        tol: margin threshold, and relative norm threshold for zero rows.

    Returns:
        True iff some u has 1[X u > 0] == pattern (margin > tol).
    """
    X = _as_data(X, tol)
    on = np.asarray(pattern).astype(bool).reshape(-1)
    if on.shape != (X.shape[0],):
        raise ValueError(f"pattern must have shape ({X.shape[0]},), got {on.shape}")
    active = _nonzero_rows(X, tol)
    if (on & ~active).any():
        return False
    if not on.any():
        return True
    U = X[active] / np.linalg.norm(X[active], axis=1, keepdims=True)
    on = on[active]
    A = np.hstack([np.where(on[:, None], -U, U), on[:, None].astype(float)])
    c = np.zeros(X.shape[1] + 1)
    c[-1] = -1.0
    bounds = [(-1.0, 1.0)] * X.shape[1] + [(0.0, 1.0)]
    options = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
    res = linprog(c, A_ub=A, b_ub=np.zeros(len(U)), bounds=bounds, method="highs", options=options)
    return bool(res.status == 0 and -res.fun > tol)
