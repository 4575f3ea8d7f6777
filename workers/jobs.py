"""The jobs behind each work item, and the fan-in that turns their outputs into a result.

Jobs call the pure core in workers.landscape; they see the database only
through the Context the task hands them.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.config import get_settings
from service.models import Run
from service.specs import lrs, realisations, realise, swept, training_grid, weight_decays


class Stopped(Exception):
    """The experiment was cancelled, another worker took the item over, or this one stops."""


#: Seconds between a training job's checks for cancellation and shutdown; checkpoints
#: are still saved every CHECKPOINT_INTERVAL.
STOP_CHECK_INTERVAL = 1.0


class Context(Protocol):
    spec: dict[str, Any]
    payload: dict[str, Any]
    checkpoint: bytes | None
    queue: str

    def progress(self, done: int) -> bool:
        """Report progress; False when the job should stop (cancelled, lease lost, shutdown)."""
        ...

    def shutting_down(self) -> bool:
        """The worker is shutting down: the item will be handed back to the queue."""
        ...

    def save_live(
        self,
        *,
        checkpoint: bytes | None = None,
        chunks: list[dict[str, Any]] | None = None,
        updates: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Store, in one transaction of its own, a training batch's checkpoint (state only),
        the chunks of curve points since its last save (service.curve_chunks.chunks) and
        run updates naming their run by `index`; False when nothing was stored (this worker
        no longer holds the item, or the database is away)."""
        ...

    def stored_points(self) -> tuple[int, list[bytes]]:
        """The curve chunks the item has stored (the history of its checkpoint), in the
        order written, and the next chunk seq."""
        ...

    def stage_outputs(self, stage: int) -> list[dict[str, Any]]: ...


@dataclass
class LocalContext:
    """A job's context without a database or a worker (benches, tests): the outputs of
    earlier stages are given up front, nothing is stored and nothing stops the job."""

    spec: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)
    checkpoint: bytes | None = None
    queue: str = "cpu"
    outputs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def progress(self, done: int) -> bool:
        return True

    def shutting_down(self) -> bool:
        return False

    def save_live(self, **saved: Any) -> bool:
        return True

    def stored_points(self) -> tuple[int, list[bytes]]:
        return 0, []

    def stage_outputs(self, stage: int) -> list[dict[str, Any]]:
        return self.outputs[stage]


@dataclass
class Outcome:
    """A job's JSON output, updates of run rows (each names its run by `index`), cone rows."""

    output: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    cones: list[dict[str, Any]] = field(default_factory=list)


def _dataset(spec: dict[str, Any], data_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The spec's data, or its realisation with ``dataset.seed`` replaced by data_seed."""
    from workers.landscape.geometry import datasets

    return datasets.build(realise(spec["dataset"], data_seed))


def _patterns_of(spec: dict[str, Any], data_seed: int | None = None) -> np.ndarray:
    return _all_patterns(json.dumps(realise(spec["dataset"], data_seed), sort_keys=True))


def _optimum_of(outputs: list[dict[str, Any]], data_seed: int | None, lam: float) -> dict[str, Any]:
    """The optimum output of one (data seed, weight decay); outputs name the swept ones
    (an experiment that sweeps neither has one optimum)."""
    for out in outputs:
        if out.get("data_seed") == data_seed and out.get("weight_decay", lam) == lam:
            return out
    raise LookupError(f"no optimum for data seed {data_seed} and weight_decay {lam:g}")


@functools.lru_cache(maxsize=4)
def _all_patterns(dataset: str) -> np.ndarray:
    """Every activation pattern of a dataset (given as canonical JSON), read-only.

    Cached per worker process: each chunk of a uniform census would otherwise
    enumerate the same (up to MAX_UNIFORM_PATTERNS, n) array again.
    """
    from workers.landscape.geometry import datasets, patterns

    found = patterns.enumerate_patterns(datasets.build(json.loads(dataset))[0])
    found.setflags(write=False)
    return found


def optimum_job(ctx: Context) -> Outcome:
    """The certified global optimum of the spec's dataset (SCIENCE.md section 3)."""
    from workers.landscape import convex
    from workers.landscape.geometry import patterns

    cell = ctx.payload  # names the data seed and weight decay when the spec sweeps them
    X, y = _dataset(ctx.spec, cell.get("data_seed"))
    lam = float(cell.get("weight_decay", weight_decays(ctx.spec)[0]))
    opt = convex.global_optimum(X, y, lam)
    n, d = X.shape
    neurons = [{"w": w.tolist(), "a": float(a)} for w, a in zip(opt.W, opt.a, strict=True)]
    support = {
        "patterns": ["".join("1" if b else "0" for b in row) for row in opt.support_patterns],
        "signs": [int(s) for s in opt.support_signs],
    }
    if not ctx.progress(1) and not ctx.shutting_down():  # done: store it even when stopping
        raise Stopped
    return Outcome(
        output={
            "optimum": float(opt.value),
            "num_patterns": int(opt.num_patterns),
            "num_signed_cones": int(opt.num_signed_cones),
            "theory_bound": int(patterns.theory_bound(n, d)),
            "neurons": neurons,
            "certificate": {
                "max_dual_violation": float(opt.max_dual_violation),
                # optimum - (true global minimum) <= gap_bound, by weak duality
                "gap_bound": float(opt.gap_bound),
            },
            "method": opt.method,
            "support": support,
            **{k: cell[k] for k in ("data_seed", "weight_decay") if k in cell},
        }
    )


def _tolerances(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's loss tolerances: an explicit absolute one (stored specs have 1e-7), or None
    and the relative one (``scaling.loss_tolerance``)."""
    from workers.landscape.geometry.scaling import RELATIVE_TOLERANCE

    tolerance = spec.get("tolerance")
    return {
        "tolerance": None if tolerance is None else float(tolerance),
        "relative_tolerance": float(spec.get("relative_tolerance", RELATIVE_TOLERANCE)),
    }


def _bits(rows: list[str], n: int) -> np.ndarray:
    out = np.array([[c == "1" for c in row] for row in rows], dtype=bool)
    return out.reshape(len(rows), n)


def census_chunk_job(ctx: Context) -> Outcome:
    """Certify samples [start, stop) of one width (SCIENCE.md sections 4-5) on the data of
    the payload's data seed (indices run on across realisations, see service/plans.py)."""
    from workers.landscape import census

    data_seed = ctx.payload.get("data_seed")
    X, y = _dataset(ctx.spec, data_seed)
    lam = weight_decays(ctx.spec)[0]
    opt = _optimum_of(ctx.stage_outputs(0), data_seed, lam)
    width, start, stop = (int(ctx.payload[k]) for k in ("width", "start", "stop"))
    support = (
        _bits(opt["support"]["patterns"], X.shape[0]),
        np.asarray(opt["support"]["signs"], dtype=np.int8),
    )
    sampling = ctx.spec["sampling"]
    # every sampling needs them for the birth test of spurious cones (bounded by max_patterns,
    # as the optimum enumerated them too)
    every = _patterns_of(ctx.spec, data_seed)
    try:
        records = census.certify_samples(
            X,
            y,
            lam,
            optimum=float(opt["optimum"]),
            support=support,
            width=width,
            samples=range(start, stop),
            seed=int(ctx.spec["seed"]),
            sampling=sampling,
            **_tolerances(ctx.spec),
            patterns=every,
            num_signed_cones=int(opt["num_signed_cones"]),
            on_progress=ctx.progress,
        )
    except census.CensusCancelled as exc:
        raise Stopped from exc
    named = {} if data_seed is None else {"data_seed": int(data_seed)}
    cones = [_cone_row(r.as_dict(), named) for r in records]
    output = {"width": width, **census.tally(records)}  # census.roll_up adds them up
    return Outcome(output={**output, **named}, cones=cones)


def _cone_row(rec: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    """A cone's row; ``named``: its data seed when the census sweeps them, kept in detail."""
    keys = ("width", "sample", "verdict", "value", "gap", "covered", "method")
    detail = {k: v for k, v in rec.items() if k not in keys}
    return {**{k: rec[k] for k in keys}, "detail": {**detail, **named}}


def run_seed(experiment_seed: int, width: int, seed_index: int) -> int:
    """The RNG seed of one run: shared across init scales, so scales are compared paired."""
    state = np.random.SeedSequence([experiment_seed, width, seed_index]).generate_state(1)
    return int(state[0])


def training_job(ctx: Context) -> Outcome:
    """Train runs [start, stop) of the grid as one batch and judge each (SCIENCE.md section 6).

    The runs share one (data seed, weight decay, lr) cell (``service.specs.training_grid``).
    """
    from workers.landscape import training
    from workers.landscape.training import verdicts

    spec = ctx.spec
    start, stop = ctx.payload["runs"]
    grid = training_grid(spec)[start:stop]
    data_seed, lam, lr = _cell(spec, grid)
    X, y = _dataset(spec, data_seed)
    best = _optimum_of(ctx.stage_outputs(0), data_seed, lam)
    optimum = float(best["optimum"])
    runs = [
        training.RunSpec(p["width"], p["init_scale"], run_seed(spec["seed"], p["width"], p["seed"]))
        for p in grid
    ]
    state, seq, stored = _resumed(ctx)
    resumed_from = state.global_epoch if state is not None else 0
    opt = spec["optimizer"]
    interval = get_settings().checkpoint_interval
    saved_at = time.monotonic()
    live = LiveRuns(ctx, start, stop, optimum, seq, stored)

    def checkpoint(sweep_state: Any, done: int, total: int) -> bool:
        """Called every STOP_CHECK_INTERVAL with the runs done; reports the epochs done,
        and saves the checkpoint with the curve points since the last one every
        `interval` (also at the first call, so that the runs are readable within a
        second), and before stopping (a cancelled sweep keeps its curves up to the
        cancel, in runs.curve; one handed back keeps them as chunks for the next worker)."""
        nonlocal saved_at
        going = ctx.progress(sweep_state.epochs_done(spec["max_epochs"]))
        if done == total:  # finished: store the outcome unless cancelled
            if going or ctx.shutting_down():
                return True
            live.save(sweep_state, final=True)
            return False
        if going and time.monotonic() - saved_at < interval and live.started:
            return True
        saved_at = time.monotonic()
        live.save(sweep_state, final=not going and not ctx.shutting_down())
        return going  # a lost lease, found by the save, stops the job at the next check

    try:
        outcomes = training.train_sweep(
            X,
            y,
            lam,
            runs,
            optimizer=opt["name"],
            lr=lr,
            batch_size=opt["batch_size"],
            max_epochs=spec["max_epochs"],
            grad_tol=spec["grad_tol"],
            log_growth=spec["log_growth"],
            optimum=optimum,
            device=training.resolve_device(spec["device"], allow_cuda=ctx.queue == "gpu"),
            state=state,
            checkpoint_every=min(STOP_CHECK_INTERVAL, interval),
            on_checkpoint=checkpoint,
            stop_on_collapse=True,
        )
    except training.SweepCancelled as exc:
        raise Stopped from exc
    judge = verdicts.VerdictJudge(
        X,
        y,
        lam,
        optimum=optimum,
        **_tolerances(spec),
        patterns=_patterns_of(spec, data_seed),
    )
    after = After.of(spec, data_seed, best, X.shape[1])
    updates = [_run_update(start + i, out, judge, after) for i, out in enumerate(outcomes)]
    return Outcome(output={"runs": [start, stop], "resumed_from": resumed_from}, runs=updates)


def _resumed(ctx: Context) -> tuple[Any, int, int]:
    """The state to resume from (None: a fresh start), its curve points put back from the
    stored chunks, the seq of the next chunk and the points the chunks hold."""
    from service.curve_chunks import decode_points
    from workers.landscape import training

    if not ctx.checkpoint:
        return None, 0, 0
    state = training.SweepState.from_bytes(ctx.checkpoint)
    if state.num_points:  # an older checkpoint holds its history itself: none is stored
        return state, 0, 0
    seq, blobs = ctx.stored_points()
    state = state.with_points(*decode_points(blobs))
    return state, seq, state.num_points


class LiveRuns:
    """Saves a batch's checkpoint while it trains, with the curve points recorded since
    the last save (as chunks) and the latest points of the runs that have new ones; when
    the batch stops for good (cancelled, its experiment failed), the runs' whole curves
    too, so that they read as before in exports and figures."""

    def __init__(
        self, ctx: Context, start: int, stop: int, optimum: float, seq: int, stored: int
    ) -> None:
        self.ctx, self.start, self.stop, self.optimum = ctx, start, stop, optimum
        self.seq = seq  # the next chunk's
        self.stored = stored  # curve points stored so far
        self.started = False  # whether a save was tried
        _warm_curve_encoder()

    def save(self, state: Any, *, final: bool = False) -> bool:
        """Save the checkpoint and the new points; whether they were stored."""
        from service.curve_chunks import chunks
        from service.curves import encode_curve
        from workers.landscape.training.curves import assemble_curves

        self.started = True
        runs, epochs, stats = state.points(self.stored)
        new = chunks(
            (runs, epochs, stats),
            start=self.start,
            stop=self.stop,
            optimum=self.optimum,
            seq=self.seq,
        )
        if final:  # whole curves, and their last points
            runs_all, epochs_all, stats_all = state.points()
            curves = assemble_curves(
                runs_all, epochs_all, stats_all, len(state.status), self.optimum
            )
            updates = [
                {"index": self.start + i, "curve": encode_curve(c), "latest": latest_point(c)}
                for i, c in enumerate(curves)
            ]
        else:
            updates = _latest_of(runs, epochs, stats, self.start, self.optimum)
        saved = self.ctx.save_live(
            checkpoint=state.to_bytes(history=False), chunks=new, updates=updates
        )
        if saved:
            self.stored, self.seq = state.num_points, self.seq + 1
        return saved


def _latest_of(
    runs: np.ndarray, epochs: np.ndarray, stats: np.ndarray, start: int, optimum: float
) -> list[dict[str, Any]]:
    """Run updates giving the latest point (as ``latest_point``) of each run with points."""
    order = np.lexsort((epochs, runs))
    runs, epochs, stats = runs[order], epochs[order], stats[order]
    last = np.flatnonzero(np.append(runs[1:] != runs[:-1], runs.size > 0))
    return [
        {
            "index": start + int(runs[k]),
            "latest": {
                "epoch": int(epochs[k]),
                "loss": _num(stats[k, 1]),
                "gap": _num(stats[k, 1] - optimum),
                "grad_norm_sq": _num(stats[k, 2]),
            },
        }
        for k in last
    ]


@functools.cache
def _warm_curve_encoder() -> None:
    """Encode an empty curve once per process before training starts: the first encoding
    loads Arrow's zstd codec (seconds on a busy machine), which would otherwise delay the
    first checkpoint, or the stop after a cancel."""
    from service.curves import FIELDS, encode_curve

    encode_curve({name: [] for name in FIELDS})


def latest_point(curve: dict[str, Any]) -> dict[str, Any] | None:
    """A curve's last point as a run's ``latest``: epoch, loss (the regularised loss),
    gap and grad_norm_sq; None for an empty curve."""
    if not len(curve["epoch"]):
        return None
    return {
        "epoch": int(curve["epoch"][-1]),
        "loss": _num(curve["reg_loss"][-1]),
        "gap": _num(curve["gap"][-1]),
        "grad_norm_sq": _num(curve["grad_norm_sq"][-1]),
    }


@dataclass(frozen=True)
class After:
    """What a trained network is compared with: the optimal network (for norm_ratio) and,
    for teacher data with ``test_points``, fresh points of the same teacher (test_mse)."""

    W_opt: np.ndarray
    a_opt: np.ndarray
    test: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def of(cls, spec: dict[str, Any], data_seed: int | None, best: dict[str, Any], d: int) -> After:
        from workers.landscape.geometry import datasets

        neurons = best.get("neurons") or []
        W = np.array([k["w"] for k in neurons], dtype=np.float64).reshape(len(neurons), d)
        a = np.array([k["a"] for k in neurons], dtype=np.float64)
        ds, count = realise(spec["dataset"], data_seed), int(spec.get("test_points") or 0)
        test = None
        if count and ds.get("generator") == "teacher":
            test = datasets.teacher_test_points(
                ds["n"], ds["d"], ds.get("teacher_width", 10), ds.get("seed", 0), n_test=count
            )
        return cls(W, a, test)


def _cell(spec: dict[str, Any], grid: list[dict[str, Any]]) -> tuple[int | None, float, float]:
    """The (data seed, weight decay, lr) that a batch's runs share (the spec's own values
    where it does not sweep them)."""
    cells = {
        (
            p.get("data_seed", realisations(spec.get("data_seeds"))[0]),
            float(p.get("weight_decay", weight_decays(spec)[0])),
            float(p.get("lr", lrs(spec)[0])),
        )
        for p in grid
    }
    if len(cells) != 1:
        raise ValueError(f"a training batch spans {len(cells)} (data seed, λ, lr) cells")
    return cells.pop()


def _run_update(index: int, out: Any, judge: Any, after: After | None = None) -> dict[str, Any]:
    from service.curves import encode_curve
    from workers.landscape.training import after as training_after

    verdict = judge.judge(out.status, out.reg_loss, out.W, out.a)
    final = {
        "epoch": int(out.epoch),
        "mse": _num(out.mse),
        "reg_loss": _num(out.reg_loss),
        "grad_norm_sq": _num(out.grad_norm_sq),
        "gap": _num(out.gap),
        "num_neurons": int(out.num_neurons),
        "cone_value": verdict.cone_value,
        "cone_global": verdict.cone_global,
        "projected_verdict": verdict.projected_verdict,
        "birth_margin": verdict.birth_margin,
        "strict": verdict.strict,
        "stop": out.status,  # converged | not_converged | diverged | collapsed
        "sharpness_init": _num(out.sharpness_init),
        "lr_warning": out.lr_warning,
        "norm_ratio": None,
        "test_mse": None,
    }
    if after is not None and np.isfinite(out.reg_loss):
        final["norm_ratio"] = _num(
            training_after.norm_ratio(out.W, out.a, after.W_opt, after.a_opt)
        )
        if after.test is not None:
            final["test_mse"] = _num(training_after.held_out_mse(out.W, out.a, *after.test))
    return {
        "index": index,
        "status": "done",
        "verdict": verdict.verdict,
        "final": final,
        "curve": encode_curve(out.curve),
        "latest": latest_point(out.curve),
    }


def _num(x: float) -> float | None:
    """JSON has no NaN or infinity: a diverged run reports null."""
    return float(x) if np.isfinite(x) else None


JOBS: dict[str, Callable[[Context], Outcome]] = {
    "optimum": optimum_job,
    "census_chunk": census_chunk_job,
    "training_batch": training_job,
}


def run(task: str, ctx: Context) -> Outcome:
    """Run the job named `task`."""
    return JOBS[task](ctx)


def finalize(
    kind: str,
    spec: dict[str, Any],
    outputs: dict[int, list[dict[str, Any]]],
    runs: Sequence[Run],
) -> Outcome:
    """The experiment's result from its items' outputs and its run rows (fan-in), with
    final run updates. A training result's groups tally `runs` in memory; the worker's
    fan-in uses ``finalize_training`` with the database's tallies instead."""
    tallies = tally_runs(spec, runs) if kind == "training" else None
    result = _result(kind, spec, outputs, tallies)
    if kind != "census":
        return Outcome(output=result)
    by_width = {row["width"]: row for row in result["rows"]}
    updates = [
        {"index": r.index, "status": "done", "final": by_width[r.params["width"]]} for r in runs
    ]
    return Outcome(output=result, runs=updates)


def finalize_training(
    spec: dict[str, Any],
    outputs: dict[int, list[dict[str, Any]]],
    tallies: dict[int, dict[str, int]],
) -> Outcome:
    """A training experiment's result from its items' outputs and the tallies of its runs
    per group (``crud_work.run_tallies``: counted by the database, no run row loaded)."""
    return Outcome(output=_result("training", spec, outputs, tallies))


def _result(
    kind: str,
    spec: dict[str, Any],
    outputs: dict[int, list[dict[str, Any]]],
    tallies: dict[int, dict[str, int]] | None,
) -> dict[str, Any]:
    """The result; with data seeds or weight decays swept, ``optimum`` and the other head
    fields are the first realisation's (first data seed, first λ) and ``optima`` lists all."""
    if kind == "optimum":
        return {k: v for k, v in outputs[0][0].items() if k != "support"}
    optima = _optima(spec, outputs[0])
    opt = optima[0][1]
    head: dict[str, Any] = {
        "optimum": opt["optimum"],
        "num_patterns": opt["num_patterns"],
        "num_signed_cones": opt["num_signed_cones"],
        "theory_bound": opt["theory_bound"],
    }
    flags = swept(spec)
    if flags["data_seed"] or flags["weight_decay"]:
        head["optima"] = [
            {**cell, **{k: o[k] for k in ("optimum", "num_patterns", "num_signed_cones")}}
            for cell, o in optima
        ]
    if kind == "census":
        from workers.landscape import census

        rows = _census_rows(spec, outputs[1], optima)
        return {**head, "rows": rows, "threshold": census.thresholds(rows)}
    if kind == "training":
        extra = {"optima": head["optima"]} if "optima" in head else {}
        groups = training_groups_of(spec, tallies or {})
        return {"optimum": opt["optimum"], **extra, "groups": groups}
    raise ValueError(f"no finalizer for kind {kind!r}")


def _optima(
    spec: dict[str, Any], outputs: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(the swept fields of a (data seed, λ) pair, its optimum output), in the spec's order."""
    flags = swept(spec)
    found = []
    for data_seed in realisations(spec.get("data_seeds")):
        for lam in weight_decays(spec):
            cell = {"data_seed": data_seed, "weight_decay": lam}
            named = {k: v for k, v in cell.items() if flags[k]}
            found.append((named, _optimum_of(outputs, data_seed, lam)))
    return found


def _census_rows(
    spec: dict[str, Any],
    chunks: list[dict[str, Any]],
    optima: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),
) -> list[dict[str, Any]]:
    """One row per width, pooling every realisation's samples (``census.roll_up`` of the
    chunks' tallies); with data_seeds, each row adds ``by_data_seed``: the same fields per
    realisation, with its data seed and optimum."""
    from workers.landscape.census import roll_up

    rows = []
    for width in spec["widths"]:
        mine = [c for c in chunks if c["width"] == width]
        row = {"width": width, **roll_up(mine)}
        if spec.get("data_seeds") and optima:
            row["by_data_seed"] = [
                {
                    "data_seed": cell["data_seed"],
                    "optimum": opt["optimum"],
                    **roll_up([c for c in mine if c.get("data_seed") == cell["data_seed"]]),
                }
                for cell, opt in optima
            ]
        rows.append(row)
    return rows


def _intervals(counts: dict[str, int | None], total: int) -> dict[str, list[float] | None]:
    """Wilson 95% intervals of the shares counts / total, as <share>_ci (census.intervals)."""
    from workers.landscape import census

    return census.intervals(counts, total)


_SHARES = {
    "p_global": "global_minimum",
    "p_spurious": "spurious_local_minimum",
    "p_saddle": "saddle_point",
    "p_not_converged": "not_converged",
    "p_diverged": "diverged",
    "p_collapsed": "collapsed",
}


#: The run verdicts that groups give shares of.
RUN_VERDICTS = tuple(_SHARES.values())
#: The tallies of a group of runs: run count, each of RUN_VERDICTS, and cone_global.
TALLIES = ("runs", *RUN_VERDICTS, "cone_global")


def _group_fields(spec: dict[str, Any]) -> list[tuple[dict[str, Any], tuple[Any, ...]]]:
    """Each group's fields (width, init_scale, and the data seed, weight decay and lr where
    the spec sweeps them) and its key in run params, in grid order: group b is the b-th
    block of ``seeds`` consecutive runs of ``service.specs.training_grid``."""
    flags = swept(spec)
    axes = {
        "data_seed": realisations(spec.get("data_seeds")),
        "weight_decay": weight_decays(spec) if flags["weight_decay"] else [None],
        "lr": lrs(spec) if flags["lr"] else [None],
    }
    names = [k for k, on in flags.items() if on]
    out = []
    for cell in itertools.product(*(axes[k] for k in names)):
        named = dict(zip(names, cell, strict=True))
        for width in spec["widths"]:
            for scale in spec["init_scales"]:
                fields = {"width": width, "init_scale": scale, **named}
                out.append((fields, (*cell, width, scale)))
    return out


def tally_runs(spec: dict[str, Any], runs: Sequence[Run]) -> dict[int, dict[str, int]]:
    """The TALLIES of runs in memory per block of ``seeds`` consecutive run indices, as
    ``crud_work.run_tallies`` counts them in the database (for callers that hold the runs)."""
    block = int(spec["seeds"])
    tallies: dict[int, dict[str, int]] = {}
    for r in runs:
        tally = tallies.setdefault(r.index // block, dict.fromkeys(TALLIES, 0))
        tally["runs"] += 1
        if r.verdict in tally:
            tally[r.verdict] += 1
        tally["cone_global"] += (r.final or {}).get("cone_global") is True
    return tallies


def training_groups_of(
    spec: dict[str, Any], tallies: dict[int, dict[str, int]]
) -> list[dict[str, Any]]:
    """One group per (width, init_scale), and per data seed, weight decay and lr where the
    spec sweeps them (those fields then name the group), in grid order, from the tallies of
    each group by its number in grid order (``crud_work.run_tallies`` of blocks of ``seeds``
    runs in the database, or ``tally_runs`` of runs in memory)."""
    fields = _group_fields(spec)
    return [{**f, **_group_shares(tallies.get(b, {}))} for b, (f, _) in enumerate(fields)]


def _group_shares(tally: dict[str, int]) -> dict[str, Any]:
    """A group's run count, verdict shares, p_cone_global, and Wilson 95% intervals of
    p_global, p_spurious and p_cone_global (None for an empty group), from its TALLIES."""
    total = int(tally.get("runs", 0))
    held = int(tally.get("cone_global", 0))
    counted: dict[str, int | None] = {
        "p_global": int(tally.get(_SHARES["p_global"], 0)),
        "p_spurious": int(tally.get(_SHARES["p_spurious"], 0)),
        "p_cone_global": held,
    }
    return {
        "runs": total,
        **{k: int(tally.get(v, 0)) / max(total, 1) for k, v in _SHARES.items()},
        "p_cone_global": held / max(total, 1),
        **_intervals(counted, total),
    }
