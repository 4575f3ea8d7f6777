"""A census at scale, in process: teacher n=70, d=4 (109,620 patterns), widths 200 and 1000.

The service path is what a census worker runs: ``convex.global_optimum`` (pattern
enumeration and the certified optimum, once), then ``census.certify_samples`` per width
(``random_vector`` sampling, as ``bench/census_workers.py --scale``). It prints cones per
second and the share of each step of ``census.STAGES`` (``certify_samples(timings=...)``:
``time.perf_counter`` accumulators, no profiler).

The baseline is the straightforward per-cone path of ``bench/census.py``: for a subsample
of the same cones, ``convex.solve_program`` (CVXPY build + Clarabel) and the same
``census.classify``. Each width's samples run in ``--baseline`` chunks, and after each chunk
the baseline does that chunk's first cone, so both paths see the same load. The baseline is
timed per cone and extrapolated to the whole census (seconds per cone of each width times
its cones); its verdicts are compared with the service path's on those cones. Wall and CPU
seconds are both printed (on a shared machine CPU seconds are the steadier measure).

Run: ``.venv/bin/python bench/scale_census.py [--samples 500] [--baseline 5]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from census import baseline as per_cone  # bench/census.py, next to this script
from census import service as census_service

from workers.landscape import census, convex
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import enumerate_patterns

N, D, TEACHER_WIDTH, LAMBDA = 70, 4, 10, 0.01
WIDTHS = (200, 1000)


def clock() -> np.ndarray:
    """(wall, CPU) seconds now; CPU time is the fairer measure on a loaded machine."""
    return np.array([time.perf_counter(), time.process_time()])


def service(X, y, optimum, patterns, width: int, samples: range, timings: dict) -> list:
    """The census of one width, as ``bench/census.py`` runs it, random_vector sampling."""
    return census_service(
        X, y, LAMBDA, optimum, patterns, samples,
        widths=(width,), sampling="random_vector", timings=timings,
    )  # fmt: skip


def run_width(X, y, optimum, patterns, width: int, args, timings: dict):
    """The service path on ``args.samples`` cones in ``args.baseline`` chunks, each followed
    by the baseline on its first cone (so both see the same load): records, the service's
    and the baseline's (wall, CPU) seconds, and the baseline's verdict agreement."""
    records, fast, slow, agree = [], np.zeros(2), np.zeros(2), 0
    for chunk in np.array_split(np.arange(args.samples), args.baseline):
        start = clock()
        found = service(X, y, optimum, patterns, width, range(chunk[0], chunk[-1] + 1), timings)
        middle = clock()
        verdicts = per_cone(X, y, LAMBDA, optimum, found[:1])
        fast, slow = fast + middle - start, slow + clock() - middle
        agree += verdicts[0] == found[0].verdict
        records += found
    return records, fast, slow, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="cones per width")
    parser.add_argument("--baseline", type=int, default=5, help="baseline cones per width")
    args = parser.parse_args()
    X, y = datasets.teacher(N, D, TEACHER_WIDTH, seed=0)
    start = clock()
    patterns = enumerate_patterns(X)
    enumerated = clock() - start
    optimum = convex.global_optimum(X, y, LAMBDA, patterns=patterns)
    setup = clock() - start
    print(
        f"teacher n={N} d={D} lambda={LAMBDA}: {len(patterns)} patterns, "
        f"{optimum.num_signed_cones} signed cones; enumeration {enumerated[0]:.1f} s, "
        f"certified optimum {setup[0] - enumerated[0]:.1f} s wall, {setup[1]:.1f} s CPU "
        f"(value {optimum.value:.10f}, support {len(optimum.support_signs)})"
    )
    timings: dict[str, float] = {}
    rows = [(width, *run_width(X, y, optimum, patterns, width, args, timings)) for width in WIDTHS]
    print(
        f"\n{'width':>6} {'cones':>6} {'screened':>9} {'global':>7} {'spurious':>9} "
        f"{'no_min':>7} {'covered':>8} {'s/cone':>7} {'cpu s/cone':>11} "
        f"{'base s/cone':>12} {'base cpu':>9} {'agree':>6}"
    )
    cones, fast, extrapolated = 0, np.zeros(2), np.zeros(2)
    for width, records, service_s, base_s, agree in rows:
        count = {v: sum(r.verdict == v for r in records) for v in census.VERDICTS}
        screened = sum(r.method == "screened" for r in records)
        covered = sum(r.covered for r in records) / len(records)
        per, base = service_s / len(records), base_s / args.baseline
        print(
            f"{width:>6} {len(records):>6} {screened:>9} {count['global']:>7} "
            f"{count['spurious']:>9} {count['no_local_min']:>7} {covered:>8.2%} "
            f"{per[0]:>7.3f} {per[1]:>11.3f} {base[0]:>12.3f} {base[1]:>9.3f} "
            f"{agree:>3}/{args.baseline}"
        )
        cones, fast, extrapolated = (
            cones + len(records),
            fast + service_s,
            extrapolated + base * len(records),
        )
    print(
        f"\nservice path: {cones} cones in {fast[0]:.1f} s wall ({fast[1]:.1f} s CPU) = "
        f"{cones / fast[0]:.2f} cones/s ({cones / fast[1]:.2f} per CPU s); with the "
        f"enumeration and certified optimum: {cones / (fast[0] + setup[0]):.2f} cones/s"
    )
    print(
        f"baseline (per-cone CVXPY + the same classify on {args.baseline} cones per width, "
        f"interleaved, extrapolated per cone): {extrapolated[0]:.1f} s wall "
        f"({extrapolated[1]:.1f} s CPU) = {cones / extrapolated[0]:.3f} cones/s"
    )
    ratio = extrapolated / fast
    print(f"ratio: {ratio[0]:.1f}x wall, {ratio[1]:.1f}x CPU")
    print("\nshare of the service path's census time per step (census.STAGES, wall):")
    spent = sum(timings.values())
    for stage in census.STAGES:
        print(f"  {stage:<13} {timings[stage]:8.2f} s  {100 * timings[stage] / spent:5.1f} %")


if __name__ == "__main__":
    main()
