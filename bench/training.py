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

from workers.landscape.geometry.datasets import theorem2
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--numpy-runs", type=int, default=16, help="runs timed for numpy")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--e2e", choices=e2e.STACKS, help="also submit it to this private stack")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    X, y = theorem2(4, 1e-3, 0)
    runs = [RunSpec(WIDTH, ALPHA, seed) for seed in range(args.runs)]
    print(f"{args.runs} runs, width {WIDTH}, n = d = {D}, {args.epochs} epochs, float64 GD")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, native in (("native kernel", True), ("torch.compile", False)):
        t = time.perf_counter()
        time_engine(X, y, runs[:8], 1000, compiled=True, native=native)
        print(f"first {name} call (build + 8 runs x 1000 epochs): {time.perf_counter() - t:.1f} s")
    paths = {
        "engine": dict(compiled=True),
        "engine compile": dict(compiled=True, native=False),
        "engine eager": dict(compiled=False),
    }
    rates: dict[str, list[float]] = {"numpy": [], **{name: [] for name in paths}}
    for _ in range(args.repeats):
        rates["numpy"].append(time_numpy(X, y, runs[: args.numpy_runs], args.epochs))
        for name, kwargs in paths.items():
            rates[name].append(time_engine(X, y, runs, args.epochs, **kwargs))
    print(f"{'path':<16}{'best run-steps/s':>18}{'median':>14}")
    for name, values in rates.items():
        print(f"{name:<16}{max(values):>18.4g}{statistics.median(values):>14.4g}")
    base_best, base_median = max(rates["numpy"]), statistics.median(rates["numpy"])
    for name in paths:
        best = max(rates[name]) / base_best
        median = statistics.median(rates[name]) / base_median
        print(f"ratio {name} / numpy: best {best:.1f}x, median {median:.1f}x")
    if args.e2e:
        steps = args.runs * args.epochs
        done = e2e.compare(
            args.e2e,
            e2e_spec(args.runs, args.epochs),
            e2e_spec(8, 1000),
            baseline=steps / statistics.median(rates["numpy"]),
            in_process=steps / statistics.median(rates["engine"]),
            work=steps,
        )
        (group,) = done.experiment["result"]["groups"]
        print(f"end-to-end share of runs that trained every epoch: {group['p_not_converged']}")


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


if __name__ == "__main__":
    main()
