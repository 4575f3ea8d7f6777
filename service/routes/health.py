"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select, text

from service import dispatch
from service.deps import SessionDep
from service.models import Experiment
from service.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger("benignity.api")
EXPERIMENTS = Gauge("benignity_experiments", "Experiments by kind and status", ["kind", "status"])


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
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
