"""The convex reformulation and the certified global optimum (shared/SCIENCE.md §3-§4).

For signed cones (D_i, s_i), i = 1..k, the program is

    minimise   (1/n) || sum_i s_i D_i X u_i - y ||^2 + 2 weight_decay sum_i ||u_i||
    subject to (2 D_i - I) X u_i >= 0.

Over all signed cones its value is the global minimum of the loss L over all
widths; over a subset S it is the minimum of L over the closure of the
activation cone S (a restricted program, §4). ``solve_program`` solves it as
written with CVXPY and Clarabel. ``global_optimum`` solves it over all
signed cones, either directly ("full") or by column generation ("colgen",
see ``colgen.py``), and certifies the network it returns with the dual check of
``certificate.py``.

What is certified is what is returned (issue 10). The interior point carries noise of
~1e-9 relative on cones off the support; dropping it before building the network moved
the residual enough that the returned neurons' own dual check failed by up to 1e-4
relative to 2 weight_decay at n <= 20 (2e-3 at n = 100, weight_decay = 1e-4), while the
check at the interior point, which was reported, passed. So ``network_solution`` first
polishes the interior point to the exact minimiser on its support
(``convex.polish.polish``: Newton on the faces, every cone of the program that it drops
checked against 2 weight_decay (1 + 1e-8)), and the value, the prediction, the dual
check and the gap bound are those of the neurons built from the polished u's. On
teacher data (n 6-100, d 2-5, weight_decay 1e-4 to 1e-1) the returned network's dual
check then passes to ~1e-12 relative, and the polished value is up to 5e-9 relative
below the interior point's.

Where the polish fails (3 of about 200 of those datasets, and most with unit-scale
weight_decay below ~1e-7, where the interior point itself is accurate to only 1e-6 to
1e-3 relative), every row of the interior point is kept: the network then certifies as
well as the interior point does (~1e-8 relative), and it says so honestly.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from ..geometry.network import caratheodory, forward, loss, recover_network
from ..geometry.patterns import cone_keys
from .polish import polish

#: Clarabel settings used unless the caller overrides them. Tight, so that the
#: recovered network's loss matches the program's value to ~1e-9 relative.
DEFAULT_SOLVER_OPTS = {
    "tol_gap_abs": 1e-10,
    "tol_gap_rel": 1e-10,
    "tol_feas": 1e-10,
    "tol_ktratio": 1e-8,
    "max_iter": 400,
}
#: Looser settings for a second attempt when Clarabel stalls at the tight ones.
FALLBACK_SOLVER_OPTS = {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8}
#: Pattern counts above which ``method="auto"`` uses column generation.
AUTO_COLGEN_MIN_PATTERNS = 128
#: ``ProgramSolution.status`` of a ``network_solution`` whose polish succeeded.
POLISHED = "polished"
#: Newton solves the polish of the returned network may take per settling: a working set of
#: column generation can hold dozens of rows that vanish at the minimiser, and each solve
#: drops one or two (teacher n = 1000, d = 3: 27 solves from 55 rows to 26 neurons).
NETWORK_POLISH_ROUNDS = 256


@dataclass(frozen=True)
class ProgramSolution:
    """Solution of the program over a given list of signed cones.

    Attributes:
        value: the objective at U (mean squared error + 2 weight_decay sum ||u_i||).
        U: (k, d) float64, one u per signed cone, in the order given (zero rows
            for the all-zero pattern and for repeats of an earlier signed cone).
        prediction: (n,) float64, sum_i s_i D_i X u_i.
        patterns: (k, n) bool, the signed cones' patterns as given.
        signs: (k,) int8 in {+1, -1}.
        status: the CVXPY status ("optimal", or "optimal_inaccurate" after the
            fallback tolerances), or "polished" (see ``network_solution``).
        seconds: wall time of compile plus solve.
    """

    value: float
    U: np.ndarray
    prediction: np.ndarray
    patterns: np.ndarray
    signs: np.ndarray
    status: str
    seconds: float


def residual_of(prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The dual residual r = (2/n)(prediction - y), shape (n,)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return 2.0 / len(y) * (np.asarray(prediction, dtype=np.float64) - y)


def program_terms(
    X: np.ndarray, y: np.ndarray, weight_decay: float, patterns, signs, U
) -> tuple[float, np.ndarray]:
    """Evaluate the program's objective and prediction at U (no feasibility check).

    Returns:
        (value, prediction (n,)).
    """
    Z = np.asarray(X, dtype=np.float64) @ np.asarray(U, dtype=np.float64).T  # (n, k)
    weights = np.asarray(patterns, dtype=np.float64).T * np.asarray(signs, dtype=np.float64)
    prediction = np.sum(Z * weights, axis=1)
    err = prediction - np.asarray(y, dtype=np.float64)
    penalty = 2.0 * weight_decay * float(np.sum(np.linalg.norm(U, axis=1)))
    return float(err @ err) / len(err) + penalty, prediction


def solve_program(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    patterns: np.ndarray,
    signs: np.ndarray,
    **solver_opts,
) -> ProgramSolution:
    """Solve the program over exactly the given signed cones with CVXPY + Clarabel.

    Used for restricted programs (SCIENCE §4), inside column generation, and as
    the straightforward baseline over all signed cones. Repeated signed cones
    and the all-zero pattern get no variable (their optimal u is zero or can be
    merged) and come back as zero rows of U.

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: lambda > 0.
        patterns: (k, n) bool.
        signs: (k,) in {+1, -1}.
        **solver_opts: Clarabel settings, overriding ``DEFAULT_SOLVER_OPTS``.

    Returns:
        ProgramSolution. With the default settings ``value`` is within ~1e-9
        relative of the program's optimum.

    Raises:
        cvxpy.error.SolverError: if Clarabel fails at both the tight and the
            fallback tolerances.
    """
    start = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    patterns = np.asarray(patterns, dtype=bool).reshape(-1, X.shape[0])
    signs = np.where(np.asarray(signs).reshape(-1) > 0, 1, -1).astype(np.int8)
    if len(signs) != len(patterns):
        raise ValueError(f"{len(patterns)} patterns but {len(signs)} signs")
    U = np.zeros((len(patterns), X.shape[1]))
    keep = _variable_rows(X, patterns, signs)
    status = "optimal"
    if len(keep):
        U[keep], status = _solve_cvxpy(X, y, weight_decay, patterns[keep], signs[keep], solver_opts)
    value, prediction = program_terms(X, y, weight_decay, patterns, signs, U)
    return ProgramSolution(
        value=value,
        U=U,
        prediction=prediction,
        patterns=patterns,
        signs=signs,
        status=status,
        seconds=time.perf_counter() - start,
    )


def _variable_rows(X: np.ndarray, patterns: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each signed cone that can contribute."""
    active = np.any(patterns & np.any(X != 0.0, axis=1)[None, :], axis=1)
    keys = np.concatenate([patterns, (signs > 0)[:, None]], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    first = np.sort(first)
    return first[active[first]]


def _solve_cvxpy(X, y, weight_decay, patterns, signs, solver_opts) -> tuple[np.ndarray, str]:
    n, d = X.shape
    nonzero = np.any(X != 0.0, axis=1)  # zero rows give the constraint 0 >= 0
    V = cp.Variable((d, len(signs)))  # column i is u_i
    Z = X @ V  # (n, k): x_k . u_i
    weights = patterns.T.astype(np.float64) * signs.astype(np.float64)  # s_i D_i
    prediction = cp.sum(cp.multiply(weights, Z), axis=1)
    objective = cp.sum_squares(prediction - y) / n + 2.0 * weight_decay * cp.sum(
        cp.norm(V, 2, axis=0)
    )
    orient = np.where(patterns.T, 1.0, -1.0)[nonzero]  # 2 D_i - I on the nonzero rows
    constraints = [cp.multiply(orient, X[nonzero] @ V) >= 0]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    with warnings.catch_warnings():  # "optimal_inaccurate" is reported in the status
        warnings.simplefilter("ignore", UserWarning)
        try:
            problem.solve(solver=cp.CLARABEL, **{**DEFAULT_SOLVER_OPTS, **solver_opts})
        except cp.error.SolverError:
            problem.solve(solver=cp.CLARABEL, **{**FALLBACK_SOLVER_OPTS, **solver_opts})
    if V.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise cp.error.SolverError(f"Clarabel ended with status {problem.status}")
    return np.asarray(V.value).T, str(problem.status)


def network_solution(
    X: np.ndarray, y: np.ndarray, weight_decay: float, solution: ProgramSolution
) -> ProgramSolution:
    """The network returned for a program's solution, with its own value and prediction.

    The solution is polished to the exact minimiser on its support (``convex.polish.polish``).
    If that fails, no row is dropped: the Carathéodory reduction alone, which keeps the
    prediction and the penalty, leaves at most n + 1 nonzero rows, some of them tiny, and
    the network certifies as well as the interior point does. (Dropping rows below 1e-8
    of the largest instead broke the dual check by 4e-6 relative at n = 19, d = 2, where
    polishing stalls on two neurons along one ray.)

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: lambda > 0.
        solution: a solution of the program over some signed cones.

    Returns:
        ProgramSolution over the same signed cones, with U the returned network's u per
        signed cone (zero rows off its support), and ``value`` and ``prediction`` the loss
        L and the outputs f(X) of the neurons ``recover_network(U[nonzero], signs[nonzero])``,
        which are exactly the neurons ``global_optimum`` returns; ``status`` is POLISHED
        when the polish succeeded, else the solution's own.
    """
    start = time.perf_counter()
    rows, U, status = _polished_rows(X, y, weight_decay, solution)
    if len(rows):
        U = caratheodory(X, U, solution.patterns[rows], solution.signs[rows])
    nonzero = np.linalg.norm(U, axis=1) > 0
    rows, U = rows[nonzero], U[nonzero]
    W, a = recover_network(U, solution.signs[rows], threshold=0.0)
    full = np.zeros_like(solution.U)
    full[rows] = U
    return dataclasses.replace(
        solution,
        value=loss(X, y, W, a, weight_decay),
        U=full,
        prediction=forward(X, W, a),
        status=status,
        seconds=solution.seconds + time.perf_counter() - start,
    )


def _polished_rows(X, y, weight_decay, solution) -> tuple[np.ndarray, np.ndarray, str]:
    """(rows (p,), U (p, d), status): the polished support, by index into the solution's
    cones, and "polished"; or every nonzero row and the solution's own status."""
    found = polish(
        X,
        y,
        weight_decay,
        solution.patterns,
        solution.signs,
        solution.U,
        solution.value,
        max_rounds=NETWORK_POLISH_ROUNDS,
    )
    if found is None:  # keep every neuron: Carathéodory keeps the interior point's terms
        rows = np.flatnonzero(np.linalg.norm(solution.U, axis=1) > 0)
        return rows, solution.U[rows], solution.status
    first: dict[bytes, int] = {}  # a polished row has the cone of one of the given rows
    for i, key in enumerate(cone_keys(solution.patterns, solution.signs)):
        first.setdefault(key, i)
    keys = cone_keys(found.patterns, found.signs)
    return np.array([first[key] for key in keys], dtype=np.intp), found.U, POLISHED
