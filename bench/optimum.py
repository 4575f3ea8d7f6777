"""Benchmark: the straightforward full program against the service path.

For each size it times, in one run and on the same data:

- baseline: ``convex.solve_program`` over all 2P signed cones (one CVXPY +
  Clarabel program, the straightforward formulation), run in a child process
  with a time cap;
- service: ``convex.global_optimum(X, y, weight_decay)`` as the service calls
  it, i.e. pattern enumeration + method="auto" + the dual certificate over all
  signed cones.

For the large sizes (``--large``, default 1000x3 and 200x4: about 10^6 and 2.6 * 10^6
patterns) the full program cannot be built, so the baseline there is the previous code
path: ``global_optimum`` of commit ``--before`` (default d4becce, before issue 12's scale
work), exported with ``git archive`` and run in a child process with the same time cap.
The service path at those sizes also runs in a child process, so that its peak resident
memory (``ru_maxrss``) is its own; the table adds the number of rounds and the iteration
count, and the memory.

Data: ``datasets.teacher(n, d, teacher_width=10, seed=0)``, weight_decay 0.01
(the labels have unit-scale variance, so 0.01 keeps a few dozen neurons active
and the optimum well away from the zero network, value ~0.2).

Run by hand:  .venv/bin/python bench/optimum.py [--cap 120] [--sizes 12x4,40x3]
              [--large 1000x3,200x4] [--large-cap 600] [--before d4becce]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from workers.landscape import convex
from workers.landscape.geometry import datasets, network, patterns

SIZES = ((12, 4), (40, 3), (10, 10), (100, 3), (16, 16))
LARGE = ((1000, 3), (200, 4))
BEFORE = "d4becce"
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


def _large_child(n: int, d: int, weight_decay: float, queue) -> None:
    X, y = datasets.teacher(n, d, 10, 0)
    start, cpu = time.perf_counter(), time.process_time()
    found = patterns.enumerate_packed(X)
    enum_seconds = time.perf_counter() - start
    opt = convex.global_optimum(X, y, weight_decay, patterns=found)
    total = time.perf_counter() - start
    recovered = network.loss(X, y, opt.W, opt.a, weight_decay)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    queue.put((enum_seconds, total, time.process_time() - cpu, rss, recovered, opt))


def _before_code(root: str, n: int, d: int, weight_decay: float) -> str:
    """Python source that times ``global_optimum`` of the tree at ``root`` alone: it must not
    import this module, which would load the working tree's ``workers`` first."""
    return (
        f"import sys, time; sys.path.insert(0, {root!r})\n"
        "from workers.landscape import convex\n"
        "try:\n"
        "    from workers.landscape.geometry import datasets\n"
        "except ImportError:  # before the subpackages\n"
        "    from workers.landscape import datasets\n"
        "assert convex.__file__.startswith(" + repr(root) + "), convex.__file__\n"
        f"X, y = datasets.teacher({n}, {d}, 10, 0)\n"
        "start = time.perf_counter()\n"
        f"opt = convex.global_optimum(X, y, {weight_decay!r})\n"
        "print(time.perf_counter() - start, repr(opt.value), flush=True)\n"
    )


def before(commit: str, n: int, d: int, weight_decay: float, cap: float):
    """(seconds, value) of ``global_optimum`` at ``commit``, or None past ``cap`` seconds."""
    if cap <= 0:
        return None
    with tempfile.TemporaryDirectory() as root:
        archive = subprocess.run(["git", "archive", commit, "workers"], capture_output=True)
        if archive.returncode:
            raise SystemExit(f"git archive {commit} failed: {archive.stderr.decode()}")
        subprocess.run(["tar", "-x", "-C", root], input=archive.stdout, check=True)
        code = _before_code(root, n, d, weight_decay)
        env = {**os.environ, "PYTHONPATH": root}
        try:
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, timeout=cap, env=env
            )
        except subprocess.TimeoutExpired:
            return None
    seconds, value = out.stdout.decode().split()[-2:]
    return float(seconds), float(value)


def large(sizes, weight_decay: float, cap: float, commit: str) -> None:
    """The large sizes: the service path in a child (time, memory) against ``commit``."""
    print(f"large sizes: baseline = global_optimum at {commit}, capped at {cap:.0f} s")
    print(
        f"{'n':>4} {'d':>3} {'patterns':>9} | {'before s':>9} | {'service s':>9} "
        f"{'(enum s)':>8} {'cpu s':>6} {'rounds':>6} {'peak MiB':>8} {'value':>12} {'max viol':>8} "
        f"{'gap bound':>9} | {'speed-up':>8} {'rel diff':>8}"
    )
    ctx = mp.get_context("spawn")
    for n, d in sizes:
        queue = ctx.Queue()
        child = ctx.Process(target=_large_child, args=(n, d, weight_decay, queue))
        child.start()
        enum_s, total, cpu, rss, recovered, opt = queue.get()
        child.join()
        assert abs(recovered - opt.value) <= 1e-7 * opt.value
        base = before(commit, n, d, weight_decay, cap)
        if base is None:
            base_txt, ratio, rel = f"{'>' + format(cap, '.0f'):>9}", f">{cap / total:7.1f}", "-"
        else:
            base_txt, ratio = f"{base[0]:9.1f}", f"{base[0] / total:8.1f}"
            rel = f"{opt.value / base[1] - 1:8.1e}"
        print(
            f"{n:4d} {d:3d} {opt.num_patterns:9d} | {base_txt} | {total:9.1f} {enum_s:8.1f} "
            f"{cpu:6.1f} {opt.iterations:6d} {rss:8.0f} {opt.value:12.9f} "
            f"{opt.max_dual_violation:8.1e} {opt.gap_bound:9.1e} | {ratio:>8} {rel:>8}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=120.0, help="baseline time cap, seconds")
    parser.add_argument("--sizes", default=",".join(f"{n}x{d}" for n, d in SIZES))
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    parser.add_argument("--large", default=",".join(f"{n}x{d}" for n, d in LARGE))
    parser.add_argument("--large-cap", type=float, default=600.0, help="seconds, large sizes")
    parser.add_argument("--before", default=BEFORE, help="commit of the large-size baseline")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    big = [tuple(int(v) for v in s.split("x")) for s in args.large.split(",") if s]
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
    if big:
        large(big, args.weight_decay, args.large_cap, args.before)


if __name__ == "__main__":
    main()
