"""Webhooks: a signed POST of an experiment's terminal status to its spec's `notify` URL.

Recording. Every path that ends an experiment (crud_work.finish_experiment and
fail_experiment, crud.cancel_experiment) calls `record` in the transaction that
sets the terminal status, so a notification row exists exactly when the status
changed. Once that transaction commits, the session hook below sends one
`benignity.notify` task per new row; a rollback sends nothing. A message that the
broker never took is sent again by the reaper (`overdue`), so none is lost.

Delivery (the task in workers/tasks.py). `claim` counts an attempt by a
compare-and-set on the attempts that the message expects, so duplicate messages
deliver once; `post` signs the body and sends it; `settle` records the answer. A
2xx is delivered; anything else (another status, a timeout, a refused connection,
a redirect) is retried with exponential backoff, and after NOTIFY_ATTEMPTS attempts
the notification is failed. Receivers should treat `Benignity-Delivery` (the
notification id) as an idempotency key: delivery is at least once.

Signature: `Benignity-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>." + raw body)>`, with WEBHOOK_SECRET or the secret generated once into
BENIGNITY_HOME/webhook_secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from celery import Celery
from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session, defer

from service import crud, crud_find
from service.config import Settings
from service.models import Experiment, Notification, utcnow
from service.schemas import Experiment as ExperimentOut

log = logging.getLogger("benignity.notify")

TASK = "benignity.notify"
QUEUE = "cpu"
#: Where a session keeps the ids of the notifications it inserted until it commits.
_NEW = "benignity.new_notifications"


def event_name(status: str) -> str:
    """The webhook event of a terminal status: experiment.succeeded, .failed, .cancelled."""
    return f"experiment.{status}"


def record(session: Session, *, experiment_id: str, spec: dict[str, Any], status: str) -> None:
    """Queue a notification of `status` when the spec names a `notify` URL (call it in the
    transaction that sets the terminal status)."""
    url = spec.get("notify")
    if url:
        session.add(Notification(experiment_id=experiment_id, event=status, url=url, attempts=0))


@event.listens_for(Session, "after_flush")
def _note_new(session: Session, _context: Any) -> None:
    ids = [obj.id for obj in session.new if isinstance(obj, Notification)]
    if ids:
        session.info.setdefault(_NEW, []).extend(ids)


@event.listens_for(Session, "after_commit")
def _send_new(session: Session) -> None:
    ids = session.info.pop(_NEW, None)
    if not ids:
        return
    try:
        send((i, 0) for i in ids)
    except Exception as exc:  # noqa: BLE001 - the reaper sends what the broker did not take
        log.warning("could not send notification(s) %s (%s); the reaper will", ids, exc)


@event.listens_for(Session, "after_rollback")
def _forget_new(session: Session) -> None:
    session.info.pop(_NEW, None)


def send(messages: Iterable[tuple[int, int]], app: Celery | None = None) -> None:
    """One `benignity.notify` message per (notification id, attempts made so far)."""
    from service import dispatch  # not at the top: dispatch imports crud, which imports us

    app = app or dispatch.client()
    for notification_id, attempts in messages:
        app.send_task(
            TASK, args=[notification_id, attempts], queue=QUEUE, routing_key=QUEUE, retry=False
        )


def refused_host(url: str, settings: Settings) -> str | None:
    """Why NOTIFY_HOSTS refuses `url`, or None when it may be called."""
    hosts = settings.notify_host_list
    host = (urlsplit(url).hostname or "").lower()
    if not hosts or host in hosts:
        return None
    return f"host {host!r} is not one that notify URLs may name (NOTIFY_HOSTS: {', '.join(hosts)})"


# --- signing ------------------------------------------------------------------------


def secret(settings: Settings) -> bytes:
    """WEBHOOK_SECRET, else the secret kept in BENIGNITY_HOME/webhook_secret, made once
    (mode 0600; the first process to link its file in place wins, the others read it)."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    path = settings.webhook_secret_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


def sign(key: bytes, body: bytes, at: int) -> str:
    """The Benignity-Signature header of `body` sent at unix time `at`."""
    mac = hmac.new(key, str(at).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


# --- delivery -----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One attempt at a notification, counted in `attempts`."""

    id: int
    url: str
    event: str
    attempts: int
    experiment: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's HTTP status, None when there was no answer
    error: str | None  # None when delivered


def claim(session: Session, *, notification_id: int, expected: int) -> Claim | None:
    """Count an attempt on a pending notification that has had `expected` attempts; None
    when it has not (another message got there first, or it is settled or gone)."""
    row = session.execute(
        update(Notification)
        .where(
            Notification.id == notification_id,
            Notification.status == "pending",
            Notification.attempts == expected,
        )
        .values(attempts=Notification.attempts + 1)
        .returning(Notification.experiment_id, Notification.event, Notification.url)
    ).first()
    if row is None:
        return None
    exp = session.get(Experiment, row.experiment_id, options=[defer(Experiment.result)])
    if exp is None:
        return None
    done = crud.progress_of(session, experiment_ids=[exp.id]).get(exp.id, 0)
    tags = crud_find.tags_of(session, experiment_ids=[exp.id]).get(exp.id, [])
    body = ExperimentOut.of(exp, done, tags=tags, result=False).model_dump(mode="json")
    return Claim(notification_id, row.url, event_name(row.event), expected + 1, body)


def post(claim: Claim, *, key: bytes, timeout: float) -> Outcome:
    """POST the signed event; redirects are not followed (a 3xx is not delivered)."""
    sent_at = utcnow().isoformat()
    body = json.dumps(
        {"event": claim.event, "experiment": claim.experiment, "sent_at": sent_at}
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "benignity-webhook",
        "Benignity-Event": claim.event,
        "Benignity-Delivery": str(claim.id),
        "Benignity-Signature": sign(key, body, int(time.time())),
    }
    try:
        answer = httpx.post(claim.url, content=body, headers=headers, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - no answer (or a URL httpx refuses): not delivered
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:2000])
    if 200 <= answer.status_code < 300:
        return Outcome(answer.status_code, None)
    return Outcome(answer.status_code, f"the receiver answered HTTP {answer.status_code}")


def settle(session: Session, *, claim: Claim, outcome: Outcome, max_attempts: int) -> bool:
    """Record an attempt's outcome; True when the notification is settled (delivered, or
    failed for good after `max_attempts`), False when it is to be retried."""
    values: dict[str, Any] = {"response_status": outcome.status, "error": outcome.error}
    if outcome.error is None:
        values.update(status="delivered", delivered_at=utcnow())
    elif claim.attempts >= max_attempts:
        values["status"] = "failed"
    session.execute(
        update(Notification)
        .where(Notification.id == claim.id, Notification.status == "pending")
        .values(**values)
    )
    return "status" in values


def of_experiment(session: Session, *, experiment_id: str) -> list[Notification]:
    """The experiment's notifications, oldest first."""
    query = select(Notification).where(Notification.experiment_id == experiment_id)
    return list(session.scalars(query.order_by(Notification.id)))


def overdue(session: Session, *, settings: Settings) -> list[tuple[int, int]]:
    """(id, attempts) of pending notifications whose delivery never started within
    NOTIFY_RESEND_AFTER seconds, or whose retries should have ended long ago."""
    now = utcnow()
    unsent = now - timedelta(seconds=settings.notify_resend_after)
    retries = settings.notify_backoff * (2 ** max(settings.notify_attempts - 1, 0))
    span = retries + settings.notify_attempts * settings.notify_timeout
    stuck = unsent - timedelta(seconds=span)
    query = select(Notification.id, Notification.attempts).where(
        Notification.status == "pending",
        or_(
            and_(Notification.attempts == 0, Notification.created_at < unsent),
            Notification.created_at < stuck,
        ),
    )
    return [(int(i), int(a)) for i, a in session.execute(query)]
