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

from service import crud_recovery, dispatch, fleet, notify
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
    return len(envelopes) + route_once(app) + resend_if_broker_lost(app) + notify_once(app)


def route_once(app: Celery | None = None) -> int:
    """Move queued work off queues that no live worker serves, to its fallback queue,
    and fail what has waited past QUEUE_DEADLINE; returns how many messages it sent.
    (The API runs the second half too, for a stack with no worker at all.)"""
    with session_scope() as session:
        envelopes = crud_recovery.reroute(session)
        failed = crud_recovery.fail_stranded(session, deadline=get_settings().queue_deadline)
    if envelopes:
        dispatch.send(envelopes, app)
        log.warning("moved %d work item(s) to a queue that a live worker serves", len(envelopes))
    for experiment_id in failed:
        log.warning("experiment %s failed: no live worker serves its queue", experiment_id)
    return len(envelopes)


#: When each overdue notification was last re-sent by this process (monotonic seconds),
#: so a queue that is slow to reach it gets one more message per NOTIFY_RESEND_AFTER.
_resent: dict[int, float] = {}


def notify_once(app: Celery | None = None) -> int:
    """Re-send the webhooks whose delivery never started (their message was lost, or the
    API could not reach the broker); returns how many messages it sent."""
    settings = get_settings()
    with session_scope() as session:
        due = notify.overdue(session, settings=settings)
    now = time.monotonic()
    for stale in [i for i, at in _resent.items() if at < now - settings.notify_resend_after]:
        del _resent[stale]
    due = [(i, attempts) for i, attempts in due if i not in _resent]
    if due:
        notify.send(due, app)
        _resent.update((i, now) for i, _ in due)
        log.warning("reaper re-sent %d notification(s)", len(due))
    return len(due)


class Presence:
    """This worker's row in the registry (service/fleet.py), written every third of
    WORKER_TTL from the reaper's thread."""

    def __init__(self, queues: list[str]) -> None:
        self.name, self.queues, self.next = fleet.worker_name(), queues, 0.0

    def beat(self, force: bool = False) -> None:
        if force or time.monotonic() >= self.next:
            with session_scope() as session:
                fleet.beat(session, name=self.name, queues=self.queues)
            self.next = time.monotonic() + get_settings().worker_ttl / 3

    def alive(self) -> None:
        """Touch BENIGNITY_HOME/worker.alive: `benignity healthcheck worker` reads its age."""
        try:
            path = get_settings().worker_alive_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            log.debug("could not touch the liveness file: %s", exc)

    def stopped(self) -> None:
        with session_scope() as session:
            fleet.stopped(session, name=self.name)


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


def reaper_loop(app: Celery, stop: threading.Event, presence: Presence) -> None:
    """Reap every REAPER_INTERVAL seconds or when woken, look at the broker every
    BROKER_CHECK_INTERVAL and keep this worker's presence, until `stop` is set."""
    settings = get_settings()
    interval = settings.reaper_interval
    tick = min(interval, BROKER_CHECK_INTERVAL, settings.worker_ttl / 3)
    next_pass, away, db_away = 0.0, False, False
    while True:
        woken = _wake.wait(tick)
        _wake.clear()
        if stop.is_set():
            return
        presence.alive()
        try:
            presence.beat()
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


def say_stopped(presence: Presence) -> None:
    try:
        presence.stopped()
    except Exception as exc:  # noqa: BLE001 - its row then ages out after WORKER_TTL
        log.warning("could not record this worker's stop: %s", exc)
