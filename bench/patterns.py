"""Benchmark: activation-pattern enumeration against a straightforward LP baseline.

Patterns are those of generic directions (chambers), see
:mod:`workers.landscape.patterns`. The baseline builds them point by point: a
chamber of the first k + 1 points restricts to a chamber of the first k, so
for each pattern of the first k points it tries both bits for point k + 1 and
keeps those that :func:`workers.landscape.patterns.is_feasible` accepts (a
least-squares witness, else one LP), two checks per (pattern, point). It is
stopped after ``--budget`` seconds per case; then the printed ratio is a lower
bound (marked ">=").

Run by hand: ``.venv/bin/python bench/patterns.py [--budget SECONDS]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from workers.landscape.geometry.patterns import cover_count, enumerate_patterns, is_feasible

CASES = [(12, 4), (40, 3), (100, 3), (16, 16)]


def incremental_lp(X: np.ndarray, budget: float) -> tuple[np.ndarray | None, int, int]:
    """Naive incremental enumeration, one feasibility check per candidate pattern.

    Args:
        X: (n, d) float64 data.
        budget: seconds after which it gives up (<= 0: no limit).

    Returns:
        (P, n) bool patterns, or None if stopped; points finished; is_feasible calls.
    """
    start = time.perf_counter()
    patterns = np.zeros((1, 0), dtype=bool)
    lps = 0
    for k in range(X.shape[0]):
        kept = []
        for row in patterns:
            for bit in (False, True):
                candidate = np.append(row, bit)
                lps += 1
                if is_feasible(X[: k + 1], candidate):
                    kept.append(candidate)
            if 0 < budget < time.perf_counter() - start:
                return None, k, lps
        patterns = np.array(kept, dtype=bool)
    return patterns, X.shape[0], lps


def run_case(n: int, d: int, budget: float, seed: int) -> None:
    X = np.random.default_rng(seed).standard_normal((n, d))
    start = time.perf_counter()
    P = enumerate_patterns(X)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    base, done, lps = incremental_lp(X, budget)
    slow = time.perf_counter() - start
    if base is None:
        verdict, bound = f"stopped after {done}/{n} points", ">="
    else:
        same = {r.tobytes() for r in base} == {r.tobytes() for r in P}
        verdict, bound = ("same set" if same else "SETS DIFFER"), ""
    print(
        f"n={n:3d} d={d:2d}  patterns={len(P):6d} (Cover {cover_count(n, d):6d})  "
        f"enumerate={fast:8.4f}s  baseline={slow:8.2f}s ({lps} checks, {verdict})  "
        f"ratio {bound}{slow / fast:,.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="baseline seconds per case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    enumerate_patterns(np.eye(3))  # warm imports before timing
    for n, d in CASES:
        run_case(n, d, args.budget, args.seed)


if __name__ == "__main__":
    main()
