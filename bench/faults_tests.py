"""The operator's tests of bench/faults.py, one function each; every one owns its stack.

Each test returns table rows. Figures are what the operator watches (how long recovery took,
what a client saw meanwhile); `lost` counts accepted experiments that did not end, failed
without a reason, or ended with wrong results (faults_check.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from faults_check import (
    Client,
    census,
    check_results,
    finals,
    optimum,
    progress,
    training,
    wait_ended,
    wait_progress,
)
from faults_load import ceiling, pollers, submissions
from faults_stack import Stack, stop_group, wait_exits, wait_until
from sqlalchemy import text


@dataclass
class Row:
    test: str
    figure: str
    lost: int | str
    ok: bool
    notes: str = ""


@dataclass
class Ctx:
    quick: bool
    logs: Path | None
    root: Path

    def stack(self, name: str, workers: int, cluster: bool = False) -> tuple[Stack, Client]:
        stack = Stack(name, cluster=cluster, logs=self.logs, root=self.root)
        try:
            stack.start_api()
            for _ in range(workers):
                stack.start_worker()
        except BaseException:
            stack.close()
            raise
        return stack, Client(stack.url, stack.token)


def judged(test: str, figure: str, client: Client, verdict, extra: str = "") -> Row:
    check_results(client, verdict)
    notes = "; ".join(n for n in (verdict.note(), extra) if n)
    return Row(test, figure, len(verdict.lost), not verdict.lost and not verdict.failed, notes)


def mixed_work(client: Client, census_samples: int, epochs: int, optima: int) -> list[str]:
    """A census, a training sweep and small optima: ids, the census first."""
    ids = [client.submit(census(census_samples))["id"], client.submit(training(epochs))["id"]]
    return ids + [client.submit(optimum(i))["id"] for i in range(optima)]


def attempts_over_one(stack: Stack, exp_id: str) -> int:
    sql = text("SELECT count(*) FROM work_items WHERE experiment_id = :id AND attempts > 1")
    with stack.engine.connect() as conn:
        return int(conn.execute(sql, {"id": exp_id}).scalar_one())


def kill_census(ctx: Ctx) -> list[Row]:
    stack, client = ctx.stack("kill-census", workers=1)
    with stack:
        exp_id = client.submit(census(200 if ctx.quick else 400))["id"]
        wait_progress(stack.engine, exp_id)
        done, total, _ = progress(stack.engine, exp_id)
        t_kill = time.monotonic()
        stack.kill_worker(stack.workers[0])
        stack.start_worker()
        verdict = wait_ended(stack.engine, [exp_id], timeout=300)
        redone = attempts_over_one(stack, exp_id)
        figure = (
            f"killed at {done}/{total} cones; ended {time.monotonic() - t_kill:.1f} s "
            f"after the kill; {redone} chunk(s) redone"
        )
        return [judged("kill -9 worker mid-census", figure, client, verdict)]


def kill_sweep(ctx: Ctx) -> list[Row]:
    stack, client = ctx.stack("kill-sweep", workers=1)
    with stack:
        exp_id = client.submit(training())["id"]
        wait_progress(stack.engine, exp_id, checkpoint=True)
        stack.kill_worker(stack.workers[0])
        stack.start_worker()
        verdict = wait_ended(stack.engine, [exp_id], timeout=300)
        clean_id = client.submit(training())["id"]
        clean = wait_ended(stack.engine, [clean_id], timeout=300)
        verdict.lost += clean.lost
        sql = text(
            "SELECT output->>'resumed_from' FROM work_items "
            "WHERE experiment_id = :id AND task = 'training_batch'"
        )
        with stack.engine.connect() as conn:
            resumed = conn.execute(sql, {"id": exp_id}).scalar()
        same = not verdict.lost and finals(client, exp_id) == finals(client, clean_id)
        if not same and not verdict.lost:
            verdict.lost.append(f"{exp_id[:8]} finals differ from an uninterrupted run")
        figure = (
            f"resumed from epoch {resumed} of 3e6; 4 run finals {'equal' if same else 'DIFFER'}"
        )
        return [judged("kill -9 worker mid-sweep", figure, client, verdict)]


def redis_restart(ctx: Ctx) -> list[Row]:
    stack, client = ctx.stack("redis", workers=2)
    with stack:
        ids = mixed_work(client, 200 if ctx.quick else 400, 3_000_000, 10)
        wait_progress(stack.engine, ids[0])
        assert stack.redis is not None
        stack.redis.stop()
        codes = []
        for i in range(3):  # submissions while the broker is away
            try:
                ids.append(client.submit(optimum(100 + i))["id"])
                codes.append("accepted")
            except Exception as exc:  # noqa: BLE001
                codes.append(str(exc)[:60])
        time.sleep(2)
        stack.redis.start()
        t_up = time.monotonic()
        verdict = wait_ended(stack.engine, ids, timeout=300)
        figure = f"all {len(ids)} ended {time.monotonic() - t_up:.1f} s after the restart"
        extra = f"3 POSTs while Redis was down: {', '.join(codes)}"
        return [judged("Redis restarted empty", figure, client, verdict, extra)]


def postgres_restart(ctx: Ctx) -> list[Row]:
    stack, client = ctx.stack("postgres", workers=2, cluster=True)
    outage = 20 if ctx.quick else 30
    with stack:
        cluster = stack.db
        ids = mixed_work(client, 400 if ctx.quick else 800, 6_000_000, 10)
        wait_progress(stack.engine, ids[0])
        cluster.ctl("restart")  # type: ignore[union-attr]
        time.sleep(2)
        done, total, _ = progress(stack.engine, ids[0])
        cluster.ctl("stop")  # type: ignore[union-attr]
        codes: dict[str, int] = {}
        end = time.monotonic() + outage
        while time.monotonic() < end:  # what a client sees meanwhile
            t = time.perf_counter()
            try:
                code = str(client.http.get(f"/v1/experiments/{ids[0]}").status_code)
            except Exception as exc:  # noqa: BLE001
                code = type(exc).__name__
            codes[code] = codes.get(code, 0) + 1
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))
        cluster.ctl("start")  # type: ignore[union-attr]
        t_up = time.monotonic()
        verdict = wait_ended(stack.engine, ids, timeout=300)
        figure = (
            f"restart, then {outage} s stopped: all {len(ids)} ended "
            f"{time.monotonic() - t_up:.1f} s after the start"
        )
        extra = f"census at {done}/{total} when stopped; GET during the outage: {codes}"
        return [judged("PostgreSQL restarted and stopped", figure, client, verdict, extra)]


def submit_load(ctx: Ctx) -> list[Row]:
    total = 300 if ctx.quick else 1000
    stack, client = ctx.stack("submit", workers=2)
    with stack:
        sub = submissions(stack.url, stack.token, total, clients=32, budget=240)
        ids = sorted(set(sub.accepted.values()))
        verdict = wait_ended(stack.engine, ids, timeout=900)
        errors = sum(sub.errors.values())
        figure = (
            f"{total} POSTs in {sub.seconds:.1f} s ({total / sub.seconds:.0f}/s): "
            f"{len(sub.accepted)} accepted, {len(sub.duplicates)} duplicate, {errors} errors; "
            f"all accepted ended {verdict.seconds:.1f} s later"
        )
        extra = f"errors {dict(sub.errors)}" if errors else ""
        if sub.mismatched:
            extra += f"; {len(sub.mismatched)} Idempotency-Keys answered with two ids"
        row = judged(f"{total} submissions, 32 clients", figure, client, verdict, extra)
        row.ok = row.ok and not errors and not sub.mismatched
        return [row]


def terminate_all(ctx: Ctx) -> list[Row]:
    stack, client = ctx.stack("sigterm", workers=2)
    with stack:
        # The sweep first, so that one worker is training when the signal comes.
        ids = [client.submit(training(6_000_000))["id"]]
        ids.append(client.submit(census(500 if ctx.quick else 1000))["id"])
        ids += [client.submit(optimum(i))["id"] for i in range(10)]
        wait_progress(stack.engine, ids[0], checkpoint=True)
        wait_progress(stack.engine, ids[1])
        sweep = _item_status(stack, ids[0])
        procs = [stack.api_proc, *stack.workers]
        for proc in procs:  # what a process manager does: SIGTERM to each main process
            proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        exits = wait_exits(procs, grace=30)  # type: ignore[arg-type]
        killed = sum(e == float("inf") for e in exits)
        still_open = len(ids) - len(wait_ended(stack.engine, ids, timeout=0).ended)
        stack.start_api()
        stack.start_worker()
        stack.start_worker()
        t_up = time.monotonic()
        verdict = wait_ended(stack.engine, ids, timeout=300)
        shown = ", ".join("killed" if e == float("inf") else f"{e:.1f}" for e in exits)
        figure = (
            f"exits after SIGTERM (api, 2 workers) {shown} s; {still_open} of {len(ids)} "
            f"open then, all ended {time.monotonic() - t_up:.1f} s after the restart"
        )
        extra = f"training batch {sweep} at SIGTERM"
        if killed:
            extra += f"; {killed} process(es) needed SIGKILL after 30 s"
        elif max(exits) > 10:
            extra += "; a process took over 10 s to exit"
        return [judged("SIGTERM to API and workers", figure, client, verdict, extra)]


def _item_status(stack: Stack, exp_id: str) -> str:
    sql = text("SELECT status FROM work_items WHERE experiment_id = :id AND task = :task")
    with stack.engine.connect() as conn:
        return str(conn.execute(sql, {"id": exp_id, "task": "training_batch"}).scalar())


def poll_load(ctx: Ctx) -> list[Row]:
    seconds = 10.0 if ctx.quick else 20.0
    stack, client = ctx.stack("pollers", workers=1)
    rows = []
    with stack:
        ids = [client.submit(optimum(i))["id"] for i in range(20)]
        verdict = wait_ended(stack.engine, ids, timeout=300)
        check_results(client, verdict)
        for clients in (64, 200):
            note = _healthy_or_restarted(stack)
            api_pid = stack.api_proc.pid if stack.api_proc else 0
            p = pollers(stack.url, stack.token, ids, clients, seconds, api_pid)
            h, errors = p.healthz, sum(p.errors.values())
            figure = (
                f"{p.rate:.0f} req/s, p50 {_ms(p.quantile(0.5))}, p99 {_ms(p.quantile(0.99))}, "
                f"max {_ms(max(p.latencies, default=float('nan')))}, {errors} errors; "
                f"/healthz max {_ms(h['max'])}"
            )
            ok = errors == 0 and h["failures"] == 0 and h["max"] < 1.0 and p.quantile(0.99) < 0.25
            cpu = f"CPU: API {p.api_cpu:.2f}, load generator {p.own_cpu:.2f} cores"
            cpu += f"; /healthz alone, same clients: {ceiling(stack.url, clients, 5.0):.0f} req/s"
            load = f"load average {os.getloadavg()[0]:.1f}"
            notes = [note, verdict.note()] + ([f"errors {dict(p.errors)}"] if errors else [])
            notes += [cpu, load]
            if h["failures"]:
                notes.append(f"/healthz failed {h['failures']} of {h['probes']} (5 s timeout)")
            row = Row(f"{clients} pollers, {seconds:g} s", figure, len(verdict.lost), ok)
            row.ok = ok and not verdict.lost
            row.notes = "; ".join(n for n in notes if n)
            rows.append(row)
    return rows


def _ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1e3:.0f} ms"


def _healthy_or_restarted(stack: Stack) -> str:
    """A wedged API from the last level is restarted, so each level starts fresh."""
    try:
        wait_until("healthz", lambda: _healthz(stack.url), 60, interval=1)
        return ""
    except Exception:  # noqa: BLE001
        stop_group(stack.api_proc, grace=10)  # type: ignore[arg-type]
        stack.start_api()
        return "API restarted first (/healthz silent for 60 s)"


def _healthz(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


TESTS: dict[str, Callable[[Ctx], list[Row]]] = {
    "kill-census": kill_census,
    "kill-sweep": kill_sweep,
    "redis": redis_restart,
    "postgres": postgres_restart,
    "submit": submit_load,
    "sigterm": terminate_all,
    "pollers": poll_load,
}
