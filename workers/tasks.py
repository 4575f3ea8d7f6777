"""Celery tasks: take an id, load the rows, call the core, store the result.

Bounds: a message carries the item's time limits. The soft one raises
SoftTimeLimitExceeded in the job, which fails the experiment with the limit; the
hard one kills the pool process. A pool process killed that way, or by a signal
(the OOM killer's SIGKILL), is counted in the main process (KillAwareRequest):
the item is queued again at once, and after MAX_KILLS kills its experiment fails.

Chains: a task that has finished its item claims the next queued item of the same
experiment and queue in the same transaction that stores the result, and runs it, for
up to CHAIN_SECONDS (a setting), with no broker round trip in between (the chained item's own
message, if one was sent, then finds it claimed and is skipped). A chained item gets a
lease of the same delivery, so a kill of the pool process is counted against it. It
only takes items whose time limit is the message's, which the pool enforces from the
task's start: a chained item never runs past its own limit, and one that meets the
message's soft limit before its own is handed back to the queue, not failed.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

from billiard.exceptions import WorkerLostError
from cachetools import LRUCache
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service import crud, crud_recovery, crud_reports, crud_work, dispatch, notify
from service.config import get_settings
from service.db import OUTAGES, session_scope
from service.models import Experiment
from workers import jobs
from workers.celery_app import app, busy, stop_gently_on_sigterm, stopping

log = logging.getLogger("benignity.worker")


class Heartbeat(threading.Thread):
    """Refreshes a running item's heartbeat; notices a lost lease or a cancellation.

    A beat is one small UPDATE: the checkpoint is written apart (Context.save_live)."""

    def __init__(self, item: crud_work.Claimed, interval: float) -> None:
        super().__init__(name=f"heartbeat-{item.item_id}", daemon=True)
        self.item, self.interval = item, interval
        self.done = 0
        self.keep_going = threading.Event()
        self.keep_going.set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            with session_scope() as session:
                alive = crud_work.heartbeat(
                    session, item_id=self.item.item_id, lease=self.item.lease, done=self.done
                )
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next interval
            if isinstance(exc, OUTAGES):  # a line, not a traceback, every beat of an outage
                log.warning("heartbeat of %s missed: %s", self.item.item_id, type(exc).__name__)
            else:
                log.exception("heartbeat failed for %s", self.item.item_id)
            return
        if not alive:
            self.keep_going.clear()

    def stop(self) -> None:
        self._halt.set()


class Context(jobs.Context):
    """What a job sees: its spec and payload, plus progress and checkpoint hooks."""

    def __init__(self, item: crud_work.Claimed, beat: Heartbeat) -> None:
        self.item, self._beat = item, beat
        self.spec, self.payload, self.checkpoint = item.spec, item.payload, item.checkpoint
        self.queue = item.queue

    def progress(self, done: int) -> bool:
        self._beat.done = done
        return self._beat.keep_going.is_set() and not stopping.is_set()

    def shutting_down(self) -> bool:
        return stopping.is_set()

    def save_live(
        self,
        *,
        checkpoint: bytes | None = None,
        chunks: list[dict[str, Any]] | None = None,
        updates: list[dict[str, Any]] | None = None,
    ) -> bool:
        try:
            with session_scope() as session:
                saved = crud_work.save_live(
                    session,
                    item_id=self.item.item_id,
                    lease=self.item.lease,
                    experiment_id=self.item.experiment_id,
                    checkpoint=checkpoint,
                    chunks=chunks or (),
                    updates=updates or (),
                    done=self._beat.done,
                )
        except Exception as exc:  # noqa: BLE001 - the next checkpoint writes them again
            if isinstance(exc, OUTAGES):
                log.warning("checkpoint of %s not stored: %s", self.item.item_id, exc)
            else:
                log.exception("storing the checkpoint of %s failed", self.item.item_id)
            return False
        if not saved:
            self._beat.keep_going.clear()
        return saved

    def stored_points(self) -> tuple[int, list[bytes]]:
        with session_scope() as session:
            return crud_work.item_chunks(session, item_id=self.item.item_id)

    def stage_outputs(self, stage: int) -> list[dict[str, Any]]:
        """The outputs of an earlier stage: all its items are done, so they are read once
        per experiment and stage in this process (chunks of one census share them)."""
        key = (self.item.experiment_id, stage)
        kept = _DONE_STAGES.get(key) if stage < self.item.stage else None
        if kept is not None:
            return kept
        with session_scope() as session:
            outputs = crud_work.stage_outputs(
                session, experiment_id=self.item.experiment_id, stage=stage
            )
        if stage < self.item.stage:
            _DONE_STAGES[key] = outputs
        return outputs


#: (experiment, stage) -> the outputs of a finished stage (see stage_outputs; least recently
#: used dropped first).
_DONE_STAGES: LRUCache[tuple[str, int], list[dict[str, Any]]] = LRUCache(maxsize=16)


def lease_prefix(task_id: str | None) -> str:
    """The first 20 characters of the leases taken by deliveries of message `task_id`."""
    return "".join(c for c in task_id or "" if c in string.hexdigits)[:20].ljust(20, "0")


class KillAwareRequest(Request):  # type: ignore[misc]
    """A request in the worker's main process that counts kills of its pool process."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:  # before billiard kills the process, so the item cannot slip away
            _record_kill(self, f"passed its hard time limit of {timeout:g} s", "")
        super().on_timeout(soft, timeout)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, WorkerLostError):
            found = re.search(r"signal (\d+) \((\w+)\)", str(exc))
            if found:
                signum, name = found.groups()
                cause = f"was killed by signal {signum} ({name})"
                hint = "out of memory?" if name == "SIGKILL" else ""
            else:
                cause, hint = f"lost its process ({exc})", ""
            _record_kill(self, cause, hint)
        return super().on_failure(exc_info, send_failed_event, return_ok)


def _record_kill(request: Request, cause: str, hint: str) -> None:
    if request.name != dispatch.EXECUTE or not request.args:
        return
    prefix = lease_prefix(request.id)
    try:
        with session_scope() as session:  # the message's item, or one its chain went on to
            item_id = crud_work.running_under(session, lease_prefix=prefix) or str(request.args[0])
            envelope = crud_recovery.record_kill(
                session,
                item_id=item_id,
                lease_prefix=prefix,
                cause=cause,
                hint=hint,
                max_kills=get_settings().max_kills,
            )
        log.warning("work item %s %s", item_id, cause)
        if envelope is not None:
            dispatch.send([envelope], app)
    except Exception:  # noqa: BLE001 - the heartbeat timeout still brings the item back
        log.exception("could not count the kill of work item %s", request.args[0])


@app.task(
    name=dispatch.EXECUTE,
    bind=True,
    Request=KillAwareRequest,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def execute(self: Any, item_id: str) -> str:
    """Run one work item, if this delivery wins it, then the chain that follows it."""
    settings = get_settings()
    stop_gently_on_sigterm()
    limits = getattr(self.request, "timelimit", None) or (None, None)
    chain = Chain(lease_prefix(self.request.id), item_id, time.monotonic(), limits[0])
    with session_scope() as session:
        item = crud_work.claim_item(
            session, item_id=item_id, lease=chain.lease(), max_attempts=settings.max_attempts
        )
    if item is None:
        return "skipped"
    busy.set()  # from here SIGTERM asks the job to stop (see celery_app)
    try:
        result = "done"
        while item is not None:
            result, item = _run(item, settings.heartbeat_interval, chain)
        return result
    finally:
        busy.clear()


@dataclass(frozen=True)
class Chain:
    """One delivery's items: its lease prefix, its message's item, when it started, and
    the message's hard time limit."""

    prefix: str
    first: str
    started: float  # time.monotonic()
    hard: float | None

    def lease(self) -> str:
        return self.prefix + secrets.token_hex(6)

    def room(self) -> bool:
        """Whether to claim another item now (worker not stopping, within CHAIN_SECONDS)."""
        elapsed = time.monotonic() - self.started
        return not stopping.is_set() and elapsed < get_settings().chain_seconds

    def cut_short(self, item: crud_work.Claimed, item_started: float) -> bool:
        """Whether the message's soft limit came before `item`'s own (a chained item)."""
        own = dispatch.time_limits(item.time_limit).get("soft_time_limit")
        ran = time.monotonic() - item_started
        return item.item_id != self.first and own is not None and ran < own


def _run(
    item: crud_work.Claimed, heartbeat_interval: float, chain: Chain
) -> tuple[str, crud_work.Claimed | None]:
    """Run `item`; the outcome, and the next item of the chain (claimed) or None."""
    beat = Heartbeat(item, heartbeat_interval)
    beat.start()
    began = time.monotonic()
    try:
        outcome = jobs.run(item.task, Context(item, beat))
    except jobs.Stopped:
        return _stop(item, release=stopping.is_set() and beat.keep_going.is_set()), None
    except OperationalError:
        raise  # the database is away, not the experiment at fault: the reaper hands it out again
    except SoftTimeLimitExceeded as exc:
        if chain.cut_short(item, began):
            return _stop(item, release=True), None
        return _fail(item, exc), None
    except Exception as exc:  # noqa: BLE001 - the core's errors are the experiment's errors
        return _fail(item, exc), None
    finally:
        beat.stop()
    try:
        return "done", _complete_patiently(item, outcome, chain)
    except OperationalError:
        raise  # still away: the reaper hands the item out again
    except Exception as exc:  # noqa: BLE001 - a fan-in error is the experiment's error
        return _fail(item, exc), None


#: Seconds between tries to store a finished item while the database is away (31 s in all),
#: so that a short outage does not throw away the work; the lease guards against a double store.
STORE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)


def _complete_patiently(
    item: crud_work.Claimed, outcome: jobs.Outcome, chain: Chain
) -> crud_work.Claimed | None:
    for delay in STORE_RETRY_DELAYS:
        try:
            return _complete(item, outcome, chain)
        except OperationalError as exc:
            log.warning("storing %s failed (%s); trying again in %g s", item.item_id, exc, delay)
            time.sleep(delay)
    return _complete(item, outcome, chain)


def _stop(item: crud_work.Claimed, *, release: bool) -> str:
    """The job stopped early: hand the item back (worker shutting down) or end it (cancelled)."""
    with session_scope() as session:
        if not release:
            crud_work.stop_item(session, item=item)
            return "stopped"
        envelope = crud_recovery.release_item(session, item=item)
    if envelope is not None:
        dispatch.send([envelope], app)
    log.warning("work item %s handed back (worker shutting down, or cut short)", item.item_id)
    return "released"


def _fail(item: crud_work.Claimed, exc: Exception) -> str:
    log.exception("work item %s (%s) failed", item.item_id, item.task)
    error_type, detail = type(exc).__name__, str(exc) or repr(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        error_type = "TimeLimitExceeded"
        detail = (
            f"work item {item.task} passed its time limit of {item.time_limit or 0:g} s"
            " (estimated from the spec)"
        )
    with session_scope() as session:
        crud_work.fail_experiment(
            session, experiment_id=item.experiment_id, error_type=error_type, detail=detail
        )
    return "failed"


def _complete(
    item: crud_work.Claimed, outcome: jobs.Outcome, chain: Chain | None = None
) -> crud_work.Claimed | None:
    """Store the outcome; the last item of a stage releases the next stage or finishes.
    Within the chain's room, claim the experiment's next queued item in the same
    transaction and return it (its message, if not sent yet, is not sent).

    The fan-in is computed before the experiment's row is locked when every other item
    of the last stage is done already (they stay done), so that the lock is held for the
    status change only; only when another item finished meanwhile is it computed under
    the lock. One unlocked GROUP BY of the items' statuses tells whether there is a next
    stage and items waiting to be topped up; the count that decides "last of its stage"
    is made under the lock."""
    envelopes: list[crud.Envelope] = []
    window = get_settings().dispatch_window
    following = None
    eid = item.experiment_id
    with session_scope() as session:
        if not crud_work.complete_item(session, item=item, output=outcome.output):
            return None
        if outcome.runs:
            crud_work.update_runs(session, experiment_id=eid, updates=outcome.runs)
        if outcome.cones:
            crud_work.insert_cones(session, experiment_id=eid, cones=outcome.cones)
        counts = crud_work.item_counts(session, experiment_id=eid)
        nxt = item.stage + 1
        final_stage = not any(stage == nxt for stage, _ in counts)
        left = sum(n for (st, status), n in counts.items() if st == item.stage and status != "done")
        final = _fan_in(session, item) if final_stage and not left else None
        held = crud_work.lock_experiment(session, experiment_id=eid)
        running = held is not None and held.status not in crud.TERMINAL
        left = crud_work.stage_left(session, experiment_id=eid, stage=item.stage) if running else 1
        exp = held if running and not left else None
        if exp is None:  # more of this stage to do: send the next waiting item(s)
            if counts.get((item.stage, "waiting")):
                envelopes = crud_work.top_up(session, experiment_id=eid, window=window)
        elif not final_stage:
            envelopes = crud_work.release_stage(
                session, experiment_id=exp.id, stage=nxt, window=window
            )
        else:
            final = final or _fan_in(session, item)
            crud_work.update_runs(session, experiment_id=exp.id, updates=final.runs)
            crud_work.finish_experiment(session, experiment=exp, result=final.output)
        finished = exp is not None and final_stage
        if running and held is not None and chain is not None and not finished and chain.room():
            following = crud_work.claim_next(
                session,
                item=item,
                lease=chain.lease(),
                max_attempts=get_settings().max_attempts,
                time_limit=chain.hard,
                held=held,
            )
    if following is not None:
        envelopes = [e for e in envelopes if e.item_id != following.item_id]
    dispatch.send(envelopes, app)
    return following


def _fan_in(session: Session, item: crud_work.Claimed) -> jobs.Outcome:
    """The experiment's result from its items' outputs and its runs: a training
    experiment's groups from the database's tallies (no run row, no curve is loaded)."""
    eid, began = item.experiment_id, time.perf_counter()
    kind = session.scalar(select(Experiment.kind).where(Experiment.id == eid))
    outputs = {
        s: crud_work.stage_outputs(session, experiment_id=eid, stage=s)
        for s in range(item.stage + 1)
    }
    if kind == "training":
        tallies = crud_work.run_tallies(
            session, experiment_id=eid, block=int(item.spec["seeds"]), verdicts=jobs.RUN_VERDICTS
        )
        final = jobs.finalize_training(item.spec, outputs, tallies)
    else:
        runs = crud_reports.runs_without_curves(session, experiment_id=eid)
        final = jobs.finalize(str(kind), item.spec, outputs, runs)
    log.info("fan-in of experiment %s took %.3f s", eid, time.perf_counter() - began)
    return final


class Undelivered(Exception):
    """A webhook attempt that the receiver did not accept (retried with backoff)."""


@app.task(
    name=notify.TASK,
    bind=True,
    autoretry_for=(Undelivered, OperationalError),
    retry_backoff=get_settings().notify_backoff,
    retry_backoff_max=3600,
    retry_jitter=False,
    max_retries=get_settings().notify_attempts,
)
def deliver(self: Any, notification_id: int, attempts: int = 0) -> str:
    """POST one webhook; `attempts` were made before this message was sent."""
    settings = get_settings()
    with session_scope() as session:
        claim = notify.claim(
            session, notification_id=notification_id, expected=attempts + self.request.retries
        )
    if claim is None:
        return "skipped"  # another message made this attempt, or it is settled
    outcome = notify.post(claim, key=notify.secret(settings), timeout=settings.notify_timeout)
    with session_scope() as session:
        settled = notify.settle(
            session, claim=claim, outcome=outcome, max_attempts=settings.notify_attempts
        )
    if not settled:
        raise Undelivered(outcome.error)
    return "delivered" if outcome.error is None else "failed"
