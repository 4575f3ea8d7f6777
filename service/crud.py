"""Every query of the service, as keyword-only functions."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import Field, TypeAdapter
from sqlalchemy import Row, Text, and_, cast, func, or_, select, update
from sqlalchemy.orm import Session, defer, undefer

from service import fleet, notify
from service.crud_find import Filters, narrowed, tag_text
from service.models import (
    CensusCone,
    CurveChunk,
    Experiment,
    ExperimentTag,
    Run,
    WorkItem,
    as_utc,
    new_id,
    utcnow,
)

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE_ITEMS = ("queued", "waiting", "blocked", "running")
T = TypeVar("T")


class Conflict(Exception):
    """The requested transition is not allowed from the current state."""


@dataclass(frozen=True)
class Envelope:
    """What a broker message must carry to start a work item."""

    item_id: str
    queue: str
    time_limit: float | None = None  # hard limit in seconds; the soft limit comes before it


# --- cursors ---------------------------------------------------------------------------


#: Largest value of an Integer column (PostgreSQL int4); bounds every integer from a client.
INT_MAX = 2**31 - 1
Int32 = Annotated[int, Field(strict=True, ge=0, le=INT_MAX)]
#: What every id (experiment, run, work item) looks like: models.new_id's uuid4 hex.
ID_PATTERN = "[0-9a-f]{32}"
Id = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]

#: The shape of each kind of cursor: (created_at, id) of experiments, a run index,
#: (width, sample) of a census cone.
EXPERIMENT_CURSOR: TypeAdapter[tuple[datetime, str]] = TypeAdapter(tuple[datetime, Id])
RUN_CURSOR: TypeAdapter[tuple[int]] = TypeAdapter(tuple[Int32])
CONE_CURSOR: TypeAdapter[tuple[int, int]] = TypeAdapter(tuple[Int32, Int32])


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, shape: TypeAdapter[T]) -> T:
    """Inverse of encode_cursor, checked against `shape`; ValueError on anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return shape.validate_json(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the caller's bad input
        raise ValueError("malformed cursor: pass back a next_cursor exactly as returned") from exc


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
    window: int = 1_000_000,
) -> tuple[Experiment, list[Envelope]]:
    """Insert an experiment with its work items and runs; returns the messages to send.

    Each item may carry `time_limit` (hard seconds) and `memory_estimate` (bytes)
    from the plan. Of the first stage's items, `window` are queued (sent) now and
    the rest wait in the database (crud_work.top_up sends them as others finish).
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
        name=spec.get("name"),
        notes=spec.get("notes"),
        **dataset_columns(spec),
    )
    session.add(exp)
    session.add_all(ExperimentTag(experiment_id=exp.id, tag=t) for t in spec.get("tags") or [])
    now = utcnow()
    envelopes: list[Envelope] = []
    for item in items:
        stage = int(item.get("stage", 0))
        status = "blocked" if stage else ("queued" if len(envelopes) < window else "waiting")
        queue, fallback = item.get("queue", "cpu"), item.get("fallback")
        if status == "queued":
            queue, fallback = fleet.pick(session, queue, fallback)
        row = WorkItem(
            id=new_id(),
            experiment_id=exp.id,
            stage=stage,
            task=item["task"],
            queue=queue,
            fallback=fallback,
            payload=item.get("payload", {}),
            status=status,
            enqueued_at=now if status == "queued" else None,
            queued_at=now if status == "queued" else None,
            progress_total=int(item.get("progress_total", 1)),
            attempts=0,
            requeues=0,
            progress_done=0,
            kills=0,
            time_limit=item.get("time_limit"),
            memory_estimate=item.get("memory_estimate"),
        )
        session.add(row)
        if status == "queued":
            envelopes.append(Envelope(row.id, row.queue, row.time_limit))
    for index, run in enumerate(runs):
        session.add(Run(id=new_id(), experiment_id=exp.id, index=index, params=run))
    session.flush()
    return exp, envelopes


def dataset_columns(spec: dict[str, Any]) -> dict[str, Any]:
    """The generator, n and d of a spec's dataset, as the experiments table keeps them."""
    ds = spec.get("dataset") or {}
    generator = ds.get("generator")
    if generator == "custom":
        return {"generator": generator, "n": len(ds["X"]), "d": len(ds["X"][0])}
    n = ds.get("d") if generator == "theorem2" else ds.get("n")
    return {"generator": generator, "n": n, "d": ds.get("d")}


def get_experiment(
    session: Session, *, experiment_id: str, tenant: str | None = None
) -> Experiment | None:
    """The experiment, if it exists and belongs to `tenant` (None: any tenant)."""
    exp = session.get(Experiment, experiment_id)
    if exp is None or (tenant is not None and exp.tenant != tenant):
        return None
    return exp


def snapshot(
    session: Session, *, experiment_id: str, tenant: str | None
) -> Row[*tuple[Any, ...]] | None:
    """An experiment's columns, its progress (`done`), its tags joined by commas
    (`tag_text`, crud_find.split_tags reads it) and its stored result as the JSON text
    the database holds (`result_text`, never parsed), in one query.

    None when it does not exist or is not `tenant`'s (None: any tenant).
    """
    done = (
        select(func.coalesce(func.sum(WorkItem.progress_done), 0))
        .where(WorkItem.experiment_id == Experiment.id)
        .scalar_subquery()
    )
    columns = [c for c in Experiment.__table__.c if c.name != "result"]
    query = select(
        *columns,
        done.label("done"),
        tag_text().label("tag_text"),
        cast(Experiment.result, Text).label("result_text"),
    ).where(Experiment.id == experiment_id)
    if tenant is not None:
        query = query.where(Experiment.tenant == tenant)
    return session.execute(query).one_or_none()


def find_by_idempotency_key(session: Session, *, key: str, tenant: str) -> Experiment | None:
    query = select(Experiment).where(Experiment.tenant == tenant, Experiment.idempotency_key == key)
    return session.scalars(query).first()


def active_items(session: Session, *, tenant: str) -> int:
    """Work items of the tenant's experiments that are queued, blocked or running."""
    query = (
        select(func.count())
        .select_from(WorkItem)
        .join(Experiment, Experiment.id == WorkItem.experiment_id)
        .where(Experiment.tenant == tenant, WorkItem.status.in_(ACTIVE_ITEMS))
    )
    return int(session.scalar(query) or 0)


def list_experiments(
    session: Session,
    *,
    filters: Filters,
    limit: int,
    cursor: str | None,
    tenant: str | None = None,
    result_bytes: int | None = None,
) -> tuple[list[Experiment], str | None]:
    """Newest first, keyset-paginated on (created_at, id); only `tenant`'s unless None,
    and only those that pass `filters`.

    Results are loaded only when `result_bytes` is given, and then the page ends
    early (always keeping its first item) once the stored results it carries pass
    that many bytes, so one page never holds many large results in memory.
    """
    query = narrowed(select(Experiment).options(defer(Experiment.result)), filters)
    if tenant is not None:
        query = query.where(Experiment.tenant == tenant)
    if cursor:
        at, last_id = decode_cursor(cursor, EXPERIMENT_CURSOR)
        at = as_utc(at)
        query = query.where(
            or_(
                Experiment.created_at < at,
                and_(Experiment.created_at == at, Experiment.id < last_id),
            )
        )
    query = query.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    if result_bytes is not None and rows:
        kept = _within(session, rows, result_bytes)
        more, rows = more or len(kept) < len(rows), kept
        session.scalars(
            select(Experiment)
            .where(Experiment.id.in_([r.id for r in rows]))
            .options(undefer(Experiment.result))
        ).all()  # fills in the deferred results of these rows
    nxt = encode_cursor(as_utc(rows[-1].created_at).isoformat(), rows[-1].id) if more else None
    return rows, nxt


def _within(session: Session, rows: list[Experiment], budget: int) -> list[Experiment]:
    """The longest prefix of `rows` (at least one) whose stored results fit in `budget` bytes."""
    size = func.coalesce(func.length(cast(Experiment.result, Text)), 0)
    query = select(Experiment.id, size).where(Experiment.id.in_([r.id for r in rows]))
    sizes: dict[str, int] = {eid: int(n) for eid, n in session.execute(query)}
    total = 0
    for i, row in enumerate(rows):
        total += sizes.get(row.id, 0)
        if total > budget and i > 0:
            return rows[:i]
    return rows


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
    notify.record(session, experiment_id=experiment_id, spec=exp.spec, status="cancelled")
    session.execute(
        update(WorkItem)
        .where(
            WorkItem.experiment_id == experiment_id,
            WorkItem.status.in_(("queued", "waiting", "blocked")),
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
    session: Session,
    *,
    experiment_id: str,
    verdict: str | None,
    limit: int,
    cursor: str | None,
    params: Mapping[str, float] | None = None,
) -> tuple[list[Run], str | None]:
    """In grid order, keyset-paginated on the run index; `params` keeps the runs whose
    params hold each value (floats equal to 1e-9 relative, as stored JSON round-trips)."""
    # a page never needs the curves (a finished sweep's can be megabytes a page)
    query = select(Run).options(defer(Run.curve)).where(Run.experiment_id == experiment_id)
    if verdict:
        query = query.where(Run.verdict == verdict)
    for key, value in (params or {}).items():
        stored = Run.params[key].as_float()
        slack = abs(value) * 1e-9
        query = query.where(stored >= value - slack, stored <= value + slack)
    if cursor:
        (after,) = decode_cursor(cursor, RUN_CURSOR)
        query = query.where(Run.index > after)
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


def run_chunks(session: Session, *, experiment_id: str, index: int) -> tuple[float, list[bytes]]:
    """The curve chunks of the block that holds run `index`, in the order written, and
    their optimum (nan without chunks): a running run's partial curve."""
    query = (
        select(CurveChunk.optimum, CurveChunk.data)
        .where(
            CurveChunk.experiment_id == experiment_id,
            CurveChunk.first_run <= index,
            CurveChunk.stop_run > index,
        )
        .order_by(CurveChunk.item_id, CurveChunk.seq)
    )
    rows = session.execute(query).all()
    return (rows[0][0] if rows else float("nan")), [data for _, data in rows]


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
        w, smp = decode_cursor(cursor, CONE_CURSOR)
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
