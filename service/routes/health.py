"""Liveness, readiness and metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service import dispatch, fleet
from service.config import get_settings
from service.db import Database
from service.deps import DatabaseDep
from service.models import Experiment, WorkItem, as_utc, utcnow
from service.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger("benignity.api")
EXPERIMENTS = Gauge("benignity_experiments", "Experiments by kind and status", ["kind", "status"])
WORK_ITEMS = Gauge(
    "benignity_work_items", "Work items by queue, task and status", ["queue", "task", "status"]
)
WORKERS = Gauge("benignity_workers", "Live workers by queue they serve", ["queue"])
OLDEST_QUEUED = Gauge(
    "benignity_oldest_queued_seconds",
    "Age of the oldest work item waiting for a worker, by queue (0 when none waits)",
    ["queue"],
)


#: Seconds a readiness check may take before it counts as failed.
CHECK_TIMEOUT = 3.0


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up (answered on the event loop: it never waits behind a request)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(db: DatabaseDep) -> JSONResponse:
    """The database and the broker answer; the native kernel's last build is reported."""
    checks = {
        "database": await _check(
            lambda: db.run(lambda s: s.execute(text("SELECT 1")), abandon_on_cancel=True)
        ),
        "broker": await _check(
            lambda: anyio.to_thread.run_sync(_ping_broker, abandon_on_cancel=True)
        ),
    }
    ok = all(v == "ok" for v in checks.values())
    checks["native_kernel"] = _native_kernel_status()  # informative: training falls back to torch
    checks["workers"] = await _workers_line(db)  # informative: the API serves without workers
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            await probe()
        return "ok"
    except TimeoutError:
        return f"error: no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure
        return f"error: {type(exc).__name__}"


async def _workers_line(db: Database) -> str:
    """Live workers per queue, e.g. "cpu: 2, gpu: 0"."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            live = await db.run(fleet.live_workers, abandon_on_cancel=True)
    except Exception as exc:  # noqa: BLE001 - informative only
        return f"unknown: {type(exc).__name__}"
    return ", ".join(
        f"{q}: {live[q]}" for q in (*dispatch.QUEUES, *sorted(set(live) - set(dispatch.QUEUES)))
    )


def _ping_broker() -> None:
    with dispatch.client().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _native_kernel_status() -> str:
    """What the workers' last build of the native training kernel reported (shared home)."""
    path = get_settings().native_cache_dir / "build-status.json"
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return "not built yet"
    except (OSError, ValueError) as exc:
        return f"unknown: {type(exc).__name__}"
    if status.get("ok"):
        return "ok"
    return f"build failed: {str(status.get('error', ''))[:500]}"


@router.get("/metrics")
async def metrics(db: DatabaseDep) -> Response:
    """Prometheus text."""
    return Response(await db.run(_collect), media_type=CONTENT_TYPE_LATEST)


def _collect(session: Session) -> bytes:
    query = select(Experiment.kind, Experiment.status, func.count()).group_by(
        Experiment.kind, Experiment.status
    )
    EXPERIMENTS.clear()
    for kind, status, count in session.execute(query):
        EXPERIMENTS.labels(kind, status).set(count)
    _work_metrics(session)
    live = fleet.live_workers(session)
    for queue in {*dispatch.QUEUES, *live}:
        WORKERS.labels(queue).set(live[queue])
    return generate_latest()


def _work_metrics(session: Session) -> None:
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
