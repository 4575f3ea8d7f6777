"""Activation patterns of a dataset (SCIENCE.md section 2).

Convention. A pattern is D(u) = 1[X u > 0] for a **generic** direction u,
i.e. u in an open region (chamber) of the arrangement of the hyperplanes
{u : x_k . u = 0} of the nonzero rows: x_k . u != 0 for every nonzero row.
Patterns reached only on lower-dimensional faces (including u = 0) are not
counted: their cones add nothing to the convex program (a vector on a face
lies in the closure of an adjacent chamber's cone with the same D X u, so
merging it into that chamber's variable never increases the objective), and
random initialisations never produce them. In general position this gives
exactly 2^n when d >= n and Cover's count when d < n. The all-zero pattern
is counted exactly when some u has x_k . u < 0 for every nonzero row (always
when the nonzero rows are linearly independent, e.g. d >= n in general
position). Zero rows are never active.

Enumeration works on the central hyperplane arrangement of the rows:

1. Zero rows are set aside (their bit is always 0). The other rows are
   normalised, projected onto their row space (dimension r = rank X) and
   grouped into lines: rows that are parallel up to sign. In a chamber every
   line has a sign, + or -, and the rows of a line are active exactly when
   they point the line's way, so chambers and patterns correspond one to one
   (a line holding both orientations never has all its rows off).
2. If the L lines are linearly independent (L = r), every sign vector is a
   chamber (2^n for generic d >= n).
3. Otherwise (L > r >= 2) the closure of every chamber is a pointed cone with
   an extreme ray rho of the arrangement. The lines off rho have fixed signs
   on the chamber, and the lines through rho (the set Z) take the signs of a
   chamber of their own arrangement, which lives in rho's orthogonal
   complement (rank r - 1); conversely each such combination is a chamber.
   Rays are null spaces of independent (r - 1)-subsets of lines. A generic
   ray (|Z| = r - 1) contributes all 2^(r - 1) sign vectors of Z,
   vectorised; a degenerate ray recurses into its local arrangement. The
   union over rays +-rho is every chamber, exactly.

No linear program is needed for enumeration; :func:`is_feasible` checks a
single pattern (a cheap witness first, else one scipy HiGHS LP).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from scipy.optimize import linprog

from .counting import cover_count, theory_bound

__all__ = [
    "cone_keys",
    "count_patterns",
    "cover_count",
    "distinct_cones",
    "enumerate_patterns",
    "is_feasible",
    "theory_bound",
]

_CHUNK_ELEMENTS = 1 << 22  # int8 entries of candidate sign vectors materialised per chunk


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


def _all_signs(k: int) -> np.ndarray:
    """(2^k, k) int8, every vector in {1, -1}^k (lexicographic, 1 first)."""
    if k == 0:
        return np.zeros((1, 0), dtype=np.int8)
    return (1 - 2 * np.indices((2,) * k).reshape(k, -1).T).astype(np.int8)


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


def _generic_chambers(signs: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Chambers around generic rays +-rho, whose Z is an independent set of k lines.

    Args:
        signs: (R, L) int8 sign of each line at rho (0 exactly on Z).
        subsets: (R, k) the lines of Z.

    Returns:
        (2 R 2^k, L) int8 sign vectors, with repeats.
    """
    base = np.concatenate([signs, -signs])
    zidx = np.concatenate([subsets, subsets])
    combos = _all_signs(subsets.shape[1])
    cand = np.repeat(base[:, None, :], combos.shape[0], axis=1)
    rows = np.arange(base.shape[0])[:, None, None]
    cols = np.arange(combos.shape[0])[None, :, None]
    cand[rows, cols, zidx[:, None, :]] = combos[None, :, :]
    return cand.reshape(-1, base.shape[1])


def _ray_chambers(E: np.ndarray, ray: np.ndarray, zero: np.ndarray, tol: float) -> np.ndarray:
    """Chambers around +-rho for any ray, by recursion into its local arrangement.

    Args:
        E: (L, r) unit line representatives.
        ray: (r,) unit vector rho.
        zero: (L,) bool, the lines Z through rho (at least r - 1 of rank r - 1).
        tol: geometric tolerance.

    Returns:
        (N, L) int8 sign vectors, with repeats.
    """
    signs = np.sign(E @ ray).astype(np.int8)
    signs[zero] = 0
    complement = np.linalg.svd(ray[None, :], full_matrices=True)[2][1:]  # (r - 1, r)
    local_E = E[zero] @ complement.T
    local_E /= np.linalg.norm(local_E, axis=1, keepdims=True)
    local = _chambers(local_E, tol)
    blocks = []
    for base in (signs, -signs):
        cand = np.repeat(base[None, :], local.shape[0], axis=0)
        cand[:, zero] = local
        blocks.append(cand)
    return np.concatenate(blocks)


def _chambers(E: np.ndarray, tol: float) -> np.ndarray:
    """Sign vectors of the chambers of an essential central arrangement.

    Args:
        E: (L, r) unit normals of the hyperplanes, pairwise non-parallel, rank r >= 1.
        tol: geometric tolerance (unit-scale).

    Returns:
        (P, L) int8 unique vectors in {1, -1}^L, sorted bytewise.
    """
    L, r = E.shape
    if r == L:  # independent normals (also r = 1): every sign vector is a chamber
        return _unique_rows(_all_signs(L))
    blocks = []
    degenerate: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    size = max(1, _CHUNK_ELEMENTS // (L << r))
    for subsets in _subset_chunks(L, r - 1, size):
        rays, subsets = _rays(E, subsets, tol)
        values = rays @ E.T  # (R, L)
        zero = np.abs(values) <= tol
        generic = zero.sum(axis=1) == r - 1
        signs = np.where(zero, 0, np.sign(values)).astype(np.int8)
        blocks.append(_unique_rows(_generic_chambers(signs[generic], subsets[generic])))
        for ray, mask in zip(rays[~generic], zero[~generic], strict=True):
            degenerate.setdefault(mask.tobytes(), (ray, mask))
    blocks += [_ray_chambers(E, ray, mask, tol) for ray, mask in degenerate.values()]
    return _unique_rows(np.concatenate(blocks))


def enumerate_patterns(X: np.ndarray, *, tol: float = 1e-9) -> np.ndarray:
    """All distinct patterns D(u) = 1[X u > 0] of generic directions u (chambers).

    A direction is generic when x_k . u != 0 for every nonzero row; patterns
    of lower-dimensional faces only (e.g. u = 0) are not included, see the
    module docstring. Exact for any data, including repeated, parallel or
    antiparallel points, zero rows and points in a lower-dimensional
    subspace, with these tolerance semantics (all relative, so the result is
    invariant to scaling X or any of its rows):

    - a row with norm <= tol * (largest row norm) is a zero row (never active);
    - the rank of X counts singular values of the row-normalised X above
      tol times the largest;
    - two normalised rows within distance tol of each other (or of each
      other's negative) are parallel (antiparallel);
    - a normalised row x and a unit direction rho with |x . rho| <= tol are
      incident (x . rho = 0).

    Data whose non-degeneracies are all well above tol (e.g. Gaussian data,
    or exact degenerate constructions perturbed only by rounding) is handled
    exactly. In general position the count is 2^n for d >= n and Cover's
    count for d < n. The all-zero pattern is present iff some u has
    x_k . u < 0 for every nonzero row (or X has no nonzero row).

    Cost: for L distinct lines of rank r < L, about C(L, r - 1) 2^r candidate
    rows of length L, processed in chunks; for L = r it is the output size.

    Args:
        X: (n, d) float64 data, rows x_k.
        tol: geometric tolerance, see above; default 1e-9.

    Returns:
        (P, n) bool, the distinct patterns as unique rows, sorted
        lexicographically (False < True, column 0 most significant), so the
        all-zero pattern, when present, is the first row.
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
    states = _chambers(V[first], tol)
    bits = np.zeros((states.shape[0], n), dtype=bool)
    bits[:, active] = states[:, line] * sign == 1
    packed = _unique_rows(np.packbits(bits, axis=1))
    return np.unpackbits(packed, axis=1, count=n).astype(bool)


def count_patterns(X: np.ndarray, *, tol: float = 1e-9) -> int:
    """Number of distinct activation patterns of X; see :func:`enumerate_patterns`."""
    return int(enumerate_patterns(X, tol=tol).shape[0])


def is_feasible(X: np.ndarray, pattern: np.ndarray, *, tol: float = 1e-9) -> bool:
    """Whether a 0/1 vector is the pattern of a generic direction (a chamber) of X.

    Rows are normalised and u is confined to the box [-1, 1]^d; with
    s_k = +1 for k in the pattern and -1 otherwise, the margin of u is
    min_k s_k x_k . u over the nonzero rows. The pattern is a chamber iff the
    largest margin (capped at 1) exceeds tol. A least-squares witness u is
    tried first; if its margin does not exceed tol, one LP decides (scipy
    HiGHS, feasibility tolerances 1e-10). Zero rows (norm <= tol times the
    largest) must be inactive; with no nonzero row only the all-zero vector
    is a pattern. Agrees with :func:`enumerate_patterns` away from tol-scale
    degeneracies.

    Args:
        X: (n, d) float64 data.
        pattern: (n,) bool or 0/1.
        tol: margin threshold, and relative norm threshold for zero rows.

    Returns:
        True iff some u with x_k . u != 0 on every nonzero row has
        1[X u > 0] == pattern (margin > tol).
    """
    X = _as_data(X, tol)
    on = np.asarray(pattern).astype(bool).reshape(-1)
    if on.shape != (X.shape[0],):
        raise ValueError(f"pattern must have shape ({X.shape[0]},), got {on.shape}")
    active = _nonzero_rows(X, tol)
    if (on & ~active).any():
        return False
    if not active.any():
        return True
    U = X[active] / np.linalg.norm(X[active], axis=1, keepdims=True)
    s = np.where(on[active], 1.0, -1.0)
    witness = np.linalg.lstsq(U, s, rcond=None)[0]
    scale = np.abs(witness).max()
    if scale > 0 and (s * (U @ witness)).min() > tol * scale:
        return True
    d = X.shape[1]
    A = np.hstack([-s[:, None] * U, np.ones((len(U), 1))])  # t - s_k x_k . u <= 0
    c = np.zeros(d + 1)
    c[-1] = -1.0
    bounds = [(-1.0, 1.0)] * d + [(0.0, 1.0)]
    options = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
    res = linprog(c, A_ub=A, b_ub=np.zeros(len(U)), bounds=bounds, method="highs", options=options)
    return bool(res.status == 0 and -res.fun > tol)


def cone_keys(patterns: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """One hashable bytes key per signed cone (pattern bits then the sign bit).

    Args:
        patterns: (k, n) bool.
        signs: (k,) in {+1, -1}.

    Returns:
        (k,) object array of bytes.
    """
    bits = np.concatenate(
        [np.asarray(patterns, dtype=bool), (np.asarray(signs) > 0)[:, None]], axis=1
    )
    packed = np.ascontiguousarray(np.packbits(bits, axis=1))
    width = packed.shape[1]
    buffer = packed.tobytes()
    keys = np.empty(len(packed), dtype=object)
    keys[:] = [buffer[i : i + width] for i in range(0, len(buffer), width)]
    return keys


def distinct_cones(patterns: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct signed cones, in a canonical order (sorted by key).

    Args:
        patterns: (m, n) bool.
        signs: (m,) in {+1, -1}.

    Returns:
        (patterns, signs): (k, n) bool and (k,) int8, k <= m.
    """
    keys = cone_keys(patterns, signs)
    _, first = np.unique(keys, return_index=True)
    return np.asarray(patterns, dtype=bool)[first], np.asarray(signs, dtype=np.int8)[first]
