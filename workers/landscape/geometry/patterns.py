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
4. For r = 3 in general position (no three lines through one ray, the case of
   continuous data) each chamber is built once, without candidates to
   deduplicate: from the lowest vertex of its region under a generic height
   on a generic hemisphere (:func:`_packed_rank3`), L (L - 1) + 2 of them.

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
    "enumerate_packed",
    "enumerate_patterns",
    "is_feasible",
    "theory_bound",
]

_CHUNK_ELEMENTS = 1 << 22  # entries of (rays, lines) arrays materialised per chunk
_RAY_ELEMENTS = 1 << 18  # (rays, lines) entries per block in _chamber_blocks (fits in cache)
_KEYS = 3  # keys per chamber in _chamber_blocks
_GENERIC_MARGIN = 1e-10  # smallest |cosine| of a sign decision in _packed_rank3


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
    return _unique_rows(np.concatenate(list(_chamber_blocks(E, tol))))


def _chamber_blocks(E: np.ndarray, tol: float) -> Iterator[np.ndarray]:
    """The chambers of :func:`_chambers`, each once, in (c, L) int8 blocks, unsorted.

    Around each ray the candidates are never materialised. A sign vector is named by
    ``_KEYS`` keys, each the sum over its + lines of a random integer weight per line, drawn
    below 2^52 / L so that every sum is exact in float64 (one BLAS product per block of
    rays). The keys are linear in the bits: a candidate's key is its ray's key plus the
    weights of the lines of Z it turns on. Candidates are deduplicated on their keys, and
    only the distinct chambers are built. Two distinct vectors differ in some line, whose
    weight alone decides whether their keys agree, so they share one key with probability
    at most L / 2^52 and all keys with at most (L / 2^52)^3: below 10^-20 for all pairs of
    10^7 candidates at L = 1000.
    """
    L, r = E.shape
    if r == L:  # independent normals (also r = 1): every sign vector is a chamber
        yield _all_signs(L)
        return
    high = 2**52 // L
    weights = np.random.default_rng(0).integers(0, high, size=(L, _KEYS)).astype(np.float64)
    full = weights.sum(axis=0)
    combos = (_all_signs(r - 1) > 0).astype(np.float64)  # (2^k, k), the bits of Z
    keys, rays, zsets = [], [], []
    degenerate: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    size = max(1, _RAY_ELEMENTS // L)
    for subsets in _subset_chunks(L, r - 1, size):
        found, subsets = _rays(E, subsets, tol)
        values = found @ E.T  # (R, L)
        zero = np.abs(values) <= tol
        generic = np.count_nonzero(zero, axis=1) == r - 1
        values, subsets = values[generic], subsets[generic]
        zw = weights[subsets]  # (R, k, K)
        zsum = zw.sum(axis=1)
        # sign @ weights = plus - (full - zsum - plus) once Z's rounding signs are taken out
        zsign = np.sign(np.take_along_axis(values, subsets, axis=1))  # (R, k)
        signed = np.sign(values) @ weights - np.einsum("rk,rkh->rh", zsign, zw)
        plus = (signed + full - zsum) / 2.0  # (R, K), exact integers
        minus = full - plus - zsum
        turn_on = np.einsum("ck,rkh->rch", combos, zw)  # (R, 2^k, K)
        keys.append(np.stack([plus[:, None] + turn_on, minus[:, None] + turn_on], axis=1))
        rays.append(found[generic])
        zsets.append(subsets)
        for ray, mask in zip(found[~generic], zero[~generic], strict=True):
            degenerate.setdefault(mask.tobytes(), (ray, mask))
    extra = [_ray_chambers(E, ray, mask, tol) for ray, mask in degenerate.values()]
    extra_rows = np.concatenate(extra) if extra else np.zeros((0, L), dtype=np.int8)
    flat = np.concatenate(
        [k.reshape(-1, _KEYS) for k in keys] + [(extra_rows > 0).astype(np.float64) @ weights]
    )
    order = np.lexsort(flat.T[::-1])
    ordered = flat[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    chosen = np.sort(order[new])
    all_rays, all_z = np.concatenate(rays), np.concatenate(zsets)
    num_generic = 2 * len(all_rays) * len(combos)
    signs = _all_signs(r - 1)
    step = max(1, _CHUNK_ELEMENTS // L)
    generic_ids = chosen[chosen < num_generic]
    for start in range(0, len(generic_ids), step):
        ids = generic_ids[start : start + step]
        ray, rest = np.divmod(ids, 2 * len(combos))
        side, combo = np.divmod(rest, len(combos))
        block = np.sign(all_rays[ray] @ E.T).astype(np.int8)
        block *= np.where(side == 0, 1, -1).astype(np.int8)[:, None]
        block[np.arange(len(ids))[:, None], all_z[ray]] = signs[combo]
        yield block
    yield extra_rows[chosen[chosen >= num_generic] - num_generic]


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
    rows of length L, processed in chunks; for L = r, and for r = 3 with no three
    lines through one ray, it is the output size.

    Args:
        X: (n, d) float64 data, rows x_k.
        tol: geometric tolerance, see above; default 1e-9.

    Returns:
        (P, n) bool, the distinct patterns as unique rows, sorted
        lexicographically (False < True, column 0 most significant), so the
        all-zero pattern, when present, is the first row.
    """
    return np.unpackbits(enumerate_packed(X, tol=tol), axis=1, count=X.shape[0]).astype(bool)


def enumerate_packed(X: np.ndarray, *, tol: float = 1e-9) -> np.ndarray:
    """:func:`enumerate_patterns` with each pattern's bits packed (``np.packbits``, axis 1).

    Same patterns, same order, an eighth of the memory: (P, ceil(n / 8)) uint8.
    """
    X = _as_data(X, tol)
    n = X.shape[0]
    active = _nonzero_rows(X, tol)
    if not active.any():
        return np.zeros((1, (n + 7) // 8), dtype=np.uint8)
    U = X[active] / np.linalg.norm(X[active], axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(U, full_matrices=False)
    V = U @ vt[: int(np.sum(s > tol * s[0]))].T
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    line, sign = _group_lines(V, tol)
    first = np.unique(line, return_index=True)[1]
    if V.shape[1] == 3 and len(first) > 3:
        found = _packed_rank3(V, line, sign, first, active, tol)
        if found is not None:
            return found
    blocks = []
    for states in _chamber_blocks(V[first], tol):
        bits = np.zeros((states.shape[0], n), dtype=bool)
        bits[:, active] = states[:, line] * sign == 1
        blocks.append(np.packbits(bits, axis=1))
    return _unique_rows(np.concatenate(blocks))


def _packed_rank3(V, line, sign, first, active, tol: float) -> np.ndarray | None:
    """:func:`enumerate_packed` for rank 3 in general position, or None when it is not.

    On the sphere of R^3 the L lines' planes are great circles. Take a generic pole e, the
    plane {p : e . p = 1} (the open hemisphere e . u > 0, where the circles are affine
    lines) and a generic height c . p on it (c orthogonal to e). When no three circles meet
    and no vertex lies on the equator, every region of the plane that is bounded below has
    exactly one lowest vertex and every vertex is the lowest point of exactly one region,
    the one between the two upward half-lines from it. A chamber C meets the hemisphere or
    -C does, so the chambers are those regions' chambers and their negatives (complement
    patterns), plus the two chambers through +-h (h = e x c) that no region bounded below
    reaches. No two of these coincide, and there are L (L - 1) + 2 of them (Cover's count):
    each chamber is built once, with no candidate to deduplicate.

    Returns None, for the general method, when some vertex v of lines i, j has a third
    line within ``tol`` (|x_k . v| <= tol for a unit point of another line), or when no
    tried pole and height are generic enough for exact sign decisions.
    """
    E = V[first]
    L = len(E)
    lo, hi = np.triu_indices(L, 1)
    cross = np.cross(E[lo], E[hi])
    norms = np.linalg.norm(cross, axis=1)
    if norms.min() <= tol:
        return None
    v = cross / norms[:, None]
    rng = np.random.default_rng(0)
    for _ in range(4):
        e, c = np.linalg.qr(rng.standard_normal((3, 2)))[0].T
        h = np.cross(e, c)
        t = np.cross(E, e)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        tc, ve, vh = t @ c, v @ e, V @ h
        if min(np.abs(tc).min(), np.abs(ve).min(), np.abs(vh).min()) > _GENERIC_MARGIN:
            break
    else:
        return None
    v *= np.sign(ve)[:, None]
    t *= np.sign(tc)[:, None]
    wedge_i = np.einsum("pd,pd->p", E[lo], t[hi]) > 0  # line i's side of the upward wedge
    wedge_j = np.einsum("pd,pd->p", E[hi], t[lo]) > 0
    n, cols = len(active), np.flatnonzero(active)
    per_line = np.bincount(line, minlength=L)
    single = bool(np.all(per_line == 1))  # then point first[l] is line l, and sign[first] = 1
    step = max(1, _CHUNK_ELEMENTS // (4 * len(V)))
    blocks = []
    for start in range(0, len(v), step):
        rows = slice(start, start + step)
        values = v[rows] @ V.T  # (c, m): each point's side of each vertex
        if single:  # the points on lines i and j take the wedge's sides
            at = np.arange(len(values))
            values[at, first[lo[rows]]] = np.where(wedge_i[rows], 1.0, -1.0)
            values[at, first[hi[rows]]] = np.where(wedge_j[rows], 1.0, -1.0)
            if np.abs(values).min(initial=np.inf) <= tol:
                return None  # a third line through a vertex: not in general position
            bits = values > 0
        else:
            zero = np.abs(values) <= tol
            if np.any(np.count_nonzero(zero, axis=1) != per_line[lo[rows]] + per_line[hi[rows]]):
                return None
            bits = values > 0
            rz, kz = np.nonzero(zero)
            side = np.where(line[kz] == lo[rows][rz], wedge_i[rows][rz], wedge_j[rows][rz])
            bits[rz, kz] = side == (sign[kz] > 0)
        if len(cols) < n:
            full = np.zeros((len(bits), n), dtype=bool)
            full[:, cols] = bits
            bits = full
        blocks.append(np.packbits(bits, axis=1))
        bits[:, cols] = ~bits[:, cols]
        blocks.append(np.packbits(bits, axis=1))
    ends = np.zeros((2, n), dtype=bool)
    ends[0, cols], ends[1, cols] = vh > 0, vh < 0
    blocks.append(np.packbits(ends, axis=1))
    return _unique_rows(np.concatenate(blocks))


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
