"""Re-enqueue work whose worker died or whose broker message was lost."""

from __future__ import annotations

import logging
import threading

from celery import Celery

from service import crud_work, dispatch
from service.config import get_settings
from service.db import session_scope

log = logging.getLogger("benignity.reaper")


def reap_once(app: Celery | None = None) -> int:
    """One pass of the reaper; returns how many messages it sent."""
    settings = get_settings()
    with session_scope() as session:
        envelopes = crud_work.reap(
            session,
            heartbeat_timeout=settings.heartbeat_timeout,
            requeue_after=settings.requeue_after,
        )
    if envelopes:
        dispatch.send(envelopes, app)
        log.warning("reaper re-sent %d work item(s)", len(envelopes))
    return len(envelopes)


def reaper_loop(app: Celery, stop: threading.Event) -> None:
    """Run reap_once every REAPER_INTERVAL seconds until `stop` is set."""
    interval = get_settings().reaper_interval
    while not stop.wait(interval):
        try:
            reap_once(app)
        except Exception:  # noqa: BLE001 - a broker or database hiccup must not kill the loop
            log.exception("reaper pass failed; retrying in %g s", interval)
