"""Census throughput: the service path against the straightforward per-cone program.

Both paths certify the same cones (teacher n=6, d=10, weight_decay 0.01, widths 40, 160, 640):

- service: ``census.certify_samples`` (screening, direct Clarabel, classification);
- straightforward: for every cone, ``convex.solve_program`` (CVXPY build + Clarabel solve)
  followed by the same ``census.classify``.

Prints cones per second for each (median of interleaved repeats), their ratio, the ratio of
their CPU seconds (``time.process_time``: on a machine shared with other work the wall times
of single repeats scatter widely, CPU seconds less), verdict agreement, and where the service
path spends its time (cProfile, cumulative seconds per stage).

Run: ``.venv/bin/python bench/census.py [--samples 20] [--repeats 3]``

``--e2e embedded|postgres`` also runs the same census (with its certified optimum) through a
private stack from submit to done (bench/e2e.py) and prints its ratio beside the in-process
one. The end-to-end time includes the certified optimum, which the in-process census timing
leaves out: end to end / in process counts it on both sides (the optimum as the service's
optimum item computes it, patterns enumerated, timed in each repeat; median). The census
runs end to end ``--repeats`` times on one stack; the median run is compared.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import e2e

from workers.landscape import census, convex
from workers.landscape.geometry import datasets
from workers.landscape.geometry.patterns import enumerate_patterns

WIDTHS = (40, 160, 640)
#: The same census as a spec, for --e2e.
E2E_SPEC = {
    "dataset": {"generator": "teacher", "n": 6, "d": 10, "teacher_width": 3, "seed": 0},
    "weight_decay": 0.01,
    "widths": list(WIDTHS),
    "sampling": "uniform",
    "seed": 0,
}
#: label -> (file name suffix or "" for any, function name); cumulative seconds are reported.
STAGES = {
    "sampling": ("census/sampling.py", "sample_cones"),
    "dedupe + keys": ("census/sampling.py", "distinct_keyed"),
    "screening": ("census/screen.py", "holds_global"),
    "restricted solve (total)": ("convex/columns.py", "solve"),
    "  first working set": ("convex/columns.py", "_first_set"),
    "  Clarabel programs": ("convex/restricted.py", "solve"),
    "    matrix assembly": ("convex/restricted.py", "_matrices"),
    "    clarabel solve": ("", "<method 'solve' of 'builtins.DefaultSolver' objects>"),
    "  dual check (pricing)": ("convex/columns.py", "violators"),
    "classification": ("convex/classify.py", "classify"),
    "  polish": ("convex/polish.py", "polish"),
    "    its dual check": ("convex/polish.py", "dual_violator"),
    "  stationarity QP": ("stationarity.py", "clarke_stationarity"),
    "birth test (spurious)": ("stationarity.py", "birth_test"),
}


def service(X, y, lam, optimum, patterns, samples, *, widths=WIDTHS, **options):
    """``census.certify_samples`` at each width (uniform sampling unless ``options`` say)."""
    options = {"sampling": "uniform"} | options
    records = []
    for width in widths:
        records += census.certify_samples(
            X,
            y,
            lam,
            optimum=optimum.value,
            support=(optimum.support_patterns, optimum.support_signs),
            width=width,
            samples=samples if isinstance(samples, range) else range(samples),
            seed=0,
            patterns=patterns,
            num_signed_cones=optimum.num_signed_cones,
            **options,
        )
    return records


def baseline(X, y, lam, optimum, records):
    verdicts = []
    for record in records:
        solution = convex.solve_program(X, y, lam, record.patterns, record.signs)
        found = census.classify(
            X,
            y,
            lam,
            record.patterns,
            record.signs,
            solution.U,
            solution.value,
            optimum=optimum.value,
        )
        verdicts.append(found.verdict)
    return verdicts


def stage_seconds(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out = dict.fromkeys(STAGES, 0.0)
    for (filename, _, name), (_, _, _, cumulative, _) in stats.items():
        for label, (suffix, target) in STAGES.items():
            if name == target and filename.endswith(suffix):
                out[label] += cumulative
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20, help="samples per width")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    parser.add_argument("--e2e", choices=e2e.STACKS, help="also submit it to this private stack")
    args = parser.parse_args()
    lam = 0.01
    X, y = datasets.teacher(6, 10, 3, seed=0)
    optimum_start = time.perf_counter()
    patterns = enumerate_patterns(X)
    optimum = convex.global_optimum(X, y, lam, patterns=patterns)
    optimum_seconds = time.perf_counter() - optimum_start
    print(
        f"teacher n=6 d=10 lambda={lam}: {optimum.num_signed_cones} signed cones, "
        f"optimum {optimum.value:.10f}, support {len(optimum.support_signs)} signed cones"
    )

    # Interleaved repeats on the same cones (both paths are deterministic): on a shared
    # machine one run of the fast path is a fraction of a second, so a single timing is noisy.
    # Warm both paths up (first solver calls) on one sample per width, untimed.
    baseline(X, y, lam, optimum, service(X, y, lam, optimum, patterns, 1))
    fast_times, slow_times, fast_cpu, slow_cpu, optimum_times = [], [], [], [], []
    for _ in range(args.repeats):
        if args.e2e:
            start = time.perf_counter()
            convex.global_optimum(X, y, lam, patterns=enumerate_patterns(X))
            optimum_times.append(time.perf_counter() - start)
        start, cpu = time.perf_counter(), time.process_time()
        records = service(X, y, lam, optimum, patterns, args.samples)
        fast_times.append(time.perf_counter() - start)
        fast_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        verdicts = baseline(X, y, lam, optimum, records)
        slow_times.append(time.perf_counter() - start)
        slow_cpu.append(time.process_time() - cpu)

    print(f"\n{'width':>6} {'cones':>6} {'screened':>9} {'p_global':>9} {'agree':>6}")
    for width in WIDTHS:
        rows = [(r, v) for r, v in zip(records, verdicts, strict=True) if r.width == width]
        screened = sum(r.method == "screened" for r, _ in rows)
        p_global = sum(r.verdict == "global" for r, _ in rows) / len(rows)
        agree = sum(r.verdict == v for r, v in rows)
        print(f"{width:>6} {len(rows):>6} {screened:>9} {p_global:>9.2f} {agree:>4}/{len(rows)}")
    count = len(records)
    fast, slow = statistics.median(fast_times), statistics.median(slow_times)
    print(f"\nmedian of {args.repeats} interleaved repeats:")
    print(f"service path:    {count / fast:8.1f} cones/s  ({fast:.3f} s for {count} cones)")
    print(f"straightforward: {count / slow:8.1f} cones/s  ({slow:.3f} s for {count} cones)")
    per_repeat = [b / a for a, b in zip(fast_times, slow_times, strict=True)]
    print(
        f"ratio of medians: {slow / fast:.1f}x   median per-repeat ratio: "
        f"{statistics.median(per_repeat):.1f}x   ratio of minima: "
        f"{min(slow_times) / min(fast_times):.1f}x"
    )
    print(f"per repeat: {', '.join(f'{x:.1f}' for x in per_repeat)}")
    cpu_fast, cpu_slow = statistics.median(fast_cpu), statistics.median(slow_cpu)
    print(
        f"CPU seconds (process_time, less disturbed by other load): service {cpu_fast:.3f}, "
        f"straightforward {cpu_slow:.3f}, ratio of medians {cpu_slow / cpu_fast:.1f}x, "
        f"of minima {min(slow_cpu) / min(fast_cpu):.1f}x"
    )
    print(
        f"verdicts identical: {all(r.verdict == v for r, v in zip(records, verdicts, strict=True))}"
    )

    if args.e2e:
        spec = {"kind": "census", "samples_per_width": args.samples, **E2E_SPEC}
        small = {**spec, "samples_per_width": 1}
        setup = statistics.median(optimum_times)
        print(
            f"\ncertified optimum in process: {setup:.3f} s (median of {args.repeats}; first, "
            f"cold {optimum_seconds:.3f} s; not in the census timings above)"
        )
        done = e2e.compare(
            args.e2e,
            spec,
            small,
            baseline=slow,
            in_process=fast,
            work=count,
            setup=setup,
            repeats=args.repeats,
        )
        rows = {row["width"]: row["p_global"] for row in done.experiment["result"]["rows"]}
        mine = {row["width"]: row["p_global"] for row in census.summarize(records)}
        print(f"end-to-end rows' p_global equal the in-process ones: {rows == mine}")

    profile = cProfile.Profile()
    profile.enable()
    service(X, y, lam, optimum, patterns, args.samples)
    profile.disable()
    total = pstats.Stats(profile).total_tt  # type: ignore[attr-defined]
    print(f"\nwhere the service path spends its time (cProfile, {total:.2f} s profiled):")
    for label, seconds in stage_seconds(profile).items():
        print(f"  {label:<26} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")


if __name__ == "__main__":
    main()
