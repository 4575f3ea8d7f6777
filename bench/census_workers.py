"""Wall time of one census with one worker process against two, in one run.

The census is split into chunks of cones that any worker can take, so two
worker processes should finish it in about half the time on a 2-core machine.
Runs on the embedded defaults (SQLite, filesystem broker) in a temporary
BENIGNITY_HOME; no server needed.

    .venv/bin/python bench/census_workers.py [--samples 40]
    .venv/bin/python bench/census_workers.py --scale   # > 10^5 patterns, random_vector
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 6, "d": 10, "seed": 0},
    "weight_decay": 0.01,
    "widths": [40, 160, 640],
}


SCALE = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 70, "d": 4, "seed": 0},
    "weight_decay": 0.01,
    "sampling": "random_vector",
    "widths": [50, 200, 1000],
}


def run_census(processes: int, samples: int, spec: dict = SPEC) -> tuple[float, dict]:
    home = Path(tempfile.mkdtemp(prefix=f"bench-census-{processes}-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env["BENIGNITY_HOME"] = str(home)
    os.environ.update(env)
    from fastapi.testclient import TestClient

    from service import db, dispatch
    from service.app import create_app
    from service.migrate import upgrade

    db.reset_caches()
    dispatch.reset()
    upgrade()
    argv = [sys.executable, "-m", "service.cli", "worker", "--concurrency", str(processes)]
    log = (home / "worker.log").open("wb")
    worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while b" ready." not in (home / "worker.log").read_bytes():
            time.sleep(0.2)
        with TestClient(create_app()) as api:
            exp = api.post("/v1/experiments", json={**spec, "samples_per_width": samples}).json()
            start = time.perf_counter()
            while exp["status"] in ("queued", "running"):
                time.sleep(0.1)
                exp = api.get(f"/v1/experiments/{exp['id']}").json()
            return time.perf_counter() - start, exp
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--scale", action="store_true", help="the > 10^5-pattern census")
    args = parser.parse_args()
    if args.scale:
        seconds, exp = run_census(2, args.samples, SCALE)
        res = exp["result"]
        print(
            f"teacher n=70 d=4: {res['num_patterns']} patterns, {res['num_signed_cones']} "
            f"signed cones, random_vector sampling, {exp['progress']['total']} cones"
        )
        print(f"status {exp['status']}, wall time {seconds:.1f} s with 2 worker processes")
        for row in res["rows"]:
            print(
                f"  width {row['width']:5d}: p_global {row['p_global']:.2f} "
                f"p_spurious {row['p_spurious']:.2f} p_covered {row['p_covered']:.5f}"
            )
        return
    one, exp1 = run_census(1, args.samples)
    two, exp2 = run_census(2, args.samples)
    assert exp1["status"] == exp2["status"] == "succeeded", (exp1["error"], exp2["error"])
    assert exp1["result"]["rows"] == exp2["result"]["rows"], "results must not depend on workers"
    cones = exp1["progress"]["total"]
    print(f"census teacher n=6 d=10, widths {SPEC['widths']}, {cones} cones (identical rows)")
    print(f"1 worker process : {one:7.1f} s  ({cones / one:6.1f} cones/s)")
    print(f"2 worker processes: {two:7.1f} s  ({cones / two:6.1f} cones/s)")
    print(f"speed-up: {one / two:.2f}x")


if __name__ == "__main__":
    main()
