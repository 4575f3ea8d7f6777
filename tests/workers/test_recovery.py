"""The recovery transitions on PostgreSQL: kills counted once per delivery, a graceful
hand-back, the re-send after a broker loss; and the time limits that a message carries."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from service import crud_recovery
from service.crud import Envelope
from service.crud_work import Claimed, claim_item
from service.dispatch import time_limits
from service.models import Experiment, WorkItem, new_id, utcnow

KILLED = "was killed by signal 9 (SIGKILL)"


def add_item(session: Session, *, status: str = "queued", time_limit: float = 60.0) -> WorkItem:
    exp = Experiment(id=new_id(), kind="census", status="running", spec={}, spec_hash="h")
    item = WorkItem(
        id=new_id(),
        experiment_id=exp.id,
        task="census_chunk",
        queue="cpu",
        status=status,
        time_limit=time_limit,
        enqueued_at=utcnow() - timedelta(seconds=5),
    )
    session.add_all([exp, item])
    session.flush()
    return item


def claim(session: Session, item: WorkItem, prefix: str) -> Claimed:
    claimed = claim_item(session, item_id=item.id, lease=prefix + "0" * 12, max_attempts=5)
    assert claimed is not None and claimed.time_limit == item.time_limit
    return claimed


def test_time_limits_put_the_soft_limit_before_the_hard_one():
    assert time_limits(None) == {}
    assert time_limits(300.0) == {"time_limit": 300.0, "soft_time_limit": 290.0}
    assert time_limits(5.0) == {"time_limit": 5.0, "soft_time_limit": 4.5}


def test_a_kill_requeues_once_then_the_second_fails_the_experiment(session):
    item = add_item(session)
    claim(session, item, "a" * 20)
    other = {"item_id": item.id, "cause": KILLED, "max_kills": 2}
    assert crud_recovery.record_kill(session, lease_prefix="b" * 20, **other) is None
    again = crud_recovery.record_kill(session, lease_prefix="a" * 20, **other)
    assert again == Envelope(item.id, "cpu", 60.0)
    session.flush()
    session.refresh(item)
    assert (item.status, item.lease, item.kills) == ("queued", None, 1)
    # the same report again, or the broker's redelivery of the killed message: no change
    assert crud_recovery.record_kill(session, lease_prefix="a" * 20, **other) is None

    claim(session, item, "c" * 20)
    hint = "out of memory?"
    assert crud_recovery.record_kill(session, lease_prefix="c" * 20, hint=hint, **other) is None
    session.refresh(item)
    exp = session.get(Experiment, item.experiment_id, populate_existing=True)
    assert exp is not None and exp.status == "failed"
    assert exp.error == {
        "type": "WorkerKilled",
        "detail": f"work item census_chunk {KILLED} twice (out of memory?)",
    }
    assert (item.status, item.kills, item.attempts) == ("failed", 2, 2)


def test_kill_reasons_name_each_cause():
    assert crud_recovery.kill_reason("optimum", ["passed its hard time limit of 6 s"] * 2) == (
        "work item optimum passed its hard time limit of 6 s twice"
    )
    mixed = crud_recovery.kill_reason("optimum", [KILLED, "passed its hard time limit of 6 s"])
    assert mixed == (
        f"work item optimum was stopped twice: {KILLED}; then passed its hard time limit of 6 s"
    )


def test_a_shutdown_hands_the_item_back_with_its_checkpoint_and_attempt(session):
    item = add_item(session)
    claimed = claim(session, item, "a" * 20)
    item.checkpoint = b"state"
    session.flush()
    assert crud_recovery.release_item(session, item=claimed) == Envelope(item.id, "cpu", 60.0)
    session.refresh(item)
    assert (item.status, item.lease, item.attempts, item.checkpoint) == (
        "queued",
        None,
        0,
        b"state",
    )
    assert crud_recovery.release_item(session, item=claimed) is None  # no longer held


def test_after_a_broker_loss_every_item_queued_before_is_sent_again(session):
    before = add_item(session)
    running = add_item(session, status="running")
    looked = utcnow()
    after = add_item(session)
    after.enqueued_at = looked + timedelta(seconds=1)
    session.flush()
    sent = crud_recovery.resend_queued(session, sent_before=looked)
    ids = {e.item_id for e in sent}
    assert before.id in ids and running.id not in ids and after.id not in ids
    assert before.enqueued_at is not None and before.enqueued_at >= looked
