"""Which queues live workers serve: each worker's reaper records its queues and the
time it was last seen, and work goes only where some worker will take it.

A worker is live while it was seen within WORKER_TTL seconds and has not said it
stopped. Training with device "auto" is planned for the gpu queue with cpu as its
fallback: `pick` swaps the two when no live worker serves gpu, and the reaper moves
a queued item to its fallback when the workers of its queue go away and the
fallback's are there (crud_recovery.reroute).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.config import get_settings
from service.models import Worker, as_utc, new_id, utcnow

#: Rows of workers not seen for this long are deleted.
FORGET_AFTER = timedelta(days=7)
#: Key of the served queues cached in a session's `info`, one look per transaction.
_SERVED = "benignity.served_queues"


def worker_name() -> str:
    """A name for this worker process: its host, pid and a random part (containers
    restarted under the same host name and pid are still told apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"


def beat(session: Session, *, name: str, queues: list[str]) -> None:
    """Record that worker `name` is alive and serves `queues`."""
    now = utcnow()
    row = session.get(Worker, name)
    if row is None:
        session.add(
            Worker(name=name, queues=",".join(queues), started_at=now, seen_at=now, stopped_at=None)
        )
    else:
        row.seen_at, row.stopped_at, row.queues = now, None, ",".join(queues)
    session.execute(delete(Worker).where(Worker.seen_at < now - FORGET_AFTER))


def stopped(session: Session, *, name: str) -> None:
    """Worker `name` has shut down: it no longer counts as live."""
    now = utcnow()
    session.execute(update(Worker).where(Worker.name == name).values(seen_at=now, stopped_at=now))


def live_workers(session: Session, *, ttl: float | None = None) -> Counter[str]:
    """How many live workers serve each queue."""
    ttl = get_settings().worker_ttl if ttl is None else ttl
    since = utcnow() - timedelta(seconds=ttl)
    rows = session.scalars(
        select(Worker.queues).where(Worker.seen_at >= since, Worker.stopped_at.is_(None))
    )
    return Counter(q for queues in rows for q in queues.split(",") if q)


def served(session: Session) -> frozenset[str]:
    """The queues some live worker serves, looked up once per transaction."""
    cached = session.info.get(_SERVED)
    if cached is None:
        cached = session.info[_SERVED] = frozenset(live_workers(session))
    return frozenset(cached)


def pick(session: Session, queue: str, fallback: str | None) -> tuple[str, str | None]:
    """Where to send an item that may run on `queue` or on `fallback`: (queue, fallback),
    swapped when no live worker serves `queue` (also when neither is served: the
    fallback is the likelier to come)."""
    if fallback is None or fallback == queue or queue in served(session):
        return queue, fallback
    return fallback, queue


def last_seen(session: Session) -> dict[str, datetime]:
    """For each queue any worker ever served, when the last of them was seen."""
    out: dict[str, datetime] = {}
    for queues, seen in session.execute(
        select(Worker.queues, func.max(Worker.seen_at)).group_by(Worker.queues)
    ):
        for q in queues.split(","):
            if q and (q not in out or as_utc(seen) > out[q]):
                out[q] = as_utc(seen)
    return out
