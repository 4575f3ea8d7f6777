"""Webhook records on PostgreSQL: one notification per terminal status, in the same
transaction, on every path that ends an experiment; the attempt compare-and-set; the
reaper's pick of lost ones; and the signature and secret."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import crud, crud_recovery, crud_work, notify
from service.config import Settings
from service.models import Experiment, Notification, WorkItem, new_id, utcnow

HOOK = "http://127.0.0.1:9/hook"


def add_experiment(session: Session, notify_url: str | None = HOOK) -> Experiment:
    spec = {"kind": "optimum", "notify": notify_url} if notify_url else {"kind": "optimum"}
    exp = Experiment(id=new_id(), kind="optimum", status="running", spec=spec, spec_hash="h")
    session.add(exp)
    session.flush()
    return exp


def events(session: Session, exp: Experiment) -> list[tuple[str, str, int]]:
    session.flush()
    rows = session.scalars(select(Notification).where(Notification.experiment_id == exp.id))
    return [(n.event, n.status, n.attempts) for n in rows]


def test_success_failure_and_cancel_each_record_one_notification(session):
    done, failed, cancelled = (add_experiment(session) for _ in range(3))
    quiet = add_experiment(session, notify_url=None)
    crud_work.finish_experiment(session, experiment=done, result={})
    for _ in range(2):  # the second finds it finished already: no second notification
        crud_work.fail_experiment(session, experiment_id=failed.id, error_type="E", detail="d")
    crud.cancel_experiment(session, experiment_id=cancelled.id)
    with pytest.raises(crud.Conflict):
        crud.cancel_experiment(session, experiment_id=cancelled.id)
    crud_work.fail_experiment(session, experiment_id=quiet.id, error_type="E", detail="d")
    assert events(session, done) == [("succeeded", "pending", 0)]
    assert events(session, failed) == [("failed", "pending", 0)]
    assert events(session, cancelled) == [("cancelled", "pending", 0)]
    assert events(session, quiet) == []


def test_a_rolled_back_failure_leaves_no_notification(session):
    exp = add_experiment(session)
    nested = session.begin_nested()
    crud_work.fail_experiment(session, experiment_id=exp.id, error_type="E", detail="d")
    session.flush()
    nested.rollback()
    assert events(session, exp) == []


def test_a_second_kill_fails_the_experiment_and_notifies(session):
    exp = add_experiment(session)
    item = WorkItem(id=new_id(), experiment_id=exp.id, task="optimum", queue="cpu")
    session.add(item)
    session.flush()
    for prefix in ("a" * 20, "b" * 20):
        item.status, item.lease = "running", prefix + "0" * 12
        session.flush()
        crud_recovery.record_kill(
            session, item_id=item.id, lease_prefix=prefix, cause="was killed", max_kills=2
        )
    assert events(session, exp) == [("failed", "pending", 0)]


def test_an_attempt_is_claimed_once_and_settled(session):
    exp = add_experiment(session)
    crud_work.fail_experiment(session, experiment_id=exp.id, error_type="E", detail="why")
    session.flush()
    (row,) = session.scalars(select(Notification).where(Notification.experiment_id == exp.id))
    first = notify.claim(session, notification_id=row.id, expected=0)
    assert first is not None and first.attempts == 1 and first.event == "experiment.failed"
    assert first.experiment["status"] == "failed" and first.experiment["result"] is None
    assert notify.claim(session, notification_id=row.id, expected=0) is None  # a duplicate
    retry = notify.Outcome(500, "HTTP 500")
    assert not notify.settle(session, claim=first, outcome=retry, max_attempts=2)
    second = notify.claim(session, notification_id=row.id, expected=1)
    assert second is not None and second.attempts == 2
    assert notify.settle(session, claim=second, outcome=retry, max_attempts=2)
    session.refresh(row)
    assert (row.status, row.attempts, row.response_status) == ("failed", 2, 500)
    assert notify.claim(session, notification_id=row.id, expected=2) is None  # settled


def test_the_reaper_picks_notifications_whose_delivery_never_started(session, tmp_path):
    settings = Settings(benignity_home=tmp_path, notify_resend_after=60)
    exp = add_experiment(session)
    old, new, tried = (
        Notification(experiment_id=exp.id, event="failed", url=HOOK, attempts=a, created_at=t)
        for a, t in ((0, utcnow() - timedelta(seconds=61)), (0, utcnow()), (1, utcnow()))
    )
    session.add_all([old, new, tried])
    session.flush()
    due = [i for i, _ in notify.overdue(session, settings=settings) if i in (old.id, new.id)]
    assert due == [old.id]
    tried.created_at = utcnow() - timedelta(hours=1)  # its retries should have ended long ago
    session.flush()
    mine = {old.id, new.id, tried.id}
    assert {i for i, _ in notify.overdue(session, settings=settings) if i in mine} == {
        old.id,
        tried.id,
    }


def test_the_signature_is_an_hmac_of_the_time_and_the_body():
    header = notify.sign(b"key", b'{"a":1}', 1700000000)
    mac = hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"


def test_without_webhook_secret_one_is_made_once_readable_by_its_owner_only(tmp_path):
    settings = Settings(benignity_home=tmp_path / "home")
    key = notify.secret(settings)
    path = tmp_path / "home" / "webhook_secret"
    assert len(key) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert notify.secret(settings) == key
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert notify.secret(Settings(benignity_home=tmp_path, webhook_secret="set")) == b"set"


def test_notify_hosts_limits_the_hosts_a_url_may_name():
    anywhere, some = Settings(), Settings(notify_hosts="Hooks.example.org, 127.0.0.1")
    assert notify.refused_host("http://10.0.0.1/x", anywhere) is None
    assert notify.refused_host("https://hooks.example.org:8443/x", some) is None
    assert "NOTIFY_HOSTS" in (notify.refused_host("http://10.0.0.1/x", some) or "")
