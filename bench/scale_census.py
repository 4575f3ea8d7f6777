"""A census at scale, in process: teacher n=70, d=4 (109,620 patterns), widths 200 and 1000.

The service path is what a census worker runs: ``convex.global_optimum`` (pattern
enumeration and the certified optimum, once), then ``census.certify_samples`` per width
(``random_vector`` sampling, as ``bench/census_workers.py --scale``). It prints cones per
second and the share of each step of ``census.STAGES`` (``certify_samples(timings=...)``:
``time.perf_counter`` accumulators, no profiler).

The baseline is the straightforward per-cone path of ``bench/census.py``: for a subsample
of the same cones (the first ``--baseline`` samples of each width), ``convex.solve_program``
(CVXPY build + Clarabel) and the same ``census.classify``. It is timed per cone and
extrapolated to the whole census (seconds per cone of each width times its cones); its
verdicts are compared with the service path's on those cones.

Run: ``.venv/bin/python bench/scale_census.py [--samples 500] [--baseline 3]``
"""

from __future__ import annotations

import argparse
import time

from census import baseline as per_cone  # bench/census.py, next to this script
from census import service as census_service

from workers.landscape import census, convex
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import enumerate_patterns

N, D, TEACHER_WIDTH, LAMBDA = 70, 4, 10, 0.01
WIDTHS = (200, 1000)


def service(X, y, optimum, patterns, width: int, samples: int, timings: dict) -> list:
    """The census of one width, as ``bench/census.py`` runs it, random_vector sampling."""
    return census_service(
        X, y, LAMBDA, optimum, patterns, samples,
        widths=(width,), sampling="random_vector", timings=timings,
    )  # fmt: skip


def baseline(X, y, optimum, records: list) -> tuple[list[str], float]:
    """Verdicts of the per-cone CVXPY path (``bench/census.py``) on the records' cones, and
    its seconds."""
    start = time.perf_counter()
    verdicts = per_cone(X, y, LAMBDA, optimum, records)
    return verdicts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="cones per width")
    parser.add_argument("--baseline", type=int, default=3, help="baseline cones per width")
    args = parser.parse_args()
    X, y = datasets.teacher(N, D, TEACHER_WIDTH, seed=0)
    start = time.perf_counter()
    patterns = enumerate_patterns(X)
    enumerated = time.perf_counter() - start
    optimum = convex.global_optimum(X, y, LAMBDA, patterns=patterns)
    setup = time.perf_counter() - start
    print(
        f"teacher n={N} d={D} lambda={LAMBDA}: {len(patterns)} patterns, "
        f"{optimum.num_signed_cones} signed cones; enumeration {enumerated:.1f} s, "
        f"certified optimum {setup - enumerated:.1f} s (value {optimum.value:.10f}, "
        f"support {len(optimum.support_signs)})"
    )
    timings: dict[str, float] = {}
    rows = []
    for width in WIDTHS:
        start = time.perf_counter()
        records = service(X, y, optimum, patterns, width, args.samples, timings)
        seconds = time.perf_counter() - start
        sub = records[: args.baseline]
        verdicts, slow = baseline(X, y, optimum, sub)
        agree = sum(r.verdict == v for r, v in zip(sub, verdicts, strict=True))
        rows.append((width, records, seconds, slow / max(len(sub), 1), agree, len(sub)))

    print(
        f"\n{'width':>6} {'cones':>6} {'screened':>9} {'global':>7} {'spurious':>9} "
        f"{'no_min':>7} {'covered':>8} {'s/cone':>8} {'base s/cone':>12} {'agree':>6}"
    )
    total_cones, total, extrapolated = 0, 0.0, 0.0
    for width, records, seconds, per_base, agree, checked in rows:
        count = {v: sum(r.verdict == v for r in records) for v in census.VERDICTS}
        screened = sum(r.method == "screened" for r in records)
        covered = sum(r.covered for r in records) / len(records)
        print(
            f"{width:>6} {len(records):>6} {screened:>9} {count['global']:>7} "
            f"{count['spurious']:>9} {count['no_local_min']:>7} {covered:>8.2%} "
            f"{seconds / len(records):>8.4f} {per_base:>12.3f} {agree:>3}/{checked}"
        )
        total_cones += len(records)
        total += seconds
        extrapolated += per_base * len(records)
    print(
        f"\nservice path: {total_cones} cones in {total:.1f} s = "
        f"{total_cones / total:.2f} cones/s (certified optimum and enumeration "
        f"{setup:.1f} s more: {total_cones / (total + setup):.2f} cones/s)"
    )
    print(
        f"baseline (per-cone CVXPY + the same classify, {args.baseline} cones per width, "
        f"extrapolated): {extrapolated:.1f} s = {total_cones / extrapolated:.3f} cones/s"
    )
    print(
        f"ratio: {extrapolated / total:.1f}x (with the optimum: "
        f"{extrapolated / (total + setup):.1f}x)"
    )
    print("\nshare of the service path's census time per step (census.STAGES):")
    spent = sum(timings.values())
    for stage in census.STAGES:
        print(f"  {stage:<13} {timings[stage]:8.2f} s  {100 * timings[stage] / spent:5.1f} %")


if __name__ == "__main__":
    main()
