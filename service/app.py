"""create_app(): routers, middleware and error handlers."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from service import problems
from service.config import get_settings
from service.deps import require_token
from service.middleware import BodyLimit, Metrics
from service.routes import experiments, health, reports


def create_app() -> FastAPI:
    """The benignity HTTP API."""
    settings = get_settings()
    app = FastAPI(
        title="benignity",
        version="1.0.0",
        summary="Run and certify loss-landscape experiments on two-layer ReLU networks.",
    )
    problems.install(app)
    app.include_router(health.router)
    app.include_router(experiments.router, dependencies=[Depends(require_token)])
    app.include_router(reports.router, dependencies=[Depends(require_token)])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Metrics)
    return app
