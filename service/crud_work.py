"""The work-item lifecycle that workers drive: claim, heartbeat, complete, fan-in.

Every transition is a compare-and-set on (status, lease), so a duplicate broker
delivery or a worker that lost its lease changes nothing. How work comes back
after a fault (the reaper, a killed pool process, a worker shutting down, a
broker that lost its messages) is in crud_recovery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, insert, select, true, update
from sqlalchemy.orm import Session

from service import fleet, notify
from service.crud import TERMINAL, Envelope
from service.models import CensusCone, CurveChunk, Experiment, Run, WorkItem, utcnow


@dataclass(frozen=True)
class Claimed:
    """A work item that this worker now holds under `lease`."""

    item_id: str
    experiment_id: str
    task: str
    queue: str
    stage: int
    payload: dict[str, Any]
    spec: dict[str, Any]
    checkpoint: bytes | None
    lease: str
    attempts: int
    time_limit: float | None = None  # hard seconds, as in the broker message


def claim_item(session: Session, *, item_id: str, lease: str, max_attempts: int) -> Claimed | None:
    """queued -> running by compare-and-set; None when another delivery got there first.

    An item that has used up its attempts fails, and so does its experiment. Two round
    trips before the commit: the compare-and-set returns the item's columns, then the
    experiment's row is read under a lock (its status, spec)."""
    return _claim(session, WorkItem.id == item_id, lease=lease, max_attempts=max_attempts)


def claim_next(
    session: Session,
    *,
    item: Claimed,
    lease: str,
    max_attempts: int,
    time_limit: float | None,
    held: Experiment,
) -> Claimed | None:
    """Claim the next queued item of `item`'s experiment on its queue (lowest stage, then
    id), one that no other transaction holds and whose time limit is `time_limit` (the
    limit the worker enforces now; None: no limit), so that no item runs past its own
    limit; None when there is none. `held`: the experiment, locked for update in this
    transaction already.

    A worker that has just finished `item` runs it at once, without a broker round trip;
    the item's broker message, if one was sent, then finds it claimed and is skipped.
    One round trip: the compare-and-set picks the item in a subquery."""
    limit = (
        WorkItem.time_limit.is_(None) if time_limit is None else WorkItem.time_limit == time_limit
    )
    pick = (
        select(WorkItem.id)
        .where(
            WorkItem.experiment_id == item.experiment_id,
            WorkItem.queue == item.queue,
            WorkItem.status == "queued",
            limit,
        )
        .order_by(WorkItem.stage, WorkItem.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _claim(session, WorkItem.id == pick, lease=lease, max_attempts=max_attempts, held=held)


def _claim(
    session: Session,
    which: ColumnElement[bool],
    *,
    lease: str,
    max_attempts: int,
    held: Experiment | None = None,
) -> Claimed | None:
    now = utcnow()
    row = session.execute(
        update(WorkItem)
        .where(which, WorkItem.status == "queued")
        .values(
            status="running",
            lease=lease,
            heartbeat_at=now,
            started_at=now,
            attempts=WorkItem.attempts + 1,
        )
        .returning(
            WorkItem.id,
            WorkItem.experiment_id,
            WorkItem.task,
            WorkItem.queue,
            WorkItem.stage,
            WorkItem.payload,
            WorkItem.checkpoint,
            WorkItem.attempts,
            WorkItem.time_limit,
        )
    ).first()
    if row is None:
        return None
    if held is not None:
        status, spec = held.status, held.spec
    else:
        status, spec = session.execute(
            select(Experiment.status, Experiment.spec)
            .where(Experiment.id == row.experiment_id)
            .with_for_update()
        ).one()
    if status in TERMINAL:
        ended = "cancelled" if status == "cancelled" else "failed"
        session.execute(update(WorkItem).where(WorkItem.id == row.id).values(status=ended))
        return None
    if row.attempts > max_attempts:
        msg = f"work item {row.task} failed {max_attempts} times (worker lost each time)"
        fail_experiment(
            session, experiment_id=row.experiment_id, error_type="WorkerLost", detail=msg
        )
        return None
    if status == "queued":
        session.execute(
            update(Experiment)
            .where(Experiment.id == row.experiment_id)
            .values(status="running", started_at=now)
        )
    claimed = Claimed(
        item_id=row.id,
        experiment_id=row.experiment_id,
        task=row.task,
        queue=row.queue,
        stage=row.stage,
        payload=row.payload,
        spec=spec,
        checkpoint=row.checkpoint,
        lease=lease,
        attempts=row.attempts,
        time_limit=row.time_limit,
    )
    mark_batch_runs(session, item=claimed, status="running", was="queued")
    return claimed


def running_under(session: Session, *, lease_prefix: str) -> str | None:
    """The id of the item running under a lease that starts with `lease_prefix` (the one
    a delivery holds now: its first item, or one it went on to), if any."""
    query = select(WorkItem.id).where(
        WorkItem.status == "running", WorkItem.lease.startswith(lease_prefix, autoescape=True)
    )
    return session.scalars(query).first()


def heartbeat(session: Session, *, item_id: str, lease: str, done: int) -> bool:
    """Refresh a running item's heartbeat and progress (never its checkpoint, see
    save_live); False when the lease is lost or work is cancelled."""
    res = session.execute(
        update(WorkItem)
        .where(WorkItem.id == item_id, WorkItem.lease == lease, WorkItem.status == "running")
        .values(heartbeat_at=utcnow(), progress_done=done)
    )
    if res.rowcount == 0:  # type: ignore[attr-defined]
        return False
    status = session.scalar(
        select(Experiment.status)
        .join(WorkItem, WorkItem.experiment_id == Experiment.id)
        .where(WorkItem.id == item_id)
    )
    return status not in TERMINAL


def complete_item(session: Session, *, item: Claimed, output: dict[str, Any]) -> bool:
    """running -> done under the lease; whether this worker still held the item."""
    res = session.execute(
        update(WorkItem)
        .where(
            WorkItem.id == item.item_id, WorkItem.lease == item.lease, WorkItem.status == "running"
        )
        .values(
            status="done",
            output=output,
            progress_done=WorkItem.progress_total,
            checkpoint=None,
            finished_at=utcnow(),
        )
    )
    if not res.rowcount:  # type: ignore[attr-defined]
        return False
    if item.task == "training_batch":  # its runs' whole curves are stored with the outcome
        session.execute(delete(CurveChunk).where(CurveChunk.item_id == item.item_id))
    return True


def stage_left(session: Session, *, experiment_id: str, stage: int) -> int:
    """Items of the stage that are not done (unlocked: a hint, unless the experiment is)."""
    query = (
        select(func.count())
        .select_from(WorkItem)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.stage == stage,
            WorkItem.status != "done",
        )
    )
    return int(session.scalar(query) or 0)


def lock_experiment(session: Session, *, experiment_id: str) -> Experiment | None:
    """The experiment, read afresh and locked for update until the commit."""
    return session.get(Experiment, experiment_id, with_for_update=True, populate_existing=True)


def item_counts(session: Session, *, experiment_id: str) -> dict[tuple[int, str], int]:
    """The experiment's items per (stage, status), in one GROUP BY (unlocked: a hint)."""
    query = (
        select(WorkItem.stage, WorkItem.status, func.count())
        .where(WorkItem.experiment_id == experiment_id)
        .group_by(WorkItem.stage, WorkItem.status)
    )
    return {(int(stage), str(status)): int(n) for stage, status, n in session.execute(query)}


def run_tallies(
    session: Session, *, experiment_id: str, block: int, verdicts: Sequence[str]
) -> dict[int, dict[str, int]]:
    """Per block of `block` consecutive run indices (index // block): its runs, the runs of
    each verdict, and the runs whose final has cone_global true; one GROUP BY in the
    database, which reads no curve."""
    number = (Run.index // block).label("block")
    held = Run.final["cone_global"].as_boolean() == true()
    columns = [
        func.count().label("runs"),
        *(func.sum(case((Run.verdict == v, 1), else_=0)) for v in verdicts),
        func.sum(case((held, 1), else_=0)),
    ]
    query = (
        select(number, *columns)
        .where(Run.experiment_id == experiment_id)
        .group_by(number)
        .order_by(number)
    )
    names = ("runs", *verdicts, "cone_global")
    return {
        int(b): {k: int(v or 0) for k, v in zip(names, counts, strict=True)}
        for b, *counts in session.execute(query)
    }


def stop_item(session: Session, *, item: Claimed) -> None:
    """running -> cancelled for an item whose experiment ended while it ran (lease kept)."""
    session.execute(
        update(WorkItem)
        .where(
            WorkItem.id == item.item_id, WorkItem.lease == item.lease, WorkItem.status == "running"
        )
        .values(status="cancelled", finished_at=utcnow())
    )


def update_runs(session: Session, *, experiment_id: str, updates: Sequence[dict[str, Any]]) -> None:
    """Write run results, each dict naming its run by `index` (one bulk UPDATE by key)."""
    if not updates:
        return
    wanted = [u["index"] for u in updates]
    ids = dict(
        session.execute(
            select(Run.index, Run.id).where(
                Run.experiment_id == experiment_id, Run.index.in_(wanted)
            )
        ).all()
    )
    rows = [
        {"id": ids[u["index"]], **{k: v for k, v in u.items() if k != "index"}} for u in updates
    ]
    session.execute(update(Run), rows)


def mark_batch_runs(session: Session, *, item: WorkItem | Claimed, status: str, was: str) -> None:
    """Move the runs of a training batch from `was` to `status`: queued -> running when a
    worker claims it, running -> queued when it goes back to the queue (a cancelled or
    finished run keeps its status). Other items have no runs of their own."""
    if item.task != "training_batch":
        return
    start, stop = item.payload["runs"]
    session.execute(
        update(Run)
        .where(
            Run.experiment_id == item.experiment_id,
            Run.index >= start,
            Run.index < stop,
            Run.status == was,
        )
        .values(status=status)
    )


def fail_runs(session: Session, *, experiment_id: str) -> None:
    """The unfinished (queued or running) runs of a failed experiment -> failed; their
    partial curves and latest points stay."""
    session.execute(
        update(Run)
        .where(Run.experiment_id == experiment_id, Run.status.in_(("queued", "running")))
        .values(status="failed")
    )


def save_live(
    session: Session,
    *,
    item_id: str,
    lease: str,
    experiment_id: str,
    checkpoint: bytes | None = None,
    chunks: Sequence[dict[str, Any]] = (),
    updates: Sequence[dict[str, Any]] = (),
    done: int | None = None,
) -> bool:
    """Store what a training batch has while it trains, while this lease holds the item:
    its progress `done` (None: keep it), its checkpoint (None: keep the stored one), the
    curve chunks of the points since its last save (rows of CurveChunk without experiment
    and item; a chunk of the same or a later seq, left by an attempt that died, is
    replaced), and run updates naming their run by `index` (latest points; curves when
    the batch stops for good). False, writing nothing, when the lease is lost.

    The item's row stays locked until the commit, so a worker that has lost the item can
    never overwrite the newer state of the worker that took it over. The experiment's row
    is share-locked first, in the order of cancel and fail (experiment, then items and
    runs), so that neither can deadlock with this write."""
    session.execute(
        select(Experiment.id).where(Experiment.id == experiment_id).with_for_update(read=True)
    )
    held = session.scalar(
        select(WorkItem.id)
        .where(WorkItem.id == item_id, WorkItem.lease == lease, WorkItem.status == "running")
        .with_for_update()
    )
    if held is None:
        return False
    values: dict[str, Any] = {} if done is None else {"progress_done": done}
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    if values:
        session.execute(update(WorkItem).where(WorkItem.id == item_id).values(**values))
    if chunks:
        first = min(c["seq"] for c in chunks)
        session.execute(
            delete(CurveChunk).where(CurveChunk.item_id == item_id, CurveChunk.seq >= first)
        )
        session.execute(
            insert(CurveChunk),
            [{"experiment_id": experiment_id, "item_id": item_id, **c} for c in chunks],
        )
    update_runs(session, experiment_id=experiment_id, updates=updates)
    return True


def item_chunks(session: Session, *, item_id: str) -> tuple[int, list[bytes]]:
    """The curve chunks a work item has stored, in the order written, and the next seq."""
    query = (
        select(CurveChunk.seq, CurveChunk.data)
        .where(CurveChunk.item_id == item_id)
        .order_by(CurveChunk.seq, CurveChunk.first_run)
    )
    rows = session.execute(query).all()
    return (rows[-1][0] + 1 if rows else 0), [data for _, data in rows]


#: A cone row's columns besides its experiment, ``detail`` (JSON) last.
CONE_COLUMNS = ("width", "sample", "verdict", "value", "gap", "covered", "method", "detail")


def insert_cones(session: Session, *, experiment_id: str, cones: Sequence[dict[str, Any]]) -> None:
    """Store a census chunk's cone records, no ORM objects: on PostgreSQL one COPY (for
    100 cones 5-8 ms, against 9-16 ms for an executemany INSERT, one statement per row in
    psycopg's pipeline), elsewhere one executemany INSERT."""
    if not cones:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(CensusCone), [{"experiment_id": experiment_id, **c} for c in cones])
        return
    columns = ", ".join(("experiment_id", *CONE_COLUMNS))
    statement = f"COPY {CensusCone.__tablename__} ({columns}) FROM STDIN"
    cursor = session.connection().connection.cursor()
    with closing(cursor), cursor.copy(statement) as copy:
        for cone in cones:  # detail as the JSON column stores it (json.dumps)
            row = (cone[k] for k in CONE_COLUMNS[:-1])
            copy.write_row((experiment_id, *row, json.dumps(cone["detail"])))


def stage_outputs(session: Session, *, experiment_id: str, stage: int) -> list[dict[str, Any]]:
    query = (
        select(WorkItem.output)
        .where(WorkItem.experiment_id == experiment_id, WorkItem.stage == stage)
        .order_by(WorkItem.id)
    )
    return [o for o in session.scalars(query) if o is not None]


def release_stage(
    session: Session, *, experiment_id: str, stage: int, window: int
) -> list[Envelope]:
    """blocked -> waiting for every item of `stage`, then `window` of them to queued;
    returns the messages to send."""
    session.execute(
        update(WorkItem)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.stage == stage,
            WorkItem.status == "blocked",
        )
        .values(status="waiting")
    )
    return top_up(session, experiment_id=experiment_id, window=window)


def top_up(session: Session, *, experiment_id: str, window: int) -> list[Envelope]:
    """waiting -> queued for as many items as keep `window` of the experiment's items
    queued or running; returns the messages to send.

    So one experiment never holds more than `window` messages in the broker: others'
    work is not stuck behind it, and cancelling it leaves at most that many stale
    messages to drain (a census of 19,000 items cancelled on the filesystem broker
    once held a new optimum back for over 5 minutes).
    """
    busy = session.scalar(
        select(func.count())
        .select_from(WorkItem)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.status.in_(("queued", "running")),
        )
    )
    room = window - int(busy or 0)
    if room <= 0:
        return []
    ids = session.scalars(
        select(WorkItem.id)
        .join(Experiment, Experiment.id == WorkItem.experiment_id)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.status == "waiting",
            Experiment.status.not_in(TERMINAL),
        )
        .order_by(WorkItem.stage, WorkItem.id)
        .limit(room)
    ).all()
    if not ids:
        return []
    now = utcnow()
    promoted = session.execute(
        update(WorkItem)
        .where(WorkItem.id.in_(ids), WorkItem.status == "waiting")
        .values(status="queued", enqueued_at=now, queued_at=func.coalesce(WorkItem.queued_at, now))
        .returning(WorkItem.id, WorkItem.queue, WorkItem.fallback, WorkItem.time_limit)
    ).all()
    out, moved = [], []
    for item_id, queue, fallback, limit in promoted:
        routed, _ = fleet.pick(session, queue, fallback)
        if routed != queue:
            moved.append(item_id)
        out.append(Envelope(item_id, routed, limit))
    if moved:  # to the fallback, which keeps the planned queue as its own fallback
        session.execute(
            update(WorkItem)
            .where(WorkItem.id.in_(moved))
            .values(queue=WorkItem.fallback, fallback=WorkItem.queue)
        )
    return out


def finish_experiment(session: Session, *, experiment: Experiment, result: dict[str, Any]) -> None:
    """The experiment (locked for update, unfinished) -> succeeded, with its result."""
    experiment.status, experiment.result, experiment.finished_at = "succeeded", result, utcnow()
    notify.record(session, experiment_id=experiment.id, spec=experiment.spec, status="succeeded")


def fail_experiment(session: Session, *, experiment_id: str, error_type: str, detail: str) -> None:
    """Any unfinished experiment -> failed, with its error; its pending work is dropped."""
    ended = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.not_in(TERMINAL))
        .values(status="failed", finished_at=utcnow(), error={"type": error_type, "detail": detail})
        .returning(Experiment.spec)
    ).first()
    if ended is not None:
        notify.record(session, experiment_id=experiment_id, spec=ended.spec, status="failed")
    session.execute(
        update(WorkItem)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.status.in_(("queued", "waiting", "blocked", "running")),
        )
        .values(status="failed", error=detail)
    )
    fail_runs(session, experiment_id=experiment_id)
