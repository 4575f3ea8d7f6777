"""Benchmark: batched training sweep against a one-run-at-a-time numpy loop.

Prints run-steps per second (one GD epoch of one run = one run-step) for a
256-run sweep (width 100, n = d = 4, theorem2 data, float64 full-batch GD, a
fixed number of epochs so that no run stops early) through the service's engine
(``workers.landscape.training.train_sweep``: as the service runs it, which on the
CPU is the native C kernel; the torch.compile path it falls back to without a C
compiler, forced with BENIGNITY_TRAINING_NATIVE=0; and eager torch) and through
the plain numpy loop a researcher would write, side by side in one process, and
the ratios. Repeats alternate between the paths (the machine is shared) and the
best and median of each are shown.

    .venv/bin/python bench/training.py [--runs 256] [--epochs 2000] [--repeats 3]

The path ``job`` times the whole training batch as a worker runs it, in process
(``workers.jobs.training_job`` on the same sweep as a spec: the engine, then each run's
verdict, with a restricted solve for each run that did not converge, and its curve
encoded), which is the fair in-process figure beside ``--e2e``.

``--curve-share`` instead times the cost of the curve points at d = 200 (teacher
data, n = 50, so the native kernel; widths 20 and 400, so k = min(m, d) = 20 and
200, and width 400 again over 20,000 epochs): the same sweep with the default curve
schedule (log_growth 1.01) and with curve points only at epochs 0, 1 and the end,
alternating, on the service's engine; the difference is the curve points' share of the
sweep.

    .venv/bin/python bench/training.py --curve-share [--repeats 3]
``--e2e embedded|postgres`` also submits the same sweep (its certified optimum, verdicts,
curves and fan-in included) to a private stack and prints its run-steps per second from
submit to done beside the in-process ones (bench/e2e.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import e2e
import numpy as np
import torch

from service.specs import spec_adapter
from workers import jobs
from workers.landscape.geometry.datasets import teacher, theorem2
from workers.landscape.training import RunSpec, init_network, train_sweep

WIDTH, D, LAM, LR, ALPHA = 100, 4, 1e-4, 0.05, 1e-3


def numpy_run(X, y, W, a, epochs, grad_tol=1e-16):
    """The straightforward loop: forward, backward, grad-norm check, update."""
    n = X.shape[0]
    for _ in range(epochs):
        Z = W @ X.T  # (m, n)
        H = np.maximum(Z, 0.0)
        res = H.T @ a - y
        r = (2.0 / n) * res
        grad_a = H @ r + 2 * LAM * a
        grad_W = ((Z > 0) * np.outer(a, r)) @ X + 2 * LAM * W
        if np.sum(grad_W**2) + grad_a @ grad_a < grad_tol:
            break
        W = W - LR * grad_W
        a = a - LR * grad_a
    return W, a


def time_numpy(X, y, runs, epochs):
    t = time.perf_counter()
    for r in runs:
        numpy_run(X, y, *init_network(D, r.width, r.init_scale, r.seed), epochs)
    return len(runs) * epochs / (time.perf_counter() - t)


def time_engine(X, y, runs, epochs, compiled, native=True):
    os.environ["BENIGNITY_TRAINING_NATIVE"] = "1" if native else "0"
    t = time.perf_counter()
    out = train_sweep(X, y, LAM, runs, lr=LR, max_epochs=epochs, optimum=0.0, compiled=compiled)
    rate = len(runs) * epochs / (time.perf_counter() - t)
    os.environ.pop("BENIGNITY_TRAINING_NATIVE")
    assert all(o.status == "not_converged" and o.epoch == epochs for o in out)
    return rate


def job_timer(runs: int, epochs: int):
    """A timer of the sweep as one training batch of the worker, in process (its optimum is
    certified once, untimed)."""
    spec = spec_adapter.validate_python(e2e_spec(runs, epochs)).model_dump(mode="json")
    optimum = jobs.optimum_job(jobs.LocalContext(spec)).output
    ctx = jobs.LocalContext(spec, payload={"runs": [0, runs]}, outputs={0: [optimum]})

    def time_job() -> float:
        t = time.perf_counter()
        out = jobs.training_job(ctx)
        took = time.perf_counter() - t
        trained = [u["final"]["epoch"] for u in out.runs]
        assert len(trained) == runs and all(e == epochs for e in trained), "runs stopped early"
        return runs * epochs / took

    return time_job


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--numpy-runs", type=int, default=16, help="runs timed for numpy")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--paths",
        default="engine,engine compile,engine eager",
        help="comma-separated paths to time against numpy: engine, engine compile, engine "
        "eager, job (default: the three engine paths)",
    )
    parser.add_argument(
        "--curve-share", action="store_true", help="time the curve points at d = 200"
    )
    parser.add_argument("--e2e", choices=e2e.STACKS, help="also submit it to this private stack")
    return parser.parse_args()


def engine_against_numpy(args: argparse.Namespace) -> None:
    """The 256-run sweep on each engine path against the numpy loop, with the ratios."""
    X, y = theorem2(4, 1e-3, 0)
    runs = [RunSpec(WIDTH, ALPHA, seed) for seed in range(args.runs)]
    print(f"{args.runs} runs, width {WIDTH}, n = d = {D}, {args.epochs} epochs, float64 GD")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, native in (("native kernel", True), ("torch.compile", False)):
        if not native and "engine compile" not in args.paths.split(","):
            continue
        t = time.perf_counter()
        time_engine(X, y, runs[:8], 1000, compiled=True, native=native)
        print(f"first {name} call (build + 8 runs x 1000 epochs): {time.perf_counter() - t:.1f} s")
    every = {
        "engine": dict(compiled=True),
        "engine compile": dict(compiled=True, native=False),
        "engine eager": dict(compiled=False),
    }
    timers = {
        name: (lambda kw=every[name]: time_engine(X, y, runs, args.epochs, **kw))
        for name in args.paths.split(",")
        if name != "job"
    }
    if "job" in args.paths.split(","):
        timers["job"] = job_timer(args.runs, args.epochs)
    rates: dict[str, list[float]] = {"numpy": [], **{name: [] for name in timers}}
    for _ in range(args.repeats):
        rates["numpy"].append(time_numpy(X, y, runs[: args.numpy_runs], args.epochs))
        for name, timer in timers.items():
            rates[name].append(timer())
    print(f"{'path':<16}{'best run-steps/s':>18}{'median':>14}")
    for name, values in rates.items():
        print(f"{name:<16}{max(values):>18.4g}{statistics.median(values):>14.4g}")
    base_best, base_median = max(rates["numpy"]), statistics.median(rates["numpy"])
    for name in timers:
        best = max(rates[name]) / base_best
        median = statistics.median(rates[name]) / base_median
        print(f"ratio {name} / numpy: best {best:.1f}x, median {median:.1f}x")
    if args.e2e and timers:
        steps = args.runs * args.epochs
        spec = e2e_spec(args.runs, args.epochs)
        done = e2e.compare(
            args.e2e,
            spec,
            e2e_spec(8, 1000),
            baseline=steps / statistics.median(rates["numpy"]),
            in_process=steps / statistics.median(rates["job" if "job" in timers else "engine"]),
            work=steps,
            setup=optimum_seconds(spec, args.repeats),
            repeats=args.repeats,
        )
        (group,) = done.experiment["result"]["groups"]
        print(f"end-to-end share of runs that trained every epoch: {group['p_not_converged']}")


def optimum_seconds(spec: dict, repeats: int) -> float:
    """Median in-process seconds of the spec's certified optimum (the stage before the
    training batch, which the end-to-end time holds): counted on both sides."""
    ctx = jobs.LocalContext(spec_adapter.validate_python(spec).model_dump(mode="json"))
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        jobs.optimum_job(ctx)
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


def e2e_spec(runs: int, epochs: int) -> dict:
    """The same sweep as a spec (its run seeds are the service's own)."""
    return {
        "kind": "training",
        "dataset": {"generator": "theorem2", "d": D, "perturbation": 1e-3, "seed": 0},
        "weight_decay": LAM,
        "widths": [WIDTH],
        "init_scales": [ALPHA],
        "seeds": runs,
        "optimizer": {"name": "gd", "lr": LR},
        "max_epochs": epochs,
        "device": "cpu",
    }


def curve_share(args: argparse.Namespace) -> None:
    """Share of the curve points in a d = 200 sweep: default schedule against (almost) none.

    The schedule's points grow with log(epochs), the steps with epochs: the last row, a
    20,000-epoch sweep at width 400, shows the share falling with the sweep's length.
    """
    n, d, lr, lam = 50, 200, 1e-4, 1e-4
    X, y = teacher(n, d, 5, 0)
    print(f"d = {d}, n = {n} teacher data, float64 GD on the service's engine")
    print(f"{'width':>6}{'runs':>6}{'epochs':>8}{'points/run':>12}{'with points s':>15}"
          f"{'sparse s':>10}{'share':>8}")  # fmt: skip
    for width, runs, epochs in ((20, 16, 2000), (400, 2, 1000), (400, 2, 20000)):
        specs = [RunSpec(width, ALPHA, seed) for seed in range(runs)]
        times: dict[float, list[float]] = {1.01: [], 1e9: []}
        points = 0
        for _ in range(args.repeats if epochs <= 2000 else 1):
            for growth in times:
                t = time.perf_counter()
                out = train_sweep(
                    X, y, lam, specs, lr=lr, max_epochs=epochs, optimum=0.0, log_growth=growth
                )
                times[growth].append(time.perf_counter() - t)
                if growth == 1.01:
                    points = len(out[0].curve["epoch"])
        full, sparse = min(times[1.01]), min(times[1e9])
        print(f"{width:>6}{runs:>6}{epochs:>8}{points:>12}{full:>15.3f}{sparse:>10.3f}"
              f"{(full - sparse) / full:>8.1%}")  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.curve_share:
        curve_share(args)
    else:
        engine_against_numpy(args)


if __name__ == "__main__":
    main()
