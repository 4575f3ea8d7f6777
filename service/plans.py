"""From a validated spec to the work items and runs that carry it out.

The limits are checked here, before anything is accepted, so that nothing is
accepted that cannot run. Cheap, bounded checks come first (grid sizes, the pattern
count capped at its limit, the item count by arithmetic (a census's chunk sizes depend on
the pattern count), the pattern limit, the weight decay), then
each item's estimate (``budgets``: the model and its measurements) against
MAX_ITEM_MEMORY and MAX_ITEM_SECONDS, and the stored result against MAX_RESULT_BYTES.
Each item carries ``time_limit`` (hard seconds) and ``memory_estimate`` (bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service import budgets, notify
from service.config import Settings
from service.specs import (
    CensusSpec,
    CustomDataset,
    OptimumSpec,
    TrainingSpec,
    realisations,
    swept,
    training_grid,
    weight_decays,
)
from workers.landscape.geometry.counting import cover_count


class SpecRejected(ValueError):
    """A spec that is well-formed but cannot be accepted; `loc` names the field."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


@dataclass
class Plan:
    items: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


def pattern_bound(
    spec: OptimumSpec | CensusSpec | TrainingSpec,
    cap: int | None = None,
    X: np.ndarray | None = None,
) -> tuple[int, str]:
    """An upper bound on the number of activation patterns, exact for generic data.

    Generated data is in general position with probability one, so Cover's count
    with d replaced by the rank is exact there; for custom data it is an upper
    bound (degenerate data has fewer patterns). With ``cap``, counts above it are
    cap + 1 (see ``cover_count``). ``X``: the custom data as an array, if already built.
    """
    ds = spec.dataset
    if isinstance(ds, CustomDataset):
        X = np.asarray(ds.X, dtype=float) if X is None else X
        nonzero = X[np.einsum("ij,ij->i", X, X) > 0]
        rank = int(np.linalg.matrix_rank(nonzero)) if len(nonzero) else 0
        distinct = len({row.tobytes() for row in nonzero + 0.0})  # + 0.0: -0.0 equals 0.0
        return cover_count(distinct, rank, cap) if rank else 1, "at most"
    return cover_count(ds.n, min(ds.n, ds.d), cap), "exactly"


def plan(spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings) -> Plan:
    """The work items and runs of an accepted spec; raises SpecRejected."""
    if isinstance(spec.dataset, CustomDataset) and spec.dataset.n > settings.max_custom_points:
        raise SpecRejected(
            ("body", "dataset", "X"),
            f"custom data has {spec.dataset.n} points, over the limit of "
            f"{settings.max_custom_points}",
        )
    if spec.notify and (refused := notify.refused_host(spec.notify, settings)):
        raise SpecRejected(("body", "notify"), refused)
    X = np.asarray(spec.dataset.X, dtype=float) if isinstance(spec.dataset, CustomDataset) else None
    _check_weight_decay(spec, X)
    _check_budget(spec, settings)
    limit = _pattern_limit(spec, settings)
    bound = pattern_bound(spec, cap=limit, X=X)  # at most limit + 1
    _check_item_count(spec, settings, bound[0])
    patterns = _check_patterns(spec, X, limit, bound)
    _check_result(spec, settings, patterns)
    n, d = spec.dataset.n, spec.dataset.d
    optimum = {"task": "optimum", "queue": "cpu", "stage": 0, "progress_total": 1}
    if not isinstance(spec, OptimumSpec):  # progress counts cones or epochs
        optimum["progress_total"] = 0
    where = ("body", "dataset")
    _budget(optimum, budgets.optimum(n, d, patterns), settings, where, where)
    if isinstance(spec, CensusSpec):
        seeds = realisations(spec.data_seeds)
        return Plan(
            items=[*_optima(spec, optimum), *_census_chunks(spec, settings, patterns)],
            runs=[
                {"width": w, "samples": len(seeds) * spec.samples_per_width} for w in spec.widths
            ],
        )
    if isinstance(spec, TrainingSpec):
        return _training_plan(spec, settings, _optima(spec, optimum), patterns)
    return Plan(items=[optimum])


def _optima(spec: CensusSpec | TrainingSpec, optimum: dict[str, Any]) -> list[dict[str, Any]]:
    """One optimum item per (data seed, weight decay): the payload names the swept ones
    (an empty payload, as before the sweeps, when nothing is swept)."""
    flags = swept(_grid_json(spec))
    items = []
    for data_seed in realisations(spec.data_seeds):
        for lam in weight_decays(spec):
            cell = {"data_seed": data_seed, "weight_decay": lam}
            items.append({**optimum, "payload": {k: v for k, v in cell.items() if flags[k]}})
    return items


Loc = tuple[str | int, ...]


def _budget(
    item: dict[str, Any], est: budgets.Estimate, settings: Settings, loc: Loc, time_loc: Loc
) -> None:
    """Refuse an item over MAX_ITEM_MEMORY or MAX_ITEM_SECONDS, else give it its limits."""
    what = {"optimum": "the optimum", "census_chunk": "a census chunk"}.get(
        item["task"], "a training batch"
    )
    if est.memory > settings.max_item_memory:
        limit = budgets.human_bytes(settings.max_item_memory)
        raise SpecRejected(
            loc,
            f"{what} would need about {budgets.human_bytes(est.memory)} of memory "
            f"({est.shape}), over MAX_ITEM_MEMORY of {limit}",
        )
    if est.seconds > settings.max_item_seconds:
        raise SpecRejected(
            time_loc,
            f"{what} would take about {budgets.human_seconds(est.seconds)} ({est.shape}), "
            f"over MAX_ITEM_SECONDS of {budgets.human_seconds(settings.max_item_seconds)}",
        )
    item["time_limit"] = max(settings.min_time_limit, settings.time_limit_factor * est.seconds)
    item["memory_estimate"] = int(est.memory)


def census_chunk_size(width: int, samples: int, patterns: int | None = None) -> int:
    """Cones per work item: a few seconds of work, so a lost worker loses little, and
    enough that the service's cost per item (claim, store, the next claim: about 10 ms)
    stays a small share: most cones of a wide census are decided by screening in a few ms
    each, and at 4000 // width cones a chunk the per-item cost took half of a census's
    time (bench/README.md, end to end).

    A cone that is solved costs with its distinct signed cones, at most
    k = min(width, 2 ``patterns``): 16000 // k cones a chunk; drawing its `width` neurons
    costs with the width: at most 160,000 neurons drawn per chunk (about 0.1 s).
    ``patterns``: the dataset's pattern count (None: unknown, k = width)."""
    k = max(1, width if patterns is None else min(width, 2 * patterns))
    size = max(1, min(200, 16000 // k, 160_000 // max(width, 1)))
    return min(size, max(1, -(-samples // 2)))  # at least two chunks, so two workers share


def _grid_json(spec: CensusSpec | TrainingSpec) -> dict[str, Any]:
    """The spec's JSON as stored, without the dataset (custom X can be large)."""
    keys = {"data_seeds", "weight_decay", "optimizer", "widths", "init_scales", "seeds"}
    return spec.model_dump(mode="json", include=keys)


def _census_chunks(spec: CensusSpec, settings: Settings, patterns: int) -> list[dict[str, Any]]:
    """The census's chunks, realisation by realisation. Sample indices run on across the
    realisations (realisation r holds [r S, (r + 1) S) for S samples per width), so that
    each cone has its own RNG stream and key; a payload names its data seed when swept."""
    n, d = spec.dataset.n, spec.dataset.d
    per = spec.samples_per_width
    items = []
    for r, data_seed in enumerate(realisations(spec.data_seeds)):
        named = {} if data_seed is None else {"data_seed": data_seed}
        for width in spec.widths:
            size = census_chunk_size(width, per, patterns)
            for start in range(0, per, size):
                stop = min(start + size, per)
                item: dict[str, Any] = {
                    "task": "census_chunk",
                    "queue": "cpu",
                    "stage": 1,
                    "progress_total": stop - start,
                    "payload": {"width": width, "start": r * per + start, "stop": r * per + stop}
                    | named,
                }
                uniform = spec.sampling == "uniform"
                est = budgets.census_chunk(
                    n, d, patterns, width=width, cones=stop - start, uniform=uniform
                )
                _budget(item, est, settings, ("body", "widths"), ("body", "samples_per_width"))
                items.append(item)
    return items


def _training_plan(
    spec: TrainingSpec, settings: Settings, optima: list[dict[str, Any]], patterns: int
) -> Plan:
    """Batches of at most TRAINING_BATCH_RUNS runs, each within one (data seed, weight
    decay, lr) cell of the grid (``training_grid``), since a batch trains one X, y, λ, lr."""
    runs = training_grid(_grid_json(spec))
    # "auto" prefers a GPU worker and falls back to the CPU ones (service/fleet.py).
    queue = "cpu" if spec.device == "cpu" else "gpu"
    fallback = "cpu" if spec.device == "auto" else None
    size = settings.training_batch_runs
    n, d = spec.dataset.n, spec.dataset.d
    opt = spec.optimizer
    steps = -(-n // opt.batch_size) if opt.name == "sgd" and opt.batch_size else 1
    block = len(runs) // spec.num_cells
    items = []
    for cell in range(0, len(runs), block):
        for start in range(cell, cell + block, size):
            batch = runs[start : min(start + size, cell + block)]
            item: dict[str, Any] = {
                "task": "training_batch",
                "queue": queue,
                "fallback": fallback,
                "stage": 1,
                "progress_total": len(batch) * spec.max_epochs,  # progress counts epochs
                "payload": {"runs": [start, start + len(batch)]},
            }
            est = budgets.training_batch(
                n,
                d,
                patterns,
                runs=len(batch),
                width=int(max(r["width"] for r in batch)),
                epochs=spec.max_epochs,
                steps_per_epoch=steps,
                native=budgets.uses_native(n, opt.name, spec.device),
                log_growth=spec.log_growth,
            )
            _budget(item, est, settings, ("body", "widths"), ("body", "max_epochs"))
            items.append(item)
    return Plan(items=[*optima, *items], runs=runs)


MIN_REJECTION_RATE = 1e-3
#: The smallest weight decay at unit scale (λ / (max ||x|| rms(y)), see
#: workers/landscape/scaling.py) that the solvers take: far above float64's smallest
#: normal number, so that 2 λ, 1 / λ and the dual certificate stay finite.
MIN_UNIT_WEIGHT_DECAY = 1e-290
#: Generated data has max ||x|| rms(y) below 1e10, so this floor keeps their unit λ above
#: MIN_UNIT_WEIGHT_DECAY; custom data is checked on its own scale.
MIN_WEIGHT_DECAY = 1e-280


def _check_weight_decay(
    spec: OptimumSpec | CensusSpec | TrainingSpec, X: np.ndarray | None
) -> None:
    """Refuse a weight decay (each one of a list) too small for the solvers."""
    many = isinstance(spec.weight_decay, list)
    for i, lam in enumerate(weight_decays(spec)):
        loc: Loc = ("body", "weight_decay", i) if many else ("body", "weight_decay")
        _check_one_weight_decay(spec, lam, X, loc)


def _check_one_weight_decay(
    spec: OptimumSpec | CensusSpec | TrainingSpec, lam: float, X: np.ndarray | None, loc: Loc
) -> None:
    ds = spec.dataset
    if isinstance(ds, CustomDataset) and X is not None:
        y = np.asarray(ds.y, dtype=float)
        s = float(np.sqrt(np.einsum("ij,ij->i", X, X).max())) or 1.0
        c = float(np.sqrt(np.mean(np.square(y)))) or 1.0
        unit = lam / s / c
        if unit >= MIN_UNIT_WEIGHT_DECAY:
            return
        why = f"λ at unit scale, λ / (max ||x|| x rms(y)) = {unit:.3g}"
    elif lam >= MIN_WEIGHT_DECAY:
        return
    else:
        why = f"λ at unit scale could underflow (below {MIN_WEIGHT_DECAY:g})"
    raise SpecRejected(
        loc,
        f"weight_decay {lam:g} is too small: {why}, under the smallest the solvers take "
        f"({MIN_UNIT_WEIGHT_DECAY:g})",
    )


def _pattern_limit(spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings) -> int:
    """MAX_PATTERNS, or MAX_UNIFORM_PATTERNS for a census that samples uniformly."""
    if isinstance(spec, CensusSpec) and spec.sampling == "uniform":
        return min(settings.max_patterns, settings.max_uniform_patterns)
    return settings.max_patterns


def _check_patterns(
    spec: OptimumSpec | CensusSpec | TrainingSpec,
    X: np.ndarray | None,
    limit: int,
    bound: tuple[int, str],
) -> int:
    """The pattern count (at most the limit), after refusing one over the limit;
    ``bound``: ``pattern_bound`` capped at `limit`."""
    count, how = bound
    n = spec.dataset.n
    if isinstance(spec, CensusSpec) and spec.sampling == "rejection":
        # log2 of the kept fraction, from a count at most cap + 1: never a huge integer
        log_rate = math.log2(count) - n
        if log_rate < math.log2(MIN_REJECTION_RATE):
            shown = f"{count}" if count <= limit else f"more than {limit}"
            raise SpecRejected(
                ("body", "sampling"),
                f"rejection sampling would keep about 2^{log_rate:.0f} of random bit vectors "
                f"({shown} patterns of 2^{n}); use random_vector",
            )
    if count > limit:
        log10 = _log10_cover(spec)
        # the exact count when it is a short number (cheap then), its order of magnitude otherwise
        shape = f"n={n}, d={spec.dataset.d}"
        if log10 < 30:
            shown = f"{how} {pattern_bound(spec, X=X)[0]} activation patterns ({shape})"
        else:
            shown = f"more than {limit} activation patterns (about 10^{log10:.0f}; {shape})"
        raise SpecRejected(
            ("body", "dataset"), f"the dataset has {shown}, over the limit of {limit}"
        )
    return count


def _log10_cover(spec: OptimumSpec | CensusSpec | TrainingSpec) -> float:
    """log10 of Cover's count for the spec's n and d, in floating point (never a big int)."""
    n, rank = spec.dataset.n, min(spec.dataset.n, spec.dataset.d)
    if rank >= n:
        return n * math.log10(2)
    terms = [
        math.lgamma(n) - math.lgamma(i + 1) - math.lgamma(n - i) for i in range(min(rank, 2000))
    ]
    top = max(terms)
    return (math.log(2) + top + math.log(sum(math.exp(t - top) for t in terms))) / math.log(10)


def _check_item_count(
    spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings, patterns: int
) -> None:
    """Refuse more than MAX_ITEMS_PER_EXPERIMENT items, counted before any is built
    (``patterns``: the pattern count, capped)."""
    if isinstance(spec, CensusSpec):
        seeds, per = len(realisations(spec.data_seeds)), spec.samples_per_width
        count = seeds * (
            1 + sum(-(-per // census_chunk_size(w, per, patterns)) for w in spec.widths)
        )
        loc: Loc = ("body", "samples_per_width")
        why = f"{len(spec.widths)} widths x {spec.samples_per_width} samples in chunks"
        why += f", for each of {seeds} data seeds" if spec.data_seeds else ""
    elif isinstance(spec, TrainingSpec):
        cells, size = spec.num_cells, settings.training_batch_runs
        per_cell = spec.num_runs // cells
        count = _num_optima(spec) + cells * -(-per_cell // size)
        loc, why = ("body", "seeds"), f"{spec.num_runs} runs in batches of {size}"
        why += f" within each of {cells} (data seed, weight_decay, lr) cells" if cells > 1 else ""
    else:
        return
    if count > settings.max_items_per_experiment:
        raise SpecRejected(
            loc,
            f"the experiment would have {count} work items ({why}), over "
            f"MAX_ITEMS_PER_EXPERIMENT of {settings.max_items_per_experiment}",
        )


def _num_optima(spec: CensusSpec | TrainingSpec) -> int:
    return len(realisations(spec.data_seeds)) * len(weight_decays(spec))


def _check_result(
    spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings, patterns: int
) -> None:
    n, d = spec.dataset.n, spec.dataset.d
    size = budgets.optimum_output_bytes(n, d, patterns)
    widths = len(spec.widths) if isinstance(spec, CensusSpec | TrainingSpec) else 0
    scales = len(spec.init_scales) if isinstance(spec, TrainingSpec) else 1
    optima = cells = 1
    if isinstance(spec, CensusSpec):
        optima = cells = len(realisations(spec.data_seeds))
    elif isinstance(spec, TrainingSpec):
        optima, cells = _num_optima(spec), spec.num_cells
    size += budgets.result_bytes(
        spec.kind, widths=widths, init_scales=scales, optima=optima, cells=cells
    )
    if size > settings.max_result_bytes:
        loc = ("body", "dataset", "X" if isinstance(spec.dataset, CustomDataset) else "d")
        raise SpecRejected(
            loc,
            f"the stored result would be about {budgets.human_bytes(size)} "
            f"(up to {min(n + 1, 2 * patterns)} neurons x d {d}), over MAX_RESULT_BYTES of "
            f"{budgets.human_bytes(settings.max_result_bytes)}",
        )


def _check_budget(spec: OptimumSpec | CensusSpec | TrainingSpec, settings: Settings) -> None:
    if isinstance(spec, TrainingSpec) and spec.num_runs > settings.max_runs:
        cells = spec.num_cells
        per = f" x {cells} (data seed, weight_decay, lr) cells" if cells > 1 else ""
        raise SpecRejected(
            ("body", "seeds"),
            f"the grid has {spec.num_runs} runs ({len(spec.widths)} widths x "
            f"{len(spec.init_scales)} init_scales x {spec.seeds} seeds{per}), over the limit of "
            f"{settings.max_runs}",
        )
    if isinstance(spec, CensusSpec):
        seeds = len(realisations(spec.data_seeds))
        cones = len(spec.widths) * spec.samples_per_width * seeds
        if cones > settings.max_census_cones:
            per = f" x {seeds} data seeds" if spec.data_seeds else ""
            raise SpecRejected(
                ("body", "samples_per_width"),
                f"the census has {cones} cones ({len(spec.widths)} widths x "
                f"{spec.samples_per_width} samples{per}), over the limit of "
                f"{settings.max_census_cones}",
            )
