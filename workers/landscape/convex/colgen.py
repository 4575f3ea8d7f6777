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

from .certificate import pattern_sums, signed_values
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
        patterns: (P, n) bool, the patterns to price (normally all of them).
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
    patterns = np.asarray(patterns, dtype=bool).reshape(-1, X.shape[0])
    batch = batch or max(16, 2 * X.shape[1])
    pricer = Pricer(X, patterns)
    program = WorkingProgram(X, y, weight_decay)
    rows, cols = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    opts = LOOSE_SOLVER_OPTS
    solution = _solve(program, patterns, rows, cols, opts)
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
        solution, returned = _solve(program, patterns, rows, cols, opts), False
        rounds += 1
    if not returned:
        solution = network_solution(X, y, weight_decay, solution)
    return solution, rounds, None


def _price(pricer, y, weight_decay, solution, rows, cols, tol, gap_tol, batch) -> Pricing:
    total = float(np.sum(np.linalg.norm(solution.U, axis=1)))
    eps = min(tol, 2.0 * weight_decay * CERTIFY_RTOL)
    if total > 0:
        eps = min(eps, max(gap_tol * solution.value / total, EPS_RTOL * weight_decay))
    in_working = np.zeros((len(pricer.patterns), 2), dtype=bool)
    in_working[rows, cols] = True
    residual = residual_of(solution.prediction, y)
    threshold = 2.0 * weight_decay + eps
    floor = 2.0 * weight_decay
    return pricer.price(residual, threshold, limit=batch, floor=floor, exclude=in_working)


def _prune(U, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(U, axis=1)
    keep = norms > PRUNE_RTOL * norms.max(initial=0.0)
    return rows[keep], cols[keep]


def _solve(program, patterns, rows, cols, solver_opts) -> ProgramSolution:
    signs = np.where(cols == 0, 1, -1).astype(np.int8)
    return program.solve(patterns[rows], rows, signs, **solver_opts)


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

    It keeps an upper bound on every signed cone's value. The value is
    1-Lipschitz in g = -s X^T D r, so when the residual moves by dr a bound
    grows by at most ||X^T D dr||; cones whose bound stays at or below the
    floor are not looked at again. Late rounds, where r barely moves, then
    touch few cones.

    Args:
        X: (n, d) float64 data.
        patterns: (P, n) bool.
    """

    def __init__(self, X: np.ndarray, patterns: np.ndarray) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.patterns = np.asarray(patterns, dtype=bool).reshape(-1, self.X.shape[0])
        self._weights = self.patterns.astype(np.float64)
        self._bound: np.ndarray | None = None  # (P, 2), valid where G was self._G
        self._G: np.ndarray | None = None

    def price(
        self,
        residual: np.ndarray,
        threshold: float,
        *,
        limit: int,
        floor: float | None = None,
        exclude: np.ndarray | None = None,
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

        Returns:
            Pricing.
        """
        r = np.asarray(residual, dtype=np.float64).reshape(-1)
        floor = threshold if floor is None else min(floor, threshold)
        G = pattern_sums(self._weights, r[:, None] * self.X)
        bound = np.repeat(np.linalg.norm(G, axis=1)[:, None], 2, axis=1)
        if self._bound is not None:  # X^T D (r - r_old) = G - G_old
            drift = np.linalg.norm(G - self._G, axis=1)[:, None]
            bound = np.minimum(bound, self._bound + drift)
        top = bound.max(axis=1)
        todo = np.flatnonzero(top > floor)
        todo = todo[np.argsort(-top[todo], kind="stable")]
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        count, start, block = 0, 0, max(8 * limit, 256)
        while start < len(todo) and count < limit:
            idx = todo[start : start + block]
            values = signed_values(self.X, self.patterns[idx], G[idx], floor)
            bound[idx] = values
            if exclude is not None:
                values = np.where(exclude[idx], -np.inf, values)
            hit_rows, hit_cols = np.nonzero(values > threshold)
            found.append((idx[hit_rows], hit_cols, values[hit_rows, hit_cols]))
            count += len(hit_rows)
            start, block = start + block, 2 * block
        self._bound, self._G = bound, G
        rows = np.concatenate([np.zeros(0, dtype=np.intp), *(f[0] for f in found)])
        cols = np.concatenate([np.zeros(0, dtype=np.intp), *(f[1] for f in found)])
        values = np.concatenate([np.zeros(0), *(f[2] for f in found)])
        order = np.argsort(-values, kind="stable")[:limit]
        complete = start >= len(todo)
        return Pricing(
            rows[order], cols[order], values[order], complete, float(bound.max(initial=0.0))
        )
