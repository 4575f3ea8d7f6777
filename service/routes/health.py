"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select, text

from service import dispatch
from service.deps import SessionDep
from service.models import Experiment, WorkItem, as_utc, utcnow
from service.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger("benignity.api")
EXPERIMENTS = Gauge("benignity_experiments", "Experiments by kind and status", ["kind", "status"])
WORK_ITEMS = Gauge(
    "benignity_work_items", "Work items by queue, task and status", ["queue", "task", "status"]
)
OLDEST_QUEUED = Gauge(
    "benignity_oldest_queued_seconds",
    "Age of the oldest work item waiting for a worker, by queue (0 when none waits)",
    ["queue"],
)


@router.get("/healthz")
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(session: SessionDep) -> JSONResponse:
    """The database and the broker answer."""
    checks = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with dispatch.client().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(session: SessionDep) -> Response:
    """Prometheus text."""
    query = select(Experiment.kind, Experiment.status, func.count()).group_by(
        Experiment.kind, Experiment.status
    )
    EXPERIMENTS.clear()
    for kind, status, count in session.execute(query):
        EXPERIMENTS.labels(kind, status).set(count)
    _work_metrics(session)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _work_metrics(session: SessionDep) -> None:
    """Queue depth and lag: what an operator alerts on when workers are missing or stuck."""
    columns = (WorkItem.queue, WorkItem.task, WorkItem.status)
    WORK_ITEMS.clear()
    for queue, task, status, count in session.execute(
        select(*columns, func.count()).group_by(*columns)
    ):
        WORK_ITEMS.labels(queue, task, status).set(count)
    oldest = select(WorkItem.queue, func.min(WorkItem.enqueued_at)).where(
        WorkItem.status == "queued"
    )
    OLDEST_QUEUED.clear()
    now = utcnow()
    for queue in dispatch.QUEUES:
        OLDEST_QUEUED.labels(queue).set(0.0)
    for queue, since in session.execute(oldest.group_by(WorkItem.queue)):
        if since is not None:
            OLDEST_QUEUED.labels(queue).set((now - as_utc(since)).total_seconds())
