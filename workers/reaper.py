"""Re-enqueue work whose worker died, whose broker message was lost, or whose broker
lost every message (a Redis restarted empty)."""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

import kombu.exceptions
import redis
from celery import Celery

from service import crud_recovery, dispatch
from service.config import get_settings
from service.db import OUTAGES as DB_OUTAGES
from service.db import outage_cause, session_scope
from service.models import new_id, utcnow

log = logging.getLogger("benignity.reaper")

#: A key the reaper keeps in a Redis broker: when it is missing, the broker has lost its
#: data since the last look (restarted without persistence, or flushed), messages included.
SENTINEL = "benignity:broker-sentinel"
_wake = threading.Event()


def wake() -> None:
    """Make the reaper run a pass now (the consumer has just connected to the broker)."""
    _wake.set()


def reap_once(app: Celery | None = None) -> int:
    """One pass of the reaper; returns how many messages it sent."""
    settings = get_settings()
    with session_scope() as session:
        envelopes = crud_recovery.reap(
            session,
            heartbeat_timeout=settings.heartbeat_timeout,
            requeue_after=settings.requeue_after,
            window=settings.dispatch_window,
        )
    if envelopes:
        dispatch.send(envelopes, app)
        log.warning("reaper re-sent %d work item(s)", len(envelopes))
    return len(envelopes) + resend_if_broker_lost(app)


def resend_if_broker_lost(app: Celery | None = None) -> int:
    """Re-send every queued item at once when the broker has lost its messages.

    The first reaper (of any worker) to find the sentinel missing sets it again
    and re-sends what was queued before it looked; the others find it set.
    Returns how many messages it sent (0 for brokers other than Redis).
    """
    url = get_settings().broker_url
    if not url.startswith("redis"):
        return 0
    looked = utcnow()
    client = _redis(url)
    if not client.set(SENTINEL, new_id(), nx=True):
        return 0
    try:
        with session_scope() as session:
            envelopes = crud_recovery.resend_queued(session, sent_before=looked)
        dispatch.send(envelopes, app)
    except BaseException:
        client.delete(SENTINEL)  # the next pass tries again
        raise
    if envelopes:
        log.warning("the broker lost its messages; re-sent %d queued item(s)", len(envelopes))
    return len(envelopes)


@lru_cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


#: Seconds between looks at the broker's sentinel (one Redis SET NX), so that work lost
#: with the broker's data is sent again about this soon after it is back.
BROKER_CHECK_INTERVAL = 1.0


def reaper_loop(app: Celery, stop: threading.Event) -> None:
    """Reap every REAPER_INTERVAL seconds or when woken, and look at the broker every
    BROKER_CHECK_INTERVAL, until `stop` is set."""
    interval = get_settings().reaper_interval
    next_pass, away, db_away = 0.0, False, False
    while True:
        woken = _wake.wait(min(interval, BROKER_CHECK_INTERVAL))
        _wake.clear()
        if stop.is_set():
            return
        try:
            if woken or time.monotonic() >= next_pass:
                next_pass = time.monotonic() + interval
                reap_once(app)
            else:
                resend_if_broker_lost(app)
        except (redis.ConnectionError, kombu.exceptions.OperationalError) as exc:
            if not away:
                log.warning("the broker is away (%s); looking again each second", exc)
            away = True
        except DB_OUTAGES as exc:  # one line when the database goes away, one when it is back
            if not db_away:
                log.warning(
                    "the database is away (%s); the reaper retries every %g s",
                    outage_cause(exc),
                    interval,
                )
            db_away = True
        except Exception:  # noqa: BLE001 - anything else must not kill the loop either
            log.exception("reaper pass failed; retrying in %g s", interval)
        else:
            if away:
                log.warning("the broker is back")
            if db_away:
                log.warning("the database is back")
            away = db_away = False
