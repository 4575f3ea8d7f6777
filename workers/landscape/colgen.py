"""Column generation for the convex program (shared/SCIENCE.md §3).

The program over all 2P signed cones is too large to build when P is in the
thousands. Column generation solves it on a small working set of signed cones
instead: solve the restricted program, price every signed cone with the dual
check of ``certificate.py`` at the restricted optimum's residual, add the most
violated ones, and repeat until no cone outside the working set has a value
above 2 weight_decay + tol. At that point the restricted optimum satisfies the
optimality conditions of the full program, so its value is the global optimum
without the full program ever being built.
"""

from __future__ import annotations

import numpy as np

from .certificate import Pricing, price
from .convex import ProgramSolution, residual_of, solve_program

#: Safety cap on restricted solves.
MAX_ROUNDS = 500
#: Clarabel settings of the cheap rounds, before the final tight solves.
LOOSE_SOLVER_OPTS = {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8}
#: Cheap rounds drop working cones with ||u|| below this times the largest ||u||.
PRUNE_RTOL = 1e-6


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
    nothing is violated.

    A cone is violated when its value exceeds 2 weight_decay + eps with
    eps = min(tol, gap_tol * value / sum_i ||u_i||). To first order the
    optimality gap is at most max violation * sum_i ||u_i||, so gap_tol bounds
    the relative gap.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: lambda > 0.
        patterns: (P, n) bool, the patterns to price (normally all of them).
        tol: absolute slack on the dual check, >= 0.
        gap_tol: relative target for the optimality gap, > 0.
        batch: signed cones added per round; default max(8, 2 d).
        **solver_opts: passed to ``solve_program`` in the tight rounds.

    Returns:
        (solution, rounds, max_value): the last restricted solution, whose
        signed cones are the working set; the number of restricted solves; and
        the largest value over all signed cones at that solution if it exceeds
        2 weight_decay (exact, else a number <= 2 weight_decay), from the last
        pricing pass. If MAX_ROUNDS is hit, max_value is None and the solution
        is uncertified.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    patterns = np.asarray(patterns, dtype=bool).reshape(-1, X.shape[0])
    batch = batch or max(8, 2 * X.shape[1])
    rows, cols = np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    opts = LOOSE_SOLVER_OPTS
    solution = _solve(X, y, weight_decay, patterns, rows, cols, opts)
    rounds = 0
    while rounds < MAX_ROUNDS:
        pricing = _price(X, y, weight_decay, patterns, solution, rows, cols, tol, gap_tol, batch)
        if len(pricing.rows) == 0 and opts is not LOOSE_SOLVER_OPTS:
            return solution, rounds, pricing.max_value
        if len(pricing.rows) == 0:
            opts = solver_opts
        else:
            if opts is LOOSE_SOLVER_OPTS:
                rows, cols = _prune(solution.U, rows, cols)
            rows = np.concatenate([rows, pricing.rows])
            cols = np.concatenate([cols, pricing.cols])
        solution = _solve(X, y, weight_decay, patterns, rows, cols, opts)
        rounds += 1
    return solution, rounds, None


def _price(X, y, weight_decay, patterns, solution, rows, cols, tol, gap_tol, batch) -> Pricing:
    total = float(np.sum(np.linalg.norm(solution.U, axis=1)))
    eps = min(tol, gap_tol * solution.value / total) if total > 0 else tol
    in_working = np.zeros((len(patterns), 2), dtype=bool)
    in_working[rows, cols] = True
    residual = residual_of(solution.prediction, y)
    threshold = 2.0 * weight_decay + eps
    floor = 2.0 * weight_decay
    return price(X, residual, patterns, threshold, limit=batch, floor=floor, exclude=in_working)


def _prune(U, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(U, axis=1)
    keep = norms > PRUNE_RTOL * norms.max(initial=0.0)
    return rows[keep], cols[keep]


def _solve(X, y, weight_decay, patterns, rows, cols, solver_opts) -> ProgramSolution:
    signs = np.where(cols == 0, 1, -1).astype(np.int8)
    return solve_program(X, y, weight_decay, patterns[rows], signs, **solver_opts)
