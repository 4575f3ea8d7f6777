"""Per-stage timings of an experiment, from its work items' timestamps, computed in SQL.

Each work item records when it was first queued (``queued_at``: its message sent), when a
worker last claimed it (``started_at``) and when it finished (``finished_at``). Per stage
(0: the optima, 1: census chunks or training batches) the database returns, in a few
queries whatever the number of items (a GROUP BY; the waits' medians: PostgreSQL's
percentile_cont, or one sorted read per stage elsewhere; the first start's wait), in
about 40 ms on PostgreSQL and 60-100 ms on SQLite for 16,384 items:

- ``wait``: queued -> started of each item (dispatch latency plus time behind other
  items): of the first item to start, the median and the maximum;
- ``run``: started -> finished, summed over the items and the longest;
- ``wall``: the stage's first start to its last finish;
- ``release``: the previous stage's last finish to this stage's first queued (how long
  the next stage took to be sent);

and for the experiment, ``submit_to_start`` and ``submit_to_done`` (created_at to
started_at and to finished_at). Seconds throughout; null where a time is not known yet.

Once an experiment has ended and every item has finished, its timings can no longer change:
``experiment_timings`` keeps those of the last SETTLED_KEPT such experiments in the process,
so that reading a large finished experiment again does not repeat the queries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cachetools import LRUCache
from sqlalchemy import ColumnElement, Float, and_, func, literal_column, select, type_coerce
from sqlalchemy.orm import Session

from service.models import WorkItem, as_utc


def seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[float]:
    """SQL for end - start in seconds (float), on PostgreSQL and SQLite alike."""
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(func.extract("epoch", end - start), Float)
    return (func.julianday(end) - func.julianday(start)) * literal_column("86400.0")


#: How many settled experiments' timings a process keeps (a few KB each).
SETTLED_KEPT = 4096
_settled: LRUCache[str, dict[str, Any]] = LRUCache(maxsize=SETTLED_KEPT)
_settled_lock = threading.Lock()


def experiment_timings(
    session: Session,
    *,
    experiment_id: str,
    terminal: bool,
    created_at: datetime | None,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> dict[str, Any]:
    """``stage_timings``, kept once the experiment is `terminal` and all its items have
    finished (nothing in them can change after that)."""
    with _settled_lock:
        kept = _settled.get(experiment_id)
    if kept is not None:
        return kept
    times = stage_timings(
        session,
        experiment_id=experiment_id,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
    )
    if terminal and all(s["finished"] == s["items"] for s in times["stages"]):
        with _settled_lock:
            _settled[experiment_id] = times
    return times


def stage_timings(
    session: Session,
    *,
    experiment_id: str,
    created_at: datetime | None,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> dict[str, Any]:
    """The experiment's ``timings`` (see the module docstring)."""
    wait = seconds_between(session, WorkItem.queued_at, WorkItem.started_at)
    ran = seconds_between(session, WorkItem.started_at, WorkItem.finished_at)
    mine = WorkItem.experiment_id == experiment_id
    first_start = func.min(WorkItem.started_at)
    groups = session.execute(
        select(
            WorkItem.stage,
            func.min(WorkItem.task),
            func.count(),
            func.count(WorkItem.finished_at),
            func.min(WorkItem.queued_at),
            first_start,
            func.max(WorkItem.finished_at),
            func.max(wait),
            func.count(wait),
            func.sum(ran),
            func.max(ran),
            seconds_between(session, first_start, func.max(WorkItem.finished_at)),
        )
        .where(mine)
        .group_by(WorkItem.stage)
        .order_by(WorkItem.stage)
    ).all()
    started = {int(g[0]): int(g[8]) for g in groups}  # items with a wait, per stage
    waits = _wait_medians(session, experiment_id, wait, started)
    stages, last_finish = [], None
    for stage, task, items, finished, first_q, first_s, last_f, wmax, _, rsum, rmax, wall in groups:
        first_wait = _first_wait(session, experiment_id, stage, wait) if first_s else None
        stages.append(
            {
                "stage": int(stage),
                "task": task,
                "items": int(items),
                "finished": int(finished),
                "wait": {"first": first_wait, "median": waits.get(stage), "max": _f(wmax)},
                "run": {"sum": _f(rsum), "max": _f(rmax)},
                "wall": _f(wall) if finished == items else None,
                "release": _gap(last_finish, first_q),
            }
        )
        last_finish = last_f if finished == items else None
    return {
        "submit_to_start": _gap(created_at, started_at),
        "submit_to_done": _gap(created_at, finished_at),
        "stages": stages,
    }


def _wait_medians(
    session: Session, experiment_id: str, wait: ColumnElement[float], started: dict[int, int]
) -> dict[int, float]:
    """The median queued -> started wait of each stage's started items (``started``: their
    count per stage): PostgreSQL's percentile_cont in one GROUP BY; elsewhere, per stage,
    the middle one or two of the waits in order (LIMIT/OFFSET)."""
    known = and_(
        WorkItem.experiment_id == experiment_id,
        WorkItem.started_at.is_not(None),
        WorkItem.queued_at.is_not(None),
    )
    if session.get_bind().dialect.name == "postgresql":
        median = func.percentile_cont(0.5).within_group(wait)
        rows = session.execute(
            select(WorkItem.stage, median).where(known).group_by(WorkItem.stage)
        ).all()
        return {int(stage): float(value) for stage, value in rows if value is not None}
    out = {}
    for stage, n in started.items():
        if n == 0:
            continue
        middle = (
            select(wait.label("wait"))
            .where(known, WorkItem.stage == stage)
            .order_by(wait)
            .limit(2 - n % 2)
            .offset((n - 1) // 2)
            .subquery()
        )
        value = session.scalar(select(func.avg(middle.c.wait)))
        if value is not None:
            out[stage] = float(value)
    return out


def _first_wait(
    session: Session, experiment_id: str, stage: int, wait: ColumnElement[float]
) -> float | None:
    """The wait of the stage's first item to start."""
    value = session.scalar(
        select(wait)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.stage == stage,
            WorkItem.started_at.is_not(None),
            WorkItem.queued_at.is_not(None),
        )
        .order_by(WorkItem.started_at)
        .limit(1)
    )
    return _f(value)


def _f(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


def _gap(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (as_utc(end) - as_utc(start)).total_seconds())


__all__: Sequence[str] = ("experiment_timings", "seconds_between", "stage_timings")
