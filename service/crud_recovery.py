"""How work comes back after a fault: the reaper, a killed pool process, a worker
shutting down, and a broker that lost its messages.

Each is a compare-and-set on (status, lease) like the rest of the lifecycle
(crud_work), so a late report or a duplicate message changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service import crud_work, fleet
from service.crud import Envelope
from service.crud_work import Claimed, fail_experiment
from service.models import WorkItem, as_utc, utcnow


def reap(
    session: Session, *, heartbeat_timeout: float, requeue_after: float, window: int
) -> list[Envelope]:
    """Re-enqueue work whose worker died or whose broker message was lost.

    A running item whose heartbeat is older than `heartbeat_timeout` seconds goes
    back to queued (its attempt counter bounds how often). A queued item not
    started `requeue_after * 2**requeues` seconds after it was sent is sent again;
    a duplicate delivery is harmless because claiming is a compare-and-set. An
    experiment with items waiting and room in its dispatch `window` (its top-up was
    lost with a worker) gets them sent.
    """
    now = utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout)
    dead = list(
        session.scalars(
            select(WorkItem).where(WorkItem.status == "running", WorkItem.heartbeat_at < stale)
        )
    )
    out = []
    for item in dead:
        res = session.execute(
            update(WorkItem)
            .where(
                WorkItem.id == item.id, WorkItem.status == "running", WorkItem.lease == item.lease
            )
            .values(status="queued", lease=None, enqueued_at=now)
        )
        if res.rowcount:  # type: ignore[attr-defined]
            crud_work.mark_batch_runs(session, item=item, status="queued", was="running")
            out.append(Envelope(item.id, item.queue, item.time_limit))
    oldest = now - timedelta(seconds=requeue_after)
    waiting = session.scalars(
        select(WorkItem).where(WorkItem.status == "queued", WorkItem.enqueued_at < oldest)
    )
    for item in waiting:
        wait = requeue_after * 2 ** min(item.requeues, 6)
        if item.enqueued_at is not None and as_utc(item.enqueued_at) > now - timedelta(
            seconds=wait
        ):
            continue
        item.enqueued_at, item.requeues = now, item.requeues + 1
        out.append(Envelope(item.id, item.queue, item.time_limit))
    starved = session.scalars(
        select(WorkItem.experiment_id).where(WorkItem.status == "waiting").distinct()
    ).all()
    for experiment_id in starved:
        out += crud_work.top_up(session, experiment_id=experiment_id, window=window)
    return out


def reroute(session: Session) -> list[Envelope]:
    """Queued items whose queue no live worker serves, moved to their fallback queue
    when a live worker serves that; returns the messages to send.

    The old message stays in the old queue: if a worker takes it later, claiming
    (a compare-and-set) lets only one of the two deliveries run the item.
    """
    live = fleet.served(session)
    items = session.scalars(
        select(WorkItem).where(
            WorkItem.status == "queued",
            WorkItem.fallback.is_not(None),
            WorkItem.queue.not_in(live),
        )
    )
    out = []
    for item in items:
        if item.fallback in live:
            item.queue, item.fallback, item.enqueued_at = item.fallback, item.queue, utcnow()
            out.append(Envelope(item.id, item.queue, item.time_limit))
    return out


def fail_stranded(session: Session, *, deadline: float) -> list[str]:
    """Fail the experiments whose queued items no live worker has been there to take
    for `deadline` seconds (QUEUE_DEADLINE); returns their ids.

    The time counts from when the item was queued or a worker of its queue (or its
    fallback) was last seen, whichever is later, so a busy queue never counts, and
    a queue whose workers restart gets the whole deadline to see them back.
    """
    live = fleet.served(session)
    rows = session.execute(
        select(
            WorkItem.experiment_id,
            WorkItem.task,
            WorkItem.queue,
            WorkItem.fallback,
            WorkItem.queued_at,
            WorkItem.enqueued_at,
        ).where(WorkItem.status == "queued", WorkItem.queue.not_in(live))
    ).all()
    if not rows:
        return []
    seen = fleet.last_seen(session)
    now = utcnow()
    failed: list[str] = []
    for experiment_id, task, queue, fallback, queued_at, enqueued_at in rows:
        if experiment_id in failed or fallback in live:
            continue
        queues = [queue] if fallback is None else [queue, fallback]
        since = [as_utc(t) for t in (queued_at, enqueued_at) if t is not None][:1] or [now]
        since += [seen[q] for q in queues if q in seen]
        if (now - max(since)).total_seconds() <= deadline:
            continue
        waited = (now - since[0]).total_seconds()
        detail = stranded_reason(task, queues, waited=waited, deadline=deadline)
        fail_experiment(session, experiment_id=experiment_id, error_type="NoWorker", detail=detail)
        failed.append(experiment_id)
    return failed


def stranded_reason(task: str, queues: list[str], *, waited: float, deadline: float) -> str:
    """What the user reads when no worker came for an item within QUEUE_DEADLINE."""
    names = " or ".join(f"'{q}'" for q in queues)
    text = (
        f"no live worker serves the {names} queue: work item {task} waited {waited:.0f} s "
        f"(QUEUE_DEADLINE is {deadline:g} s). Start a worker for it (benignity worker "
        f"--queues {queues[0]})"
    )
    if queues == ["gpu"]:
        text += ' on a host with a GPU, or submit the spec with "device": "auto" or "cpu"'
    return text + "."


def resend_queued(session: Session, *, sent_before: datetime) -> list[Envelope]:
    """Every queued item sent before `sent_before`: the broker lost those messages."""
    items = list(
        session.scalars(
            select(WorkItem).where(
                WorkItem.status == "queued",
                or_(WorkItem.enqueued_at.is_(None), WorkItem.enqueued_at < sent_before),
            )
        )
    )
    now = utcnow()
    for item in items:
        item.enqueued_at = now
    return [Envelope(it.id, it.queue, it.time_limit) for it in items]


def release_item(session: Session, *, item: Claimed) -> Envelope | None:
    """running -> queued for an item whose worker is shutting down; None if no longer held.

    Its checkpoint stays for the next worker to resume from, and the attempt is
    given back: a graceful stop is not a failure.
    """
    res = session.execute(
        update(WorkItem)
        .where(
            WorkItem.id == item.item_id, WorkItem.lease == item.lease, WorkItem.status == "running"
        )
        .values(status="queued", lease=None, enqueued_at=utcnow(), attempts=WorkItem.attempts - 1)
    )
    if res.rowcount == 0:  # type: ignore[attr-defined]
        return None
    crud_work.mark_batch_runs(session, item=item, status="queued", was="running")
    return Envelope(item.item_id, item.queue, item.time_limit)


def record_kill(
    session: Session,
    *,
    item_id: str,
    lease_prefix: str,
    cause: str,
    hint: str = "",
    max_kills: int,
) -> Envelope | None:
    """Count a kill of the pool process that ran an item (by a signal, or its hard limit).

    The item must still be running under the lease that the killed delivery
    took (it starts with `lease_prefix`). Below `max_kills` kills it goes back
    to queued, and its message is returned to be sent at once; at `max_kills`
    its experiment fails with the cause, e.g. "work item census_chunk was
    killed by signal 9 (SIGKILL) twice (out of memory?)".
    """
    if not lease_prefix:
        return None
    item = session.scalars(
        select(WorkItem)
        .where(
            WorkItem.id == item_id,
            WorkItem.status == "running",
            WorkItem.lease.startswith(lease_prefix, autoescape=True),
        )
        .with_for_update()
    ).first()
    if item is None:
        return None
    causes = [*(item.error or "").splitlines(), cause] if item.kills else [cause]
    item.kills += 1
    item.error = "\n".join(causes)
    if item.kills >= max_kills:
        kind = "TimeLimitExceeded" if "time limit" in cause else "WorkerKilled"
        detail = kill_reason(item.task, causes, hint)
        fail_experiment(session, experiment_id=item.experiment_id, error_type=kind, detail=detail)
        return None
    item.status, item.lease, item.enqueued_at = "queued", None, utcnow()
    crud_work.mark_batch_runs(session, item=item, status="queued", was="running")
    return Envelope(item.id, item.queue, item.time_limit)


def kill_reason(task: str, causes: list[str], hint: str = "") -> str:
    """What the user reads when an item was killed len(causes) times."""
    times = {1: "once", 2: "twice"}.get(len(causes), f"{len(causes)} times")
    if len(set(causes)) == 1:
        text = f"work item {task} {causes[0]} {times}"
    else:
        text = f"work item {task} was stopped {times}: " + "; then ".join(causes)
    return f"{text} ({hint})" if hint else text
