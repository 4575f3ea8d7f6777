"""End-to-end mode of bench/census.py and bench/training.py: one experiment through a private
stack, timed from submit to done, next to the in-process figures of the same run.

Two stacks, each private and removed afterwards:

- ``embedded``: ``benignity serve`` (the API and one Celery worker) on a temporary
  BENIGNITY_HOME: SQLite and the filesystem broker;
- ``postgres``: a database of its own on the machine's PostgreSQL (dropped afterwards) and a
  redis-server of its own on a free port (never the shared Redis), with ``benignity api``
  and one ``benignity worker`` (bench/faults_stack.py), on the production defaults.

The worker runs ``--concurrency`` processes (default 1, as the in-process path uses one
core). Submit-to-done is read two ways: by the client (submit until its long-poll sees the
terminal state) and by the service (created_at to finished_at); ``timings`` shows each
stage's dispatch wait, run time and wall, and the release gap between stages; with one
worker process, a stage's wall minus its run sum is the time spent between its items
(storing one, claiming the next, the broker's hand-off).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults_stack  # noqa: E402

from service.client import Client  # noqa: E402

STACKS = ("embedded", "postgres")


@dataclass
class Finished:
    """One experiment run end to end."""

    client_seconds: float  # submit until the client saw it finished
    service_seconds: float  # created_at -> finished_at, as stored
    experiment: dict[str, Any]


class _Postgres(faults_stack.Stack):
    """bench/faults_stack.py's stack on the production defaults (no FAST heartbeats)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        super().__init__("e2e")

    def _env(self) -> dict[str, str]:
        env = super()._env()
        for key in faults_stack.FAST:
            env.pop(key, None)
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def start_worker(self) -> subprocess.Popen:
        log = self.home / f"worker-{len(self.workers)}.log"
        argv = [*faults_stack.BENIGNITY, "worker", "--queues", "cpu,gpu"]
        argv += ["--concurrency", str(self.concurrency)]
        proc = faults_stack.spawn(argv, log, self.env, self.root)
        self.workers.append(proc)
        faults_stack.wait_until("worker", lambda: b" ready." in log.read_bytes(), 120)
        return proc


@contextmanager
def stack(kind: str, concurrency: int = 1) -> Iterator[Client]:
    """A client of a private stack of `kind`, up and with its worker ready."""
    if kind == "postgres":
        pg = _Postgres(concurrency)
        try:
            pg.start_api()
            pg.start_worker()
            with Client(pg.url, token=pg.token, timeout=60) as client:
                yield client
        finally:
            pg.close()
        return
    if kind != "embedded":
        raise ValueError(f"stack must be one of {STACKS}, not {kind!r}")
    home = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    drop = ("DATABASE_URL", "BROKER_URL", "API_TOKENS", "ENVIRONMENT", "ADMIN_TENANT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(BENIGNITY_HOME=str(home), PYTHONUNBUFFERED="1", PYTHONPATH=str(faults_stack.ROOT))
    port = faults_stack.free_port()
    argv = [*faults_stack.BENIGNITY, "serve", "--port", str(port)]
    argv += ["--concurrency", str(concurrency)]
    log = home / "serve.log"
    proc = faults_stack.spawn(argv, log, env, faults_stack.ROOT)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
            if b" ready." not in log.read_bytes():
                return False
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        faults_stack.wait_until("benignity serve", up, 120)
        with Client(url, timeout=60) as client:
            yield client
    finally:
        faults_stack.stop_group(proc, grace=30)
        shutil.rmtree(home, ignore_errors=True)


def run(client: Client, spec: dict[str, Any]) -> Finished:
    """Submit `spec` and wait for it; raises unless it succeeded."""
    start = time.perf_counter()
    exp = client.submit(spec)
    exp = client.wait(exp.id, timeout=1800)
    seconds = time.perf_counter() - start
    body = client.request("GET", f"/v1/experiments/{exp.id}").json()
    if body["status"] != "succeeded":
        raise RuntimeError(f"experiment {body['status']}: {body.get('error')}")
    created, finished = (datetime.fromisoformat(body[k]) for k in ("created_at", "finished_at"))
    return Finished(seconds, (finished - created).total_seconds(), body)


def warm(client: Client, spec: dict[str, Any]) -> None:
    """One small experiment first, untimed: imports, compiled kernels, first solver calls."""
    run(client, spec)


def describe(done: Finished, in_process: float | None = None) -> str:
    """Lines on where the time went: per stage, from the experiment's ``timings``, and the
    submit-to-done time split into its parts (``breakdown``); `in_process`: the seconds of
    the last stage's work in process, to set its items' run sum against."""
    timings = done.experiment.get("timings")
    lines = [
        f"  submit to done: {done.client_seconds:.2f} s as the client saw it, "
        f"{done.service_seconds:.2f} s stored (created_at to finished_at)"
    ]
    if not timings:
        return "\n".join([*lines, "  (this service reports no timings)"])
    for st in timings["stages"]:
        wait, ran = st["wait"], st["run"]
        release = st.get("release")
        gap = "" if release is None else f", released {release:.3f} s after the last"
        idle = None if st["wall"] is None or ran["sum"] is None else st["wall"] - ran["sum"]
        lines.append(
            f"  stage {st['stage']} {st['task']}: {st['items']} items, wall {_s(st['wall'])}, "
            f"run sum {_s(ran['sum'])} max {_s(ran['max'])} (wall - run sum {_s(idle)}); "
            f"wait first {_s(wait['first'])} median {_s(wait['median'])} max {_s(wait['max'])}"
            f"{gap}"
        )
    parts = breakdown(timings)
    if parts:
        lines.append(
            "  where submit to done went: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts)
        )
        last = timings["stages"][-1]
        ran = last["run"]["sum"]
        if in_process is not None and ran is not None:
            extra = ran - in_process
            lines.append(
                f"  stage {last['stage']}'s items ran {ran:.3f} s in all against "
                f"{in_process:.3f} s in process: {extra:+.3f} s, "
                f"{1000 * extra / last['items']:+.1f} ms an item"
            )
    return "\n".join(lines)


def breakdown(timings: dict[str, Any]) -> list[tuple[str, float]]:
    """Submit to done in parts that add up to it: submit to the first item's start, then
    per stage its release and first wait (the stages after the first), its items' run sum
    and the time between its items (wall - run sum, with one worker process), and the
    last item's finish to done (the fan-in, storing the result). Empty when a time is
    missing (an experiment that has not finished)."""
    total, start = timings.get("submit_to_done"), timings.get("submit_to_start")
    if total is None or start is None:
        return []
    parts = [("submit -> first start", start)]
    for i, st in enumerate(timings["stages"]):
        wall, ran = st["wall"], st["run"]["sum"]
        if wall is None or ran is None:
            return []
        if i:
            parts.append(
                (
                    f"stage {st['stage']} release + first wait",
                    (st["release"] or 0.0) + (st["wait"]["first"] or 0.0),
                )
            )
        parts += [
            (f"stage {st['stage']} {st['task']} runs", ran),
            (f"stage {st['stage']} between items", wall - ran),
        ]
    parts.append(("last finish -> done", total - sum(v for _, v in parts)))
    return parts


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def compare(
    kind: str,
    spec: dict[str, Any],
    warmup: dict[str, Any],
    *,
    baseline: float,
    in_process: float,
    work: float = 1.0,
    concurrency: int = 1,
    setup: float = 0.0,
    repeats: int = 1,
) -> Finished:
    """Run `spec` end to end on a private `kind` stack and print its ratio next to the
    in-process one: `baseline` and `in_process` are the seconds of the same work (`work`
    units, e.g. run-steps) done by the baseline and in process; the end-to-end seconds are
    the service's (created_at to finished_at). `setup`: the in-process seconds of the
    stages before the work that the end-to-end time holds and `in_process` does not (the
    certified optimum): end to end / in process counts them on both sides. With
    `repeats`, the run of median service seconds of that many (as `in_process` may be a
    median of repeats) is the one shown and returned."""
    with stack(kind, concurrency) as client:
        warm(client, warmup)
        runs = sorted((run(client, spec) for _ in range(repeats)), key=lambda d: d.service_seconds)
    done = runs[(len(runs) - 1) // 2]
    e2e = done.service_seconds
    print(f"\nend to end on the {kind} stack ({concurrency} worker process(es)):")
    if repeats > 1:
        each = ", ".join(f"{d.service_seconds:.2f}" for d in runs)
        print(f"  median of {repeats} runs ({each} s stored); that run:")
    print(describe(done, in_process))
    print(
        f"in process: {in_process:.2f} s, {baseline / in_process:.1f}x the baseline "
        f"({work / in_process:.4g} /s)"
    )
    fair = f"{(in_process + setup) / e2e:.2f}"
    if setup:
        fair += (
            f" (the optimum on both sides: in process {in_process:.3f} + {setup:.3f} s; "
            f"without it on the in-process side {in_process / e2e:.2f})"
        )
    print(
        f"end to end: {e2e:.2f} s, {baseline / e2e:.1f}x the baseline ({work / e2e:.4g} /s; "
        f"client-seen {baseline / done.client_seconds:.1f}x); end to end / in process: {fair}"
    )
    return done
