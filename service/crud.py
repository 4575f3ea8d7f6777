"""Every query of the service, as keyword-only functions."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.models import CensusCone, Experiment, Run, WorkItem, new_id, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")


class Conflict(Exception):
    """The requested transition is not allowed from the current state."""


@dataclass(frozen=True)
class Envelope:
    """What a broker message must carry to start a work item."""

    item_id: str
    queue: str
    time_limit: float | None = None  # hard limit in seconds; the soft limit comes before it


# --- cursors ---------------------------------------------------------------------------


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """Inverse of encode_cursor; raises ValueError on a malformed cursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the caller's bad input
        raise ValueError("malformed cursor") from exc
    if not isinstance(parts, list):
        raise ValueError("malformed cursor")
    return parts


# --- experiments -----------------------------------------------------------------------


def create_experiment(
    session: Session,
    *,
    kind: str,
    spec: dict[str, Any],
    spec_hash: str,
    idempotency_key: str | None,
    items: Sequence[dict[str, Any]],
    runs: Sequence[dict[str, Any]],
    tenant: str = "",
) -> tuple[Experiment, list[Envelope]]:
    """Insert an experiment with its work items and runs; returns the messages to send.

    Each item may carry `time_limit` (hard seconds) and `memory_estimate` (bytes)
    from the plan.
    """
    exp = Experiment(
        id=new_id(),
        tenant=tenant,
        kind=kind,
        status="queued",
        spec=spec,
        spec_hash=spec_hash,
        idempotency_key=idempotency_key,
        progress_total=sum(int(i.get("progress_total", 1)) for i in items),
        created_at=utcnow(),
    )
    session.add(exp)
    now = utcnow()
    envelopes = []
    for item in items:
        stage = int(item.get("stage", 0))
        row = WorkItem(
            id=new_id(),
            experiment_id=exp.id,
            stage=stage,
            task=item["task"],
            queue=item.get("queue", "cpu"),
            payload=item.get("payload", {}),
            status="queued" if stage == 0 else "blocked",
            enqueued_at=now if stage == 0 else None,
            progress_total=int(item.get("progress_total", 1)),
            attempts=0,
            requeues=0,
            progress_done=0,
            kills=0,
            time_limit=item.get("time_limit"),
            memory_estimate=item.get("memory_estimate"),
        )
        session.add(row)
        if stage == 0:
            envelopes.append(Envelope(row.id, row.queue, row.time_limit))
    for index, run in enumerate(runs):
        session.add(Run(id=new_id(), experiment_id=exp.id, index=index, params=run))
    session.flush()
    return exp, envelopes


def get_experiment(session: Session, *, experiment_id: str) -> Experiment | None:
    return session.get(Experiment, experiment_id)


def find_by_idempotency_key(session: Session, *, key: str) -> Experiment | None:
    return session.scalars(select(Experiment).where(Experiment.idempotency_key == key)).first()


def list_experiments(
    session: Session, *, kind: str | None, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Experiment], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Experiment)
    if kind:
        query = query.where(Experiment.kind == kind)
    if status:
        query = query.where(Experiment.status == status)
    if cursor:
        created, last_id = decode_cursor(cursor)
        at = datetime.fromisoformat(created)
        query = query.where(
            or_(
                Experiment.created_at < at,
                and_(Experiment.created_at == at, Experiment.id < last_id),
            )
        )
    query = query.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id)
    return rows, nxt


def progress_of(session: Session, *, experiment_ids: Sequence[str]) -> dict[str, int]:
    """Units of work done per experiment, summed over its work items."""
    if not experiment_ids:
        return {}
    query = (
        select(WorkItem.experiment_id, func.coalesce(func.sum(WorkItem.progress_done), 0))
        .where(WorkItem.experiment_id.in_(experiment_ids))
        .group_by(WorkItem.experiment_id)
    )
    return {eid: int(done) for eid, done in session.execute(query)}


def cancel_experiment(session: Session, *, experiment_id: str) -> Experiment | None:
    """Mark an unfinished experiment cancelled; running work stops at its next check."""
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        return None
    res = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.not_in(TERMINAL))
        .values(status="cancelled", finished_at=utcnow())
    )
    if res.rowcount == 0:  # type: ignore[attr-defined]
        raise Conflict(f"experiment {experiment_id} has already finished ({exp.status})")
    session.execute(
        update(WorkItem)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.status.in_(("queued", "blocked")),
        )
        .values(status="cancelled")
    )
    session.execute(
        update(Run)
        .where(Run.experiment_id == experiment_id, Run.status.in_(("queued", "running")))
        .values(status="cancelled")
    )
    session.refresh(exp)
    return exp


# --- runs ------------------------------------------------------------------------------


def list_runs(
    session: Session, *, experiment_id: str, verdict: str | None, limit: int, cursor: str | None
) -> tuple[list[Run], str | None]:
    """In grid order, keyset-paginated on the run index."""
    query = select(Run).where(Run.experiment_id == experiment_id)
    if verdict:
        query = query.where(Run.verdict == verdict)
    if cursor:
        (after,) = decode_cursor(cursor)
        query = query.where(Run.index > int(after))
    rows = list(session.scalars(query.order_by(Run.index).limit(limit + 1)))
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].index)
    return rows, nxt


def get_run(session: Session, *, experiment_id: str, run_id: str) -> Run | None:
    """The run, curve included, when it belongs to the experiment."""
    run = session.get(Run, run_id)
    return run if run is not None and run.experiment_id == experiment_id else None


def all_runs(session: Session, *, experiment_id: str) -> list[Run]:
    query = select(Run).where(Run.experiment_id == experiment_id).order_by(Run.index)
    return list(session.scalars(query))


# --- census cones ----------------------------------------------------------------------


def list_cones(
    session: Session,
    *,
    experiment_id: str,
    width: int | None,
    verdict: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[CensusCone], str | None]:
    """A census's cones by (width, sample), keyset-paginated."""
    query = select(CensusCone).where(CensusCone.experiment_id == experiment_id)
    if width is not None:
        query = query.where(CensusCone.width == width)
    if verdict:
        query = query.where(CensusCone.verdict == verdict)
    if cursor:
        w, smp = (int(p) for p in decode_cursor(cursor))
        query = query.where(
            or_(CensusCone.width > w, and_(CensusCone.width == w, CensusCone.sample > smp))
        )
    order = (CensusCone.width, CensusCone.sample)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].width, rows[-1].sample)
    return rows, nxt
