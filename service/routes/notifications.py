"""The webhook deliveries of an experiment (its spec's `notify` URL; service/notify.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from service import notify
from service.deps import DatabaseDep, PrincipalDep
from service.models import Notification as NotificationRow
from service.models import as_utc
from service.responses import body_of, json_response
from service.routes.experiments import found

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])


class Notification(BaseModel):
    """One webhook: a signed POST of a terminal status to the spec's `notify` URL."""

    id: int = Field(description="Sent as the Benignity-Delivery header.")
    experiment_id: str
    event: Literal["experiment.succeeded", "experiment.failed", "experiment.cancelled"]
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="POSTs made so far.")
    response_status: int | None = Field(description="The receiver's HTTP status at the last try.")
    error: str | None = Field(description="Why the last try was not delivered.")
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: NotificationRow) -> Notification:
        return cls(
            id=row.id,
            experiment_id=row.experiment_id,
            event=notify.event_name(row.event),  # type: ignore[arg-type]
            url=row.url,
            status=row.status,  # type: ignore[arg-type]
            attempts=row.attempts,
            response_status=row.response_status,
            error=row.error,
            created_at=as_utc(row.created_at),
            delivered_at=row.delivered_at and as_utc(row.delivered_at),
        )


class NotificationList(BaseModel):
    items: list[Notification]


@router.get(
    "/{experiment_id}/notifications",
    response_model=NotificationList,
    responses={304: {}, 404: {}},
)
async def list_notifications(
    request: Request, experiment_id: str, db: DatabaseDep, who: PrincipalDep
) -> Response:
    """The experiment's webhook deliveries, oldest first."""

    def read(session: Session) -> bytes:
        found(session, experiment_id, who)
        rows = notify.of_experiment(session, experiment_id=experiment_id)
        return body_of(NotificationList(items=[Notification.of(r) for r in rows]))

    return json_response(request, await db.run(read))
