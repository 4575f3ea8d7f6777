"""SQLAlchemy 2 tables. Alembic reads Base.metadata."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Experiment(Base):
    """One submitted spec and, once done, its result."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress_total: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    spec_hash: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: The spec's name, and its notes as last changed by PATCH.
    name: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    #: The dataset's generator, n and d, copied from the spec so that lists filter on them.
    generator: Mapped[str | None] = mapped_column(String(16))
    n: Mapped[int | None] = mapped_column(Integer)
    d: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_experiments_created", "created_at", "id"),
        Index("ix_experiments_tenant_created", "tenant", "created_at", "id"),
        Index("ix_experiments_tenant_idempotency", "tenant", "idempotency_key", unique=True),
    )


class WorkItem(Base):
    """A unit of work for a Celery task; the database, not the broker, owns its state.

    Status moves blocked -> queued -> running -> done (or failed / cancelled) by
    compare-and-set updates. `lease` names the attempt that holds a running item.
    """

    __tablename__ = "work_items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[int] = mapped_column(Integer, default=0)
    task: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int] = mapped_column(BigInteger, default=1)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    #: Hard time limit in seconds (Celery's time_limit), from the plan's estimate.
    time_limit: Mapped[float | None] = mapped_column(Float)
    #: The plan's estimate of the item's peak memory in bytes.
    memory_estimate: Mapped[int | None] = mapped_column(BigInteger)
    #: Times a worker process died by a signal (OOM killer) or hit the hard limit on it.
    kills: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The other queue the item may run on, used when no live worker serves `queue`.
    fallback: Mapped[str | None] = mapped_column(String(16))
    #: When the item was first queued (sent to a worker).
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When a worker last claimed the item, and when it finished (done, failed, cancelled).
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Worker(Base):
    """A worker process and the queues it serves; its reaper refreshes `seen_at`."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    queues: Mapped[str] = mapped_column(String(255))  # comma-separated
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Run(Base):
    """One cell of an experiment's grid: a census width or a training run."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    verdict: Mapped[str | None] = mapped_column(String(32), index=True)
    final: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    curve: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: A running run's latest curve point (epoch, loss, gap, grad_norm_sq), at its batch's
    #: last checkpoint.
    latest: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_runs_experiment_index", "experiment_id", "index", unique=True),)


class CurveChunk(Base):
    """Curve points of a training batch's runs [first_run, stop_run), recorded between two
    of its checkpoints (seq counts them); see service.curve_chunks."""

    __tablename__ = "curve_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    first_run: Mapped[int] = mapped_column(Integer)
    stop_run: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    #: The batch's optimum, for the gap column.
    optimum: Mapped[float] = mapped_column(Float)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_curve_chunks_item", "item_id", "seq", "first_run", unique=True),
        Index("ix_curve_chunks_runs", "experiment_id", "first_run"),
    )


class CensusCone(Base):
    """One sampled activation cone of a census, with its value and verdict."""

    __tablename__ = "census_cones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    width: Mapped[int] = mapped_column(Integer)
    sample: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)
    gap: Mapped[float] = mapped_column(Float)
    covered: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_census_cones_key", "experiment_id", "width", "sample", unique=True),
        Index("ix_census_cones_verdict", "experiment_id", "verdict"),
    )


class ExperimentTag(Base):
    """One tag of an experiment (the spec's `tags`, as last changed by PATCH)."""

    __tablename__ = "experiment_tags"

    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index("ix_experiment_tags_tag", "tag", "experiment_id"),)


class Notification(Base):
    """A signed POST of an experiment's terminal status to its spec's `notify` URL."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(16))  # the terminal status
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
