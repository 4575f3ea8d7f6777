"""Benchmark: the straightforward full program against the service path.

For each size it times, in one run and on the same data:

- baseline: ``convex.solve_program`` over all 2P signed cones (one CVXPY +
  Clarabel program, the straightforward formulation), run in a child process
  with a time cap;
- service: ``convex.global_optimum(X, y, weight_decay)`` as the service calls
  it, i.e. pattern enumeration + method="auto" + the dual certificate over all
  signed cones.

Data: ``datasets.teacher(n, d, teacher_width=10, seed=0)``, weight_decay 0.01
(the labels have unit-scale variance, so 0.01 keeps a few dozen neurons active
and the optimum well away from the zero network, value ~0.2).

Run by hand:  .venv/bin/python bench/optimum.py [--cap 120] [--sizes 12x4,40x3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from workers.landscape import convex
from workers.landscape.geometry import datasets, network, patterns

SIZES = ((12, 4), (40, 3), (10, 10), (100, 3), (16, 16))
WEIGHT_DECAY = 0.01


def _baseline(n: int, d: int, weight_decay: float, queue) -> None:
    X, y = datasets.teacher(n, d, 10, 0)
    P = patterns.enumerate_patterns(X)
    start = time.perf_counter()
    cones = np.repeat(P, 2, axis=0)
    signs = np.tile(np.array([1, -1]), len(P))
    solution = convex.solve_program(X, y, weight_decay, cones, signs)
    queue.put((time.perf_counter() - start, solution.value))


def baseline(n: int, d: int, weight_decay: float, cap: float) -> tuple[float, float] | None:
    """(seconds, value) of the full program, or None if it ran past ``cap`` seconds."""
    if cap <= 0:
        return None
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_baseline, args=(n, d, weight_decay, queue))
    child.start()
    child.join(cap)
    if child.is_alive():
        child.terminate()
        child.join()
        return None
    return queue.get() if not queue.empty() else None


def service(n: int, d: int, weight_decay: float) -> tuple[float, float, convex.Optimum]:
    """(enumeration seconds, total seconds, optimum) of the service path."""
    X, y = datasets.teacher(n, d, 10, 0)
    start = time.perf_counter()
    patterns.enumerate_patterns(X)
    enum_seconds = time.perf_counter() - start
    start = time.perf_counter()
    optimum = convex.global_optimum(X, y, weight_decay)
    total = time.perf_counter() - start
    recovered = network.loss(X, y, optimum.W, optimum.a, weight_decay)
    assert abs(recovered - optimum.value) <= 1e-7 * optimum.value
    return enum_seconds, total, optimum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=120.0, help="baseline time cap, seconds")
    parser.add_argument("--sizes", default=",".join(f"{n}x{d}" for n, d in SIZES))
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    header = (
        f"{'n':>4} {'d':>3} {'patterns':>8} | {'baseline s':>10} {'value':>12} | "
        f"{'service s':>9} {'(enum s)':>8} {'method':>6} {'rounds':>6} {'value':>12} "
        f"{'max viol':>8} {'gap bound':>9} | {'speed-up':>8} {'rel diff':>8}"
    )
    print(f"weight_decay={args.weight_decay}, teacher data (width 10, seed 0)")
    print(header)
    for n, d in sizes:
        enum_s, total, opt = service(n, d, args.weight_decay)
        base = baseline(n, d, args.weight_decay, args.cap)
        if base is None:
            base_txt = f"{'>' + format(args.cap, '.0f'):>10} {'(capped)':>12}"
            ratio, rel = f"{'>' + format(args.cap / total, '.1f'):>8}", f"{'-':>8}"
        else:
            base_txt = f"{base[0]:10.2f} {base[1]:12.9f}"
            ratio = f"{base[0] / total:8.1f}"
            rel = f"{opt.value / base[1] - 1:8.1e}"
        print(
            f"{n:4d} {d:3d} {opt.num_patterns:8d} | {base_txt} | {total:9.2f} {enum_s:8.2f} "
            f"{opt.method:>6} {opt.iterations:6d} {opt.value:12.9f} "
            f"{opt.max_dual_violation:8.1e} {opt.gap_bound:9.1e} | {ratio} {rel}",
            flush=True,
        )


if __name__ == "__main__":
    main()
