"""The census of activation cones (SCIENCE §4-§5): which cones hold a global minimum.

For each width m and sample index, m signed cones are drawn, the restricted program is
solved over their distinct members, and the cone is classified:

- "global": restricted value <= optimum + tolerance;
- "spurious": otherwise, and the network recovered from the restricted minimiser is Clarke
  stationary (:mod:`.stationarity`);
- "no_local_min": otherwise.

The tolerance is ``scaling.loss_tolerance``: relative to the scale of the loss (the optimum,
floored at a fraction of mean(y²)) unless an absolute one is given, so that the verdicts do not
change when y and λ are multiplied by the same c. (With the old absolute 1e-7, y and λ times
1e3 turned 26 of 120 cones of teacher (6, 10), λ = 0.01, from "global" into "spurious", and
times 1e-3 turned 73 others into "global": tests/workers/landscape/test_unit_free_verdicts.py.)

A spurious cone also gets the birth test of :func:`.stationarity.birth_test` at its minimiser
(SCIENCE §8): ``birth_margin`` (2 λ minus the largest projection norm over all signed cones at
its residual, in the units of λ; negative when a small new neuron lowers L) and ``strict``
(False when the margin is negative and the width-m network has a neuron free to grow: fewer
than m distinct signed cones carry a neuron).

The fast path (:func:`certify_samples`):

1. Screening, a sufficient test: a cone whose signed cones include the support of a known
   global solution holds that solution, so its value is the optimum and it is "global" with
   no solve (method "screened"); the support is trusted only if its cones alone reach the
   optimum, which one solve per call checks.
2. Otherwise the restricted program is solved by column generation (:mod:`convex.columns`):
   on a small working subset of the cone's signed cones first (guessed from the atoms at the
   global optimal residual, which the screen caches per signed cone), then the dual check of
   SCIENCE §3 restricted to the cone's members adds violators (the worst few per round)
   until there are none. Each program is built directly for Clarabel
   (:mod:`convex.restricted`: row-space reduction, CSC values filled into a cached matrix,
   single-threaded QDLDL; with n several times rank X, only each signed cone's facet
   rows). A working-set solution that fails the complementarity check is polished and kept
   when the outside members pass the dual check there, else replaced by one solve over all
   members.
3. The minimiser is polished to machine precision and classified by :func:`classify`
   (method "solved"); the polish's dual check starts from the values the column generation
   found (``RestrictedSolution.dual``) and projects only the rows they leave open.

Everything runs at unit scale (:mod:`.scaling`); records are in the units of X and y.

:func:`classify` is shared with the straightforward per-cone path (``convex.solve_program``),
so the two differ only in how the restricted program is solved.

Caches (the screen's atoms, the solver's matrix structure) hold deterministic functions of one
signed cone or of k, never of the samples seen, so any chunk of samples gives the same records.
Two are kept across calls, keyed by their exact inputs, so a census's calls on one problem
(its widths, its chunks in one worker) share them bit for bit: the screen's solve over the
support (:func:`_support_solve`) and the NNLS of each atom (``certificate.projections(memo=
True)``; the atoms themselves are still computed per call, in that call's batches).

Each sample draws from its own ``np.random.default_rng([seed, width, sample])`` and nothing
is carried between samples, so any chunk of samples can be redone on another worker with
identical records.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from cachetools import LRUCache

from ..convex.classify import STATIONARITY_TOL, Classification, classify
from ..convex.columns import ColumnSolver
from ..convex.restricted import RestrictedSolver
from ..convex.stationarity import birth_test
from ..geometry.patterns import cone_keys
from ..geometry.scaling import RELATIVE_TOLERANCE, Scaling, loss_tolerance
from .records import VERDICTS, ConeRecord, summarize, thresholds
from .sampling import SAMPLINGS, distinct_keyed, sample_cones
from .screen import GlobalScreen

__all__ = [
    "SAMPLINGS",
    "STAGES",
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

#: The steps :func:`certify_samples` times (its ``timings``): the setup (scaling, the screen's
#: solve over the support), drawing and deduplicating the cones, screening, the restricted
#: solve, the polish, the stationarity test (with the pruning and balancing of the network)
#: and the birth test of spurious cones.
STAGES = ("setup", "sample", "screen", "solve", "polish", "stationarity", "birth")
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
    tolerance: float | None = None,
    relative_tolerance: float = RELATIVE_TOLERANCE,
    patterns: np.ndarray | None = None,
    num_signed_cones: int,
    on_progress: Callable[[int], bool] | None = None,
    timings: dict[str, float] | None = None,
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
        tolerance: absolute tolerance on value - optimum for "global", in the units of y²;
            None (the default) for ``relative_tolerance`` times ``scaling.loss_scale`` (the
            programs and the classification run at unit scale, see ``scaling.Scaling``).
        relative_tolerance: see ``scaling.loss_tolerance``.
        patterns: (P, n) bool, every pattern of X; required for "uniform", and used by the
            birth test of spurious cones (enumerated on first need when not given).
        num_signed_cones: 2 P, the denominator of ``covered``.
        on_progress: called with the number of cones done after each cone; returning False
            stops the call.
        timings: when given, the wall seconds of each step of ``STAGES`` are added to it
            (``time.perf_counter`` around each step, so the records do not change).

    Returns:
        One ConeRecord per entry of ``samples``, in that order.

    Raises:
        CensusCancelled: when ``on_progress`` returns False (carries the finished records).
    """
    clock = _Clock(timings)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    tolerance = loss_tolerance(
        optimum,
        X,
        y,
        weight_decay,
        tolerance=tolerance,
        relative_tolerance=relative_tolerance,
    )
    scaling = Scaling.of(X, y)  # solve at unit size; records in the user's units
    X, y, weight_decay = scaling.data(X, y, weight_decay)
    optimum, tolerance = optimum / scaling.value, tolerance / scaling.value
    every = _Patterns(X, patterns)
    solver = RestrictedSolver(X, y, weight_decay, tol=SOLVER_TOL)
    screen = _screen(X, y, weight_decay, solver, support, optimum=optimum, tolerance=tolerance)
    columns = ColumnSolver(solver, screen.atom, anchor=screen.residual, atoms=screen.atoms)
    records: list[ConeRecord] = []
    clock.lap("setup")
    for done, sample in enumerate(samples, start=1):
        rng = np.random.default_rng([seed, width, sample])
        cones, signs, keys = distinct_keyed(
            *sample_cones(X, width, sampling, rng, patterns=patterns)
        )
        header: dict[str, Any] = {
            "width": width,
            "sample": int(sample),
            "patterns": cones,
            "signs": signs,
            "covered": len(signs) / num_signed_cones,
        }
        clock.lap("sample")
        held = screen.holds_global(cones, signs, keys)
        clock.lap("screen")
        if held:
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
                every=every,
                clock=clock,
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
        birth_margin=record.birth_margin * scaling.dual,
    )


class _Patterns:
    """Every pattern of X, enumerated on first use when the caller did not pass them."""

    def __init__(self, X: np.ndarray, patterns: np.ndarray | None) -> None:
        self.X, self.patterns = X, patterns

    def get(self) -> np.ndarray:
        if self.patterns is None:
            from ..geometry.patterns import enumerate_patterns

            self.patterns = enumerate_patterns(self.X)
        return self.patterns


def _screen(X, y, weight_decay, solver, support, *, optimum, tolerance) -> GlobalScreen:
    """The screen for this problem; p* comes from one solve over the support's cones.

    That solve also checks the support: only when its cones alone reach the optimum
    (within ``tolerance / 2``) does a cone containing them count as global unsolved.
    """
    support_patterns = np.asarray(support[0], dtype=bool).reshape(-1, X.shape[0])
    support_signs = np.asarray(support[1]).reshape(-1)
    if len(support_signs):
        prediction, value = _support_solve(solver, support_patterns, support_signs)
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


#: Support solves :func:`_support_solve` keeps (least recently used dropped first).
SUPPORT_CACHE = 32
_support_solves: LRUCache[tuple, tuple[np.ndarray, float]] = LRUCache(maxsize=SUPPORT_CACHE)
_support_lock = threading.Lock()


def _support_solve(
    solver: RestrictedSolver, patterns: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, float]:
    """(prediction, value) of the restricted program over the support's cones, cached.

    A pure function of the unit-size data, λ, the support and the solver's tolerance (one
    Clarabel program, deterministic), so a census's calls on one problem (its widths, its
    chunks in one worker) solve it once. The prediction is read-only.
    """
    tol = solver.settings.tol_gap_abs
    parts = (solver.X, solver.y, np.array([solver.weight_decay, tol]), patterns, signs)
    key = tuple((np.shape(a), np.asarray(a).dtype.str, np.asarray(a).tobytes()) for a in parts)
    with _support_lock:
        found = _support_solves.get(key)
    if found is not None:
        return found
    held = solver.solve(patterns, signs)
    prediction = np.array(held.prediction)
    prediction.flags.writeable = False
    with _support_lock:
        _support_solves[key] = (prediction, held.value)
    return prediction, held.value


class _Clock:
    """Adds the wall seconds since its last lap to a stage of ``timings`` (see STAGES)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = {} if timings is None else timings
        for stage in STAGES:
            self.timings.setdefault(stage, 0.0)
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] += now - self.last
        self.last = now


def _solve_and_classify(
    X, y, weight_decay, columns, cones, signs, keys, header, *, optimum, tolerance, every, clock
):
    """Solve the restricted program on the cones that can carry a neuron, then classify.

    A spurious cone's minimiser gets the birth test, as a network of the sample's width.
    """
    useful = (cones & (X != 0.0).any(axis=1)[None, :]).any(axis=1)
    dual = None
    if useful.any():
        solution = columns.solve(cones[useful], signs[useful], keys[useful])
        value, U, dual = solution.value, solution.U, solution.dual
    else:
        value, U = float(y @ y) / len(y), np.zeros((0, X.shape[1]))
    clock.lap("solve")
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
        dual_bounds=dual,
        timings=clock.timings,
    )
    clock.last = time.perf_counter()  # classify added its polish and stationarity seconds
    born = None
    if found.verdict == "spurious" and found.network is not None:
        W, a = found.network
        born = birth_test(X, y, W, a, weight_decay, every.get(), width=header["width"])
    clock.lap("birth")
    return ConeRecord(
        **header,
        value=value,
        verdict=found.verdict,
        method="solved",
        gap=value - optimum,
        stationarity_residual=found.residual,
        num_neurons=found.num_neurons,
        polished=found.polished,
        birth_margin=math.nan if born is None else born.margin,
        strict=None if born is None else born.strict,
    )
