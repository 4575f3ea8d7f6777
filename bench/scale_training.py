"""A 16,384-run training sweep through the service on CPU: wall time, peak worker memory,
checkpoint size and fan-in time, and the fan-in of the old Python path against the SQL one
on the same stored runs, in one run.

The sweep (teacher data n=d=4, width 100, 8 init scales x 2048 seeds, one λ and lr) is one
(data seed, λ, lr) cell, trained as a single batch of 16,384 runs (TRAINING_BATCH_RUNS)
by one worker process, on the embedded defaults (SQLite, filesystem broker) in a
temporary BENIGNITY_HOME; no server needed.

    .venv/bin/python bench/scale_training.py [--epochs 20000] [--seeds 2048]

The old fan-in loaded every run, curve blob included, and grouped them in Python
(``jobs.tally_runs`` over the loaded rows); the new one tallies them with one GROUP BY in the
database (``crud_work.run_tallies``, what the worker ran; its own time is in the worker's log).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCALES = [2.0**-k for k in range(8)]  # 1 down to 1/128


def spec(epochs: int, seeds: int) -> dict[str, Any]:
    return {
        "kind": "training",
        "dataset": {"generator": "teacher", "n": 4, "d": 4, "teacher_width": 3, "seed": 0},
        "weight_decay": 1e-3,
        "widths": [100],
        "init_scales": SCALES,
        "seeds": seeds,
        "optimizer": {"name": "gd", "lr": 0.05},
        "max_epochs": epochs,
        "device": "cpu",
    }


def tree_peak_rss(pid: int) -> int:
    """Largest peak resident set (VmHWM, bytes) of a process and its descendants."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        if int(entry.name) == pid or ppid == pid:
            found = re.search(r"VmHWM:\s+(\d+) kB", status)
            peak = max(peak, int(found.group(1)) * 1024 if found else 0)
    return peak


class Watcher(threading.Thread):
    """Samples the database: the largest checkpoint and curve chunks stored, and the
    worker's peak memory."""

    def __init__(self, db: Path, worker: int) -> None:
        super().__init__(daemon=True)
        self.db, self.worker = db, worker
        self.checkpoint = self.chunks = self.rss = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            self.sample()

    def sample(self) -> None:
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1) as conn:
                (size,) = conn.execute("SELECT max(length(checkpoint)) FROM work_items").fetchone()
                (chunks,) = conn.execute("SELECT sum(length(data)) FROM curve_chunks").fetchone()
        except sqlite3.Error:
            size = chunks = None
        self.checkpoint = max(self.checkpoint, int(size or 0))
        self.chunks = max(self.chunks, int(chunks or 0))
        self.rss = max(self.rss, tree_peak_rss(self.worker))


def fan_ins(experiment_id: str) -> tuple[float, float, int]:
    """Seconds of the old fan-in (every run with its curve, grouped in Python) and of the
    SQL one, on the stored runs, with the same groups; and the curve bytes the old read."""
    from sqlalchemy import select

    from service import crud_work
    from service.db import session_scope
    from service.models import Experiment, Run
    from workers import jobs

    with session_scope() as session:
        exp = session.get(Experiment, experiment_id)
        assert exp is not None
        spec, outputs = (
            exp.spec,
            {0: crud_work.stage_outputs(session, experiment_id=exp.id, stage=0)},
        )
    with session_scope() as session:  # once untimed: the imports the first call makes
        jobs.finalize_training(
            spec,
            outputs,
            crud_work.run_tallies(
                session,
                experiment_id=experiment_id,
                block=spec["seeds"],
                verdicts=jobs.RUN_VERDICTS,
            ),
        )
    with session_scope() as session:
        began = time.perf_counter()
        query = select(Run).where(Run.experiment_id == experiment_id).order_by(Run.index)
        runs = list(session.scalars(query))
        old = jobs.finalize("training", spec, outputs, runs).output
        old_s = time.perf_counter() - began
        blob_bytes = sum(len(r.curve or b"") for r in runs)
    with session_scope() as session:
        began = time.perf_counter()
        tallies = crud_work.run_tallies(
            session, experiment_id=experiment_id, block=spec["seeds"], verdicts=jobs.RUN_VERDICTS
        )
        new = jobs.finalize_training(spec, outputs, tallies).output
        new_s = time.perf_counter() - began
    assert old == new, "the two fan-ins must agree"
    return old_s, new_s, blob_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=2048, help="runs = 8 x seeds")
    args = parser.parse_args()
    body = spec(args.epochs, args.seeds)
    runs = len(SCALES) * args.seeds

    home = Path(tempfile.mkdtemp(prefix="bench-scale-training-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(BENIGNITY_HOME=str(home), TRAINING_BATCH_RUNS=str(runs), MAX_RUNS=str(runs))
    os.environ.update(env)
    from fastapi.testclient import TestClient

    from service import db, dispatch
    from service.app import create_app
    from service.migrate import upgrade

    db.reset_caches()
    dispatch.reset()
    upgrade()
    database = home / "benignity.db"
    argv = [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1"]
    log_path = home / "worker.log"
    worker = subprocess.Popen(argv, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    watch = Watcher(database, worker.pid)
    try:
        while b" ready." not in log_path.read_bytes():
            time.sleep(0.2)
        watch.start()
        with TestClient(create_app()) as api:
            resp = api.post("/v1/experiments", json=body)
            assert resp.status_code in (201, 202), resp.text
            exp = resp.json()
            start = time.perf_counter()
            while exp["status"] in ("queued", "running"):
                time.sleep(1.0)
                exp = api.get(f"/v1/experiments/{exp['id']}").json()
            wall = time.perf_counter() - start
        watch.sample()
    finally:
        watch.halt.set()
        worker.terminate()
        worker.wait(timeout=120)
    assert exp["status"] == "succeeded", exp.get("error")
    logged = re.findall(rb"fan-in of experiment \w+ took ([\d.]+) s", log_path.read_bytes())
    old_s, new_s, blobs = fan_ins(exp["id"])
    mb = 1e6
    print(
        f"training sweep: {runs} runs in one batch, width 100, teacher n=d=4, "
        f"{args.epochs} epochs, one worker process (SQLite, filesystem broker)"
    )
    print(f"wall time (submit to done)   : {wall:9.1f} s")
    print(f"peak worker memory (RSS)      : {watch.rss / mb:9.1f} MB")
    print(
        f"largest checkpoint in the DB  : {watch.checkpoint / mb:9.2f} MB "
        f"({watch.checkpoint / 2**20:.2f} MiB; state only)"
    )
    print(f"largest curve chunks in DB    : {watch.chunks / mb:9.2f} MB (the points so far)")
    print(f"fan-in in the worker (SQL)    : {', '.join(x.decode() for x in logged)} s")
    print(f"fan-in, old path (runs+curves): {old_s:9.3f} s  ({blobs / mb:.1f} MB of curve blobs)")
    print(f"fan-in, new path (GROUP BY)   : {new_s:9.3f} s")
    print(f"old / new: {old_s / new_s:.1f}x")
    groups = exp["result"]["groups"]
    shares = ("p_global", "p_spurious", "p_saddle", "p_not_converged", "p_diverged", "p_collapsed")
    print(f"groups (init_scale: {' '.join(shares)}):")
    for g in groups:
        print(f"  {g['init_scale']:<10g} " + " ".join(f"{g[k]:.3f}" for k in shares))


if __name__ == "__main__":
    main()
