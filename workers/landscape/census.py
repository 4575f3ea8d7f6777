"""The census of activation cones (SCIENCE §4-§5): which cones hold a global minimum.

For each width m and sample index, m signed cones are drawn, the restricted program is
solved over their distinct members, and the cone is classified:

- "global": restricted value <= optimum + tolerance;
- "spurious": otherwise, and the network recovered from the restricted minimiser is Clarke
  stationary (:mod:`.stationarity`);
- "no_local_min": otherwise.

The fast path (:func:`certify_samples`):

1. Screening, a sufficient test: a cone whose signed cones include the support of a known
   global solution holds that solution, so its value is the optimum and it is "global" with
   no solve (method "screened").
2. Otherwise the restricted program is solved by column generation (:mod:`.census_columns`):
   on a small working subset of the cone's signed cones first (guessed from the atoms at the
   global optimal residual, which the screen caches per signed cone), then the dual check of
   SCIENCE §3 restricted to the cone's members adds violators until there are none. Each
   program is built directly for Clarabel (:mod:`.census_solver`: row-space reduction, CSC
   values filled into a cached structure, single-threaded QDLDL). A working-set solution
   that fails the complementarity check is replaced by one solve over all members.
3. The minimiser is classified by :func:`classify` (method "solved").

:func:`classify` is shared with the straightforward per-cone path (``convex.solve_program``),
so the two differ only in how the restricted program is solved.

Caches (the screen's atoms, the solver's matrix structure) hold deterministic functions of one
signed cone or of k, never of the samples seen, so any chunk of samples gives the same records.

Each sample draws from its own ``np.random.default_rng([seed, width, sample])`` and nothing
is carried between samples, so any chunk of samples can be redone on another worker with
identical records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .census_classify import STATIONARITY_TOL, Classification, classify
from .census_columns import ColumnSolver
from .census_sampling import SAMPLINGS, cone_keys, distinct_cones, sample_cones
from .census_screen import GlobalScreen
from .census_solver import RestrictedSolver
from .scaling import Scaling

__all__ = [
    "SAMPLINGS",
    "STATIONARITY_TOL",
    "VERDICTS",
    "CensusCancelled",
    "Classification",
    "ConeRecord",
    "certify_samples",
    "classify",
    "sample_cones",
    "summarize",
    "thresholds",
]

VERDICTS = ("global", "spurious", "no_local_min")
#: Clarabel gap and feasibility tolerances of the fast path (as tight as convex.solve_program).
SOLVER_TOL = 1e-10


class CensusCancelled(Exception):
    """Raised by :func:`certify_samples` when ``on_progress`` returns False.

    Attributes:
        records: the records finished before the stop, in sample order.
    """

    def __init__(self, records: list[ConeRecord]) -> None:
        super().__init__(f"census cancelled after {len(records)} cones")
        self.records = records


@dataclass(frozen=True)
class ConeRecord:
    """One sampled cone of a census, kept so a user can see why it got its verdict.

    Attributes:
        width: m, the number of neurons drawn.
        sample: the sample index within this width.
        patterns: (k, n) bool, the distinct signed cones' patterns, sorted.
        signs: (k,) int8 in {+1, -1}.
        value: the restricted program's value (the optimum itself when screened).
        verdict: "global", "spurious" or "no_local_min".
        covered: k / number of signed cones of the data.
        method: "screened" (contains the known global support, no solve) or "solved".
        gap: value - optimum.
        stationarity_residual: minimal Clarke gradient norm of the recovered network; NaN
            when not tested (verdict "global").
        num_neurons: neurons of the recovered network; 0 when not tested.
        polished: whether the stationarity test ran on the polished, exact minimiser
            (:func:`.census_polish.polish`) rather than the interior point.
    """

    width: int
    sample: int
    patterns: np.ndarray
    signs: np.ndarray
    value: float
    verdict: str
    covered: float
    method: str
    gap: float
    stationarity_residual: float
    num_neurons: int
    polished: bool = False

    def as_dict(self) -> dict:
        """JSON-ready form: patterns as '0'/'1' strings, NaN residual as None."""
        residual = self.stationarity_residual
        return {
            "width": self.width,
            "sample": self.sample,
            "patterns": ["".join("1" if b else "0" for b in row) for row in self.patterns],
            "signs": [int(s) for s in self.signs],
            "value": self.value,
            "verdict": self.verdict,
            "covered": self.covered,
            "method": self.method,
            "gap": self.gap,
            "stationarity_residual": None if math.isnan(residual) else residual,
            "num_neurons": self.num_neurons,
            "polished": self.polished,
        }


def certify_samples(
    X: np.ndarray,
    y: np.ndarray,
    weight_decay: float,
    *,
    optimum: float,
    support: tuple[np.ndarray, np.ndarray],
    width: int,
    samples: Sequence[int],
    seed: int,
    sampling: str,
    tolerance: float = 1e-7,
    patterns: np.ndarray | None = None,
    num_signed_cones: int,
    on_progress: Callable[[int], bool] | None = None,
) -> list[ConeRecord]:
    """Draw, solve and classify one cone per sample index (the fast path).

    Args:
        X: (n, d) float64 data.
        y: (n,) float64 labels.
        weight_decay: λ > 0.
        optimum: the certified global optimum (``convex.global_optimum(...).value``).
        support: (patterns (s, n) bool, signs (s,)) of one global solution
            (``Optimum.support_patterns``, ``Optimum.support_signs``), used for screening.
        width: m, neurons per sample.
        samples: sample indices to do (any subset of range(N), in any order).
        seed: census seed; sample j draws from ``np.random.default_rng([seed, width, j])``.
        sampling: "uniform", "random_vector" or "rejection" (see :func:`sample_cones`).
        tolerance: absolute tolerance on value - optimum for "global" (in the units of y²;
            the programs and the classification run at unit scale, see ``scaling.Scaling``).
        patterns: (P, n) bool, every pattern of X; required for "uniform".
        num_signed_cones: 2 P, the denominator of ``covered``.
        on_progress: called with the number of cones done after each cone; returning False
            stops the call.

    Returns:
        One ConeRecord per entry of ``samples``, in that order.

    Raises:
        CensusCancelled: when ``on_progress`` returns False (carries the finished records).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    scaling = Scaling.of(X, y)  # solve at unit size; records in the user's units
    X, y, weight_decay = scaling.data(X, y, weight_decay)
    optimum, tolerance = optimum / scaling.value, tolerance / scaling.value
    solver = RestrictedSolver(X, y, weight_decay, tol=SOLVER_TOL)
    screen = _screen(X, y, weight_decay, solver, support, optimum=optimum, tolerance=tolerance)
    columns = ColumnSolver(solver, screen.atom)
    records: list[ConeRecord] = []
    for done, sample in enumerate(samples, start=1):
        rng = np.random.default_rng([seed, width, sample])
        cones, signs = distinct_cones(*sample_cones(X, width, sampling, rng, patterns=patterns))
        header: dict[str, Any] = {
            "width": width,
            "sample": int(sample),
            "patterns": cones,
            "signs": signs,
            "covered": len(signs) / num_signed_cones,
        }
        keys = cone_keys(cones, signs)
        if screen.holds_global(cones, signs, keys):
            record = ConeRecord(
                **header,
                value=optimum,
                verdict="global",
                method="screened",
                gap=0.0,
                stationarity_residual=math.nan,
                num_neurons=0,
            )
        else:
            record = _solve_and_classify(
                X,
                y,
                weight_decay,
                columns,
                cones,
                signs,
                keys,
                header,
                optimum=optimum,
                tolerance=tolerance,
            )
        records.append(_in_units(record, scaling))
        if on_progress is not None and on_progress(done) is False:
            raise CensusCancelled(records)
    return records


def _in_units(record: ConeRecord, scaling: Scaling) -> ConeRecord:
    """A record of the unit-size problem in the units of the user's data."""
    return replace(
        record,
        value=record.value * scaling.value,
        gap=record.gap * scaling.value,
        stationarity_residual=record.stationarity_residual * scaling.gradient,
    )


def _screen(X, y, weight_decay, solver, support, *, optimum, tolerance) -> GlobalScreen:
    """The screen for this problem; p* comes from one solve over the support's cones.

    That solve also checks the support: only when its cones alone reach the optimum
    (within ``tolerance / 2``) does a cone containing them count as global unsolved.
    """
    support_patterns = np.asarray(support[0], dtype=bool).reshape(-1, X.shape[0])
    support_signs = np.asarray(support[1]).reshape(-1)
    if len(support_signs):
        held = solver.solve(support_patterns, support_signs)
        prediction, value = held.prediction, held.value
    else:
        prediction, value = np.zeros(len(y)), float(y @ y) / len(y)
    proven = value <= optimum + tolerance / 2
    return GlobalScreen(
        X,
        y,
        weight_decay,
        prediction=prediction,
        optimum=optimum,
        margin=tolerance / 2,
        support_keys=set(cone_keys(support_patterns, support_signs)) if proven else None,
    )


def _solve_and_classify(
    X, y, weight_decay, columns, cones, signs, keys, header, *, optimum, tolerance
):
    """Solve the restricted program on the cones that can carry a neuron, then classify."""
    useful = np.any(cones & np.any(X != 0.0, axis=1)[None, :], axis=1)
    if useful.any():
        solution = columns.solve(cones[useful], signs[useful], keys[useful])
        value, U = solution.value, solution.U
    else:
        value, U = float(y @ y) / len(y), np.zeros((0, X.shape[1]))
    found = classify(
        X,
        y,
        weight_decay,
        cones[useful],
        signs[useful],
        U,
        value,
        optimum=optimum,
        tolerance=tolerance,
    )
    return ConeRecord(
        **header,
        value=value,
        verdict=found.verdict,
        method="solved",
        gap=value - optimum,
        stationarity_residual=found.residual,
        num_neurons=found.num_neurons,
        polished=found.polished,
    )


def summarize(records: Sequence[ConeRecord]) -> list[dict]:
    """Per-width rows of a census (SCIENCE §5, step 4).

    Args:
        records: ConeRecords of any widths, in any order.

    Returns:
        One dict per width, sorted by width, with keys width, samples, p_global, p_spurious,
        p_no_local_min (fractions of that width's samples) and p_covered (mean ``covered``).
    """
    by_width: dict[int, list[ConeRecord]] = {}
    for record in records:
        by_width.setdefault(record.width, []).append(record)
    rows = []
    for width in sorted(by_width):
        group = by_width[width]
        verdicts = [r.verdict for r in group]
        rows.append(
            {
                "width": width,
                "samples": len(group),
                "p_global": verdicts.count("global") / len(group),
                "p_spurious": verdicts.count("spurious") / len(group),
                "p_no_local_min": verdicts.count("no_local_min") / len(group),
                "p_covered": float(np.mean([r.covered for r in group])),
            }
        )
    return rows


def thresholds(rows: list[dict]) -> dict:
    """Empirical widths where p_global first reaches 0.5 and 0.95.

    Interpolation is linear in log m between the last grid width below the level and the
    first at or above it (widths are usually log-spaced, and the coupon-collector rise is
    smooth in log m). If the first width already reaches the level, that width is returned;
    if none does, None.

    Args:
        rows: rows of :func:`summarize` (any order).

    Returns:
        {"m_half": float | None, "m_95": float | None}.
    """
    ordered = sorted(rows, key=lambda row: row["width"])
    return {"m_half": _crossing(ordered, 0.5), "m_95": _crossing(ordered, 0.95)}


def _crossing(rows: list[dict], level: float) -> float | None:
    for i, row in enumerate(rows):
        if row["p_global"] >= level:
            if i == 0:
                return float(row["width"])
            lo, hi = rows[i - 1], row
            frac = (level - lo["p_global"]) / (hi["p_global"] - lo["p_global"])
            log_m = math.log(lo["width"]) + frac * (math.log(hi["width"]) - math.log(lo["width"]))
            return float(math.exp(log_m))
    return None
