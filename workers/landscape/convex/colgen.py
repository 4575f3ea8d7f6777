"""Column generation for the convex program (shared/SCIENCE.md §3).

The program over all 2P signed cones is too large to build when P is in the
thousands. Column generation solves it on a small working set of signed cones
instead: solve the restricted program, price every signed cone with the dual
check of ``certificate.py`` at the restricted optimum's residual, add the most
violated ones, and repeat until no cone outside the working set has a value
above 2 weight_decay + tol. At that point the restricted optimum satisfies the
optimality conditions of the full program, so its value is the global optimum
without the full program ever being built.

When nothing is violated at a tight solution, that solution is turned into the
network that will be returned (``convex.network_solution``: polished to the exact
minimiser on its support, then reduced to at most n + 1 neurons) and priced again, so
the stopping test is the dual check of exactly those neurons, not of the interior
point, whose off-support noise the returned network does not carry. Cones violated
there join the working set and the rounds go on. (When the polish fails, the network
keeps every row of the interior point and its terms to ~1e-14, so it was in effect
priced already; further rounds would only chase rounding, and it is returned.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .certificate import signed_values
from .program import POLISHED, ProgramSolution, network_solution, residual_of
from .working import WorkingProgram

#: Safety cap on restricted solves.
MAX_ROUNDS = 500
#: Clarabel settings of the cheap rounds, before the final tight solves.
LOOSE_SOLVER_OPTS = {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8}
#: The slack eps never goes below this times weight_decay (Clarabel's noise level).
EPS_RTOL = 1e-11
#: Cheap rounds drop working cones with ||u|| below this times the largest ||u||.
PRUNE_RTOL = 1e-6
#: Cones ranked by a partial sort before the first blocks (the rest only when reached).
_HEAD = 8192
#: Patterns whose values are computed together (``Pricer._values``).
_CHUNK = 8192
#: Violators added in one round have g directions with cosines below this (see Pricer).
DISTINCT_COS = 0.8
#: The slack eps never exceeds this times 2 weight_decay: a tenth of the 1e-6 relative
#: violation that the service promises at most (SCIENCE §3).
CERTIFY_RTOL = 1e-7


def column_generation(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    patterns: np.ndarray,
    *,
    tol: float = 1e-7,
    gap_tol: float = 1e-9,
    batch: int | None = None,
    **solver_opts,
) -> tuple[ProgramSolution, int, float | None]:
    """Solve the program over all signed cones of ``patterns`` by column generation.

    Starts from the empty working set (the zero network, residual -2y/n). Each
    round prices all signed cones at the current residual and adds up to
    ``batch`` violators. The first rounds solve at Clarabel's 1e-8 tolerances
    and drop working cones whose u vanished; once nothing is violated, the
    rounds continue at the tight tolerances of ``solve_program`` until again
    nothing is violated, and then until nothing is violated at the residual of
    the solution's ``network_solution`` either (or its polish failed).

    A cone is violated when its value exceeds 2 weight_decay + eps with
    eps = min(tol, 1e-7 * 2 weight_decay,
              max(gap_tol * value / sum_i ||u_i||, 1e-11 weight_decay)).
    To first order the optimality gap is at most max violation * sum_i ||u_i||,
    so gap_tol bounds the relative gap.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: lambda > 0.
        patterns: (P, n) bool, the patterns to price (normally all of them), or the
            same packed, (P, ceil(n / 8)) uint8 (``patterns.enumerate_packed``).
        tol: absolute slack on the dual check, >= 0.
        gap_tol: relative target for the optimality gap, > 0.
        batch: signed cones added per round; default max(16, 2 d).
        **solver_opts: passed to ``solve_program`` in the tight rounds.

    Returns:
        (solution, rounds, max_value): the ``network_solution`` of the last
        restricted solution, whose signed cones are the working set; the number
        of restricted solves; and the largest value over all signed cones at
        that network's residual if it exceeds 2 weight_decay (exact, else a
        number <= 2 weight_decay), from the last pricing pass. If MAX_ROUNDS is
        hit, max_value is None and the solution is uncertified.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    batch = batch or max(16, 2 * X.shape[1])
    pricer = Pricer(X, patterns)
    program = WorkingProgram(X, y, weight_decay)
    rows, cols = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    opts = LOOSE_SOLVER_OPTS
    solution = _solve(program, pricer, rows, cols, opts)
    rounds, returned = 0, False
    while rounds < MAX_ROUNDS:
        pricing = _price(pricer, y, weight_decay, solution, rows, cols, tol, gap_tol, batch)
        if returned and (len(pricing.rows) == 0 or solution.status != POLISHED):
            return solution, rounds, pricing.max_value  # unpolished: as good as it gets
        if len(pricing.rows) == 0 and opts is not LOOSE_SOLVER_OPTS:
            solution, returned = network_solution(X, y, weight_decay, solution), True
            continue  # price the network that will be returned
        if len(pricing.rows) == 0:
            opts = solver_opts
        else:
            if opts is LOOSE_SOLVER_OPTS:
                rows, cols = _prune(solution.U, rows, cols)
            rows = np.concatenate([rows, pricing.rows])
            cols = np.concatenate([cols, pricing.cols])
        solution, returned = _solve(program, pricer, rows, cols, opts), False
        rounds += 1
    if not returned:
        solution = network_solution(X, y, weight_decay, solution)
    return solution, rounds, None


def _price(pricer, y, weight_decay, solution, rows, cols, tol, gap_tol, batch) -> Pricing:
    total = float(np.sum(np.linalg.norm(solution.U, axis=1)))
    eps = min(tol, 2.0 * weight_decay * CERTIFY_RTOL)
    if total > 0:
        eps = min(eps, max(gap_tol * solution.value / total, EPS_RTOL * weight_decay))
    in_working = np.zeros((len(pricer.packed), 2), dtype=bool)
    in_working[rows, cols] = True
    residual = residual_of(solution.prediction, y)
    threshold = 2.0 * weight_decay + eps
    floor = 2.0 * weight_decay
    return pricer.price(
        residual, threshold, limit=batch, floor=floor, exclude=in_working, distinct=True
    )


def _prune(U, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(U, axis=1)
    keep = norms > PRUNE_RTOL * norms.max(initial=0.0)
    return rows[keep], cols[keep]


def _solve(program, pricer, rows, cols, solver_opts) -> ProgramSolution:
    signs = np.where(cols == 0, 1, -1).astype(np.int8)
    return program.solve(pricer.patterns(rows), rows, signs, **solver_opts)


@dataclass(frozen=True)
class Pricing:
    """Result of ``Pricer.price``.

    Attributes:
        rows: (k,) pattern indices of the violators found, by decreasing value.
        cols: (k,) 0 for s = +1, 1 for s = -1.
        values: (k,) their values, all > threshold.
        complete: True when every signed cone was examined (then k = 0
            certifies that no non-excluded value exceeds the threshold).
        max_value: when complete, the largest value over all signed cones
            (excluded ones too) if it exceeds ``floor``, else a number <= floor.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    complete: bool
    max_value: float


class Pricer:
    """Prices all signed cones of fixed data at a sequence of residuals.

    It keeps an upper bound on every signed cone's value, valid at the residual r_e of
    the round e in which the cone was last looked at, with G_e = X^T D r_e. The value
    is 1-Lipschitz in g = -s X^T D r, and ``||X^T D (r - r_e)|| <= sum_k |r - r_e|_k
    ||x_k||`` for every D, so bound + that number (one per round e, not per cone) bounds
    the value now. Cones are looked at in decreasing order of it, in doubling blocks,
    until ``limit`` violators are found; only those get their G recomputed (the bound
    becomes min(||G||, bound + ||G - G_e||)) and, above the floor, their value. A cone
    whose stale bound stays at or below the floor is not looked at, not even for its G.
    Cones never looked at (bound inf) come first, in a fixed random order: neighbouring
    chambers are neighbours in the patterns' order and give nearly the same column, so a
    block of random ones finds violators in many directions at once (teacher n = 1000,
    d = 3: 37 rounds against 331 in index order). Early rounds thus touch a few thousand
    cones, and late rounds, where r barely moves, those few whose bound the move can
    lift above the floor.

    Patterns are held packed (8 per byte), and G = X^T D r for a set of patterns is the
    sum over bytes j of a table lookup T_j[byte_j] (T_j: the 256 sums of r_k x_k over
    the subsets of the 8 points of byte j), never a (P, n) float array.

    Args:
        X: (n, d) float64 data.
        patterns: (P, n) bool, or (P, ceil(n / 8)) uint8 packed by ``np.packbits``
            (``patterns.enumerate_packed``).
    """

    def __init__(self, X: np.ndarray, patterns: np.ndarray) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.packed = packed_patterns(patterns, self.X.shape[0])
        self._columns = np.ascontiguousarray(self.packed.T)  # (bytes, P)
        self._xnorm = np.linalg.norm(self.X, axis=1)
        self._bound = np.zeros((len(self.packed), 2))
        self._top = np.zeros(len(self.packed))  # the larger of each pattern's two bounds
        self._G = np.zeros((len(self.packed), self.X.shape[1]))
        self._epoch = np.full(len(self.packed), -1, dtype=np.intp)  # -1: never looked at
        self._order = np.random.default_rng(0).permutation(len(self.packed))
        self._residuals: list[np.ndarray] = []

    def patterns(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), n) bool, the patterns of the given indices."""
        return np.unpackbits(self.packed[idx], axis=1, count=self.X.shape[0]).astype(bool)

    def sums(self, r: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(len(idx), d) float64, X^T D r for the patterns of the given indices."""
        n, d = self.X.shape
        nbytes = self._columns.shape[0]
        M = np.zeros((nbytes * 8, d))
        M[:n] = r[:, None] * self.X
        M = M.reshape(nbytes, 8, d)
        tables = np.zeros((nbytes, 256, d))
        for bit in range(8):  # bit b of a byte (value 2^b) is point 7 - b of its block
            tables[:, 1 << bit : 2 << bit] = tables[:, : 1 << bit] + M[:, 7 - bit, None, :]
        out = np.zeros((len(idx), d))
        for j in range(nbytes):
            out += tables[j, self._columns[j, idx]]
        return out

    def price(
        self,
        residual: np.ndarray,
        threshold: float,
        *,
        limit: int,
        floor: float | None = None,
        exclude: np.ndarray | None = None,
        distinct: bool = False,
    ) -> Pricing:
        """Find up to ``limit`` signed cones with value > threshold, most promising first.

        Cones are examined in blocks in decreasing order of their bound, and
        the search stops after the block in which ``limit`` violators were
        found. Values above ``floor`` (default and at most: threshold) are
        exact; a cone found to be at most the floor keeps an upper bound.

        Args:
            residual: (n,) float64, r = (2/n)(prediction - y).
            threshold: values above it are violations (2 weight_decay + eps).
            limit: the most violators returned, >= 1.
            floor: see above.
            exclude: (P, 2) bool, signed cones never returned (the working set).
            distinct: return only violators whose g = -s X^T D r is not within
                DISTINCT_COS (cosine) of a more violated one's: neighbouring chambers
                give nearly the same column, and one of them per round is enough.

        Returns:
            Pricing; its max_value is the largest upper bound when not complete.
        """
        r = np.asarray(residual, dtype=np.float64).reshape(-1)
        floor = threshold if floor is None else min(floor, threshold)
        now = len(self._residuals)
        moves = [float(np.abs(r - old) @ self._xnorm) for old in self._residuals]
        shift = np.array(moves + [0.0, np.inf])  # this round's bounds: 0; never seen: inf
        bound, epoch, top = self._bound, self._epoch, self._top
        key = top + shift[epoch]
        unseen = self._order[epoch[self._order] < 0]  # key inf, in a fixed random order
        todo = np.flatnonzero((key > floor) & (epoch >= 0))
        todo, ranked = _rank_head(unseen, todo, key[todo], _HEAD)  # todo[:ranked] in order
        self._residuals.append(r.copy())
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        count, start, block = 0, 0, max(8 * limit, 256)
        while start < len(todo) and count < limit:
            if start + block > ranked:
                need = max(_HEAD, 2 * (start + block - ranked))
                rest = todo[ranked:]
                todo[ranked:], more = _rank_head(rest[:0], rest, key[rest], need)
                ranked += more
            idx = todo[start : start + block]
            G = self.sums(r, idx)
            fresh = np.repeat(np.linalg.norm(G, axis=1)[:, None], 2, axis=1)
            drift = np.linalg.norm(G - self._G[idx], axis=1)[:, None]
            bound[idx] = np.minimum(fresh, bound[idx] + drift)  # inf + drift if never seen
            top[idx] = np.maximum(bound[idx, 0], bound[idx, 1])
            self._G[idx], epoch[idx] = G, now
            idx = idx[top[idx] > floor]
            values = self._values(idx, floor)
            bound[idx], top[idx] = values, np.maximum(values[:, 0], values[:, 1])
            if exclude is not None:
                values = np.where(exclude[idx], -np.inf, values)
            hit_rows, hit_cols = np.nonzero(values > threshold)
            found.append((idx[hit_rows], hit_cols, values[hit_rows, hit_cols]))
            count += len(hit_rows)
            start, block = start + block, 2 * block
        seen = todo[: min(start, len(todo))]  # now at epoch `now`, shift 0
        key[seen] = top[seen]
        highest = float(key.max(initial=0.0))
        rows = np.concatenate([np.zeros(0, dtype=np.intp), *(f[0] for f in found)])
        cols = np.concatenate([np.zeros(0, dtype=np.intp), *(f[1] for f in found)])
        values = np.concatenate([np.zeros(0), *(f[2] for f in found)])
        order = np.argsort(-values, kind="stable")
        order = self._distinct(rows[order], cols[order], order) if distinct else order
        order = order[:limit]
        return Pricing(rows[order], cols[order], values[order], start >= len(todo), highest)

    def _values(self, idx: np.ndarray, floor: float) -> np.ndarray:
        """(len(idx), 2) ``signed_values`` at the stored G, _CHUNK patterns at a time (a
        chunk's (c, n) float arrays stay near 64 MB at n = 1000)."""
        values = np.empty((len(idx), 2))
        for start in range(0, len(idx), _CHUNK):
            part = idx[start : start + _CHUNK]
            values[start : start + _CHUNK] = signed_values(
                self.X, self.patterns(part), self._G[part], floor
            )
        return values

    def _distinct(self, rows, cols, order) -> np.ndarray:
        """``order`` less the violators whose g = -s X^T D r is within DISTINCT_COS (cosine)
        of an earlier one's."""
        g = self._G[rows] * np.where(cols == 0, -1.0, 1.0)[:, None]
        g /= np.maximum(np.linalg.norm(g, axis=1), 1e-300)[:, None]
        keep: list[int] = []
        for i in range(len(g)):
            if not keep or float(np.max(g[keep] @ g[i])) < DISTINCT_COS:
                keep.append(i)
        return order[keep]


def _rank_head(
    first: np.ndarray, idx: np.ndarray, keys: np.ndarray, head: int
) -> tuple[np.ndarray, int]:
    """``first``, then ``idx`` reordered so that its entries with the largest ``keys`` come
    first, by decreasing key, and the rest follow unsorted; returns (order, ranked), where
    order[:ranked] is ``first`` and that head, ranked >= min(len(first) + len(idx), head).

    A partition of a million keys costs about 30 ms, so the head is found by a threshold
    read off about 4 head evenly spaced keys and one comparison (a full partition only
    when that threshold keeps too few).
    """
    want = head - len(first)
    if want <= 0:
        return np.concatenate([first, idx]), len(first)
    if len(idx) <= want:
        return np.concatenate([first, idx[np.argsort(-keys, kind="stable")]]), len(first) + len(idx)
    step = max(1, len(keys) // (4 * want))
    sample = np.sort(keys[::step])
    cut = sample[max(0, len(sample) - 1 - 2 * want // step)]
    top = keys >= cut
    if np.count_nonzero(top) < want:
        top = np.zeros(len(keys), dtype=bool)
        top[np.argpartition(-keys, want - 1)[:want]] = True
    chosen = idx[top][np.argsort(-keys[top], kind="stable")]
    return np.concatenate([first, chosen, idx[~top]]), len(first) + len(chosen)


def packed_patterns(patterns: np.ndarray, n: int) -> np.ndarray:
    """(P, ceil(n / 8)) uint8: patterns packed by ``np.packbits`` (axis 1), as given or packed.

    Args:
        patterns: (P, n) bool (or 0/1), or already packed (P, ceil(n / 8)) uint8.
        n: the number of points.
    """
    patterns = np.asarray(patterns)
    packed = patterns.dtype == np.uint8 and patterns.ndim == 2
    packed = packed and patterns.shape[1] == (n + 7) // 8 and (n > 1 or patterns.max(initial=0) > 1)
    if packed:
        return np.ascontiguousarray(patterns)
    return np.packbits(patterns.astype(bool).reshape(-1, n), axis=1)
