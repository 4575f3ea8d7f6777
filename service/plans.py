"""From a validated spec to the work items and runs that carry it out.

The limits are checked here, before anything is accepted, so that nothing is
accepted that cannot run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.config import Settings
from service.specs import CensusSpec, CustomDataset, OptimumSpec, TrainingSpec


class SpecRejected(ValueError):
    """A spec that is well-formed but cannot be accepted; `loc` names the field."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


@dataclass
class Plan:
    items: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


def cover_count(n: int, rank: int) -> int:
    """Activation patterns of n points in general position in R^rank (Cover's count)."""
    if rank >= n:
        return 2**n
    return 2 * sum(math.comb(n - 1, i) for i in range(rank))


def pattern_bound(spec: OptimumSpec | CensusSpec | TrainingSpec) -> tuple[int, str]:
    """An upper bound on the number of activation patterns, exact for generic data.

    Generated data is in general position with probability one, so Cover's count
    with d replaced by the rank is exact there; for custom data it is an upper
    bound (degenerate data has fewer patterns).
    """
    ds = spec.dataset
    if isinstance(ds, CustomDataset):
        X = np.asarray(ds.X, dtype=float)
        nonzero = X[np.linalg.norm(X, axis=1) > 0]
        rank = int(np.linalg.matrix_rank(nonzero)) if len(nonzero) else 0
        distinct = len({tuple(row) for row in nonzero.tolist()})
        return cover_count(distinct, rank) if rank else 1, "at most"
    return cover_count(ds.n, min(ds.n, ds.d)), "exactly"


def plan(spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings) -> Plan:
    """The work items and runs of an accepted spec; raises SpecRejected."""
    if isinstance(spec.dataset, CustomDataset) and spec.dataset.n > settings.max_custom_points:
        raise SpecRejected(
            ("body", "dataset", "X"),
            f"custom data has {spec.dataset.n} points, over the limit of "
            f"{settings.max_custom_points}",
        )
    _check_budget(spec, settings)
    _check_patterns(spec, settings)
    optimum = {"task": "optimum", "queue": "cpu", "stage": 0, "progress_total": 1}
    if not isinstance(spec, OptimumSpec):  # progress counts cones or runs
        optimum["progress_total"] = 0
    if isinstance(spec, CensusSpec):
        return Plan(
            items=[optimum, *_census_chunks(spec)],
            runs=[{"width": w, "samples": spec.samples_per_width} for w in spec.widths],
        )
    if isinstance(spec, TrainingSpec):
        return _training_plan(spec, settings, optimum)
    return Plan(items=[optimum])


def census_chunk_size(width: int, samples: int) -> int:
    """Cones per work item: a few seconds of work, so a lost worker loses little."""
    size = max(1, min(50, 4000 // max(width, 1)))
    return min(size, max(1, -(-samples // 2)))  # at least two chunks, so two workers share


def _census_chunks(spec: CensusSpec) -> list[dict[str, Any]]:
    items = []
    for width in spec.widths:
        size = census_chunk_size(width, spec.samples_per_width)
        for start in range(0, spec.samples_per_width, size):
            stop = min(start + size, spec.samples_per_width)
            items.append(
                {
                    "task": "census_chunk",
                    "queue": "cpu",
                    "stage": 1,
                    "progress_total": stop - start,
                    "payload": {"width": width, "start": start, "stop": stop},
                }
            )
    return items


def _training_plan(spec: TrainingSpec, settings: Settings, optimum: dict[str, Any]) -> Plan:
    runs = [
        {"width": w, "init_scale": a, "seed": s}
        for w in spec.widths
        for a in spec.init_scales
        for s in range(spec.seeds)
    ]
    queue = "cpu" if spec.device == "cpu" else "gpu"
    size = settings.training_batch_runs
    items = [
        {
            "task": "training_batch",
            "queue": queue,
            "stage": 1,
            "progress_total": min(size, len(runs) - start),
            "payload": {"runs": [start, min(start + size, len(runs))]},
        }
        for start in range(0, len(runs), size)
    ]
    return Plan(items=[optimum, *items], runs=runs)


MIN_REJECTION_RATE = 1e-3


def _check_patterns(spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings) -> None:
    count, how = pattern_bound(spec)
    if isinstance(spec, CensusSpec) and spec.sampling == "rejection":
        rate = count / 2**spec.dataset.n
        if rate < MIN_REJECTION_RATE:
            raise SpecRejected(
                ("body", "sampling"),
                f"rejection sampling would keep about {rate:.1e} of random bit vectors "
                f"({count} patterns of 2^{spec.dataset.n}); use random_vector",
            )
    limit = settings.max_patterns
    if isinstance(spec, CensusSpec) and spec.sampling == "uniform":
        limit = min(limit, settings.max_uniform_patterns)
    if count > limit:
        raise SpecRejected(
            ("body", "dataset"),
            f"the dataset has {how} {count} activation patterns (n={spec.dataset.n}, "
            f"d={spec.dataset.d}), over the limit of {limit}",
        )


def _check_budget(spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings) -> None:
    if isinstance(spec, TrainingSpec) and spec.num_runs > settings.max_runs:
        raise SpecRejected(
            ("body", "seeds"),
            f"the grid has {spec.num_runs} runs ({len(spec.widths)} widths x "
            f"{len(spec.init_scales)} init_scales x {spec.seeds} seeds), over the limit of "
            f"{settings.max_runs}",
        )
    if isinstance(spec, CensusSpec):
        cones = len(spec.widths) * spec.samples_per_width
        if cones > settings.max_census_cones:
            raise SpecRejected(
                ("body", "samples_per_width"),
                f"the census has {cones} cones ({len(spec.widths)} widths x "
                f"{spec.samples_per_width} samples), over the limit of {settings.max_census_cones}",
            )
