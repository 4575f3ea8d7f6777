"""create_app(): routers, middleware, error handlers and the start-up checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.orm import Session

from service import crud_recovery, openapi, problems, ui
from service.config import Settings, get_settings
from service.db import get_database, get_engine
from service.deps import RateLimit, known_query, require_token
from service.middleware import BodyLimit, JsonOnly, Metrics, PollFastPath
from service.pollcache import PollCache
from service.routes import experiments, exports, health, notifications, reports
from service.watch import Watcher

log = logging.getLogger("benignity.api")
T = TypeVar("T")


def create_app() -> FastAPI:
    """The benignity HTTP API."""
    settings = get_settings()
    app = FastAPI(
        title="benignity",
        version="1.0.0",
        summary="Run and certify loss-landscape experiments on two-layer ReLU networks.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.rate_limit = RateLimit(settings.rate_limit)
    app.state.polls = PollCache(settings.poll_cache_seconds)
    app.state.watcher = Watcher(get_database, app.state.polls, settings.watch_interval)
    app.state.drawing = anyio.CapacityLimiter(2)  # figures drawn at once (matplotlib is heavy)
    problems.install(app)
    app.include_router(health.router)
    app.include_router(ui.router)  # the page and its assets; its data comes from /v1
    checks = [Depends(require_token), Depends(known_query)]
    app.include_router(experiments.router, dependencies=checks)
    app.include_router(reports.router, dependencies=checks)
    app.include_router(exports.router, dependencies=checks)
    app.include_router(notifications.router, dependencies=checks)
    openapi.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(JsonOnly)
    app.add_middleware(PollFastPath)
    app.add_middleware(Metrics)
    return app


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    await anyio.to_thread.run_sync(check_pool, get_settings())
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_watch_stranded)
        yield
        tasks.cancel_scope.cancel()


async def _watch_stranded() -> None:
    """Every REAPER_INTERVAL, fail experiments whose work no live worker could take
    within QUEUE_DEADLINE (the workers' reapers do it too; this covers a stack that
    has no worker at all)."""
    settings = get_settings()
    away = False
    while True:
        await anyio.sleep(settings.reaper_interval)
        try:
            failed = await get_database().run(
                lambda s: _commit(
                    s, crud_recovery.fail_stranded(s, deadline=settings.queue_deadline)
                )
            )
        except Exception as exc:  # noqa: BLE001 - requests report outages; log one line
            if not away:
                log.warning("could not look for stranded work: %s", exc)
            away = True
            continue
        away = False
        for experiment_id in failed:
            log.warning("experiment %s failed: no live worker serves its queue", experiment_id)


def _commit(session: Session, value: T) -> T:
    session.commit()
    return value


def check_pool(settings: Settings) -> None:
    """Refuse to start when the connection pool could exhaust PostgreSQL's connections.

    Logs the pool size. A database that does not answer yet is not an error here:
    requests get 503 until it does.
    """
    pool = settings.db_pool_size + settings.db_max_overflow
    log.info(
        "database pool: %d connections + %d overflow (DB_POOL_SIZE, DB_MAX_OVERFLOW)",
        settings.db_pool_size,
        settings.db_max_overflow,
    )
    if settings.is_sqlite:
        return
    try:
        with get_engine().connect() as conn:
            allowed = int(conn.execute(text("SHOW max_connections")).scalar_one())
            reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar_one())
    except Exception as exc:  # noqa: BLE001 - an outage at start-up is reported, not fatal
        log.warning("could not check the pool against the database: %s", exc)
        return
    if pool > allowed - reserved:
        raise RuntimeError(
            f"DB_POOL_SIZE + DB_MAX_OVERFLOW = {pool} is over the {allowed - reserved} "
            "connections PostgreSQL allows (max_connections - superuser_reserved_connections)"
        )
