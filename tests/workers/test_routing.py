"""Routing on PostgreSQL: work goes to queues that live workers serve, "auto" training
falls back from gpu to cpu (and back), and work that no live worker can take fails its
experiment after QUEUE_DEADLINE with a reason naming the queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service import crud, crud_recovery, crud_work, fleet
from service.models import Experiment, Worker, WorkItem, utcnow


@pytest.fixture
def fleet_session(session: Session) -> Session:
    """The rolled-back session without other tests' workers and work items."""
    session.execute(delete(Worker))
    session.execute(delete(WorkItem))
    return session


def worker(session: Session, name: str, queues: list[str], *, seen_ago: float = 0.0) -> None:
    fleet.beat(session, name=name, queues=queues)
    if seen_ago:
        seen = utcnow() - timedelta(seconds=seen_ago)
        session.execute(update(Worker).where(Worker.name == name).values(seen_at=seen))
    session.flush()
    session.info.clear()  # the served queues are cached per transaction


def submit(session: Session, queue: str, fallback: str | None, *, queued_ago: float = 0.0) -> str:
    items = [{"task": "training_batch", "queue": queue, "fallback": fallback}]
    exp, sent = crud.create_experiment(
        session, kind="training", spec={}, spec_hash="h", idempotency_key=None,
        items=items, runs=[],
    )  # fmt: skip
    assert len(sent) == 1
    if queued_ago:
        then = utcnow() - timedelta(seconds=queued_ago)
        session.execute(
            update(WorkItem)
            .where(WorkItem.experiment_id == exp.id)
            .values(queued_at=then, enqueued_at=then)
        )
    session.flush()
    return exp.id


def item_of(session: Session, experiment_id: str) -> WorkItem:
    return session.scalars(select(WorkItem).where(WorkItem.experiment_id == experiment_id)).one()


def test_auto_goes_to_gpu_only_when_a_live_worker_serves_it(fleet_session):
    s = fleet_session
    on_cpu = submit(s, "gpu", "cpu")
    assert (item_of(s, on_cpu).queue, item_of(s, on_cpu).fallback) == ("cpu", "gpu")
    worker(s, "g", ["gpu"])
    on_gpu = submit(s, "gpu", "cpu")
    assert (item_of(s, on_gpu).queue, item_of(s, on_gpu).fallback) == ("gpu", "cpu")
    cuda = submit(s, "gpu", None)  # no fallback: stays where it was planned
    worker(s, "g", ["gpu"], seen_ago=3600)
    assert item_of(s, submit(s, "gpu", None)).queue == "gpu" and item_of(s, cuda).queue == "gpu"


def test_reroute_moves_queued_work_to_the_fallback_that_is_served(fleet_session):
    s = fleet_session
    worker(s, "g", ["gpu"])
    eid = submit(s, "gpu", "cpu")
    assert crud_recovery.reroute(s) == []  # its queue is served
    worker(s, "g", ["gpu"], seen_ago=120)  # the GPU worker is gone
    assert crud_recovery.reroute(s) == []  # ... but no CPU worker is there either
    worker(s, "c", ["cpu"])
    moved = crud_recovery.reroute(s)
    assert [(e.item_id, e.queue) for e in moved] == [(item_of(s, eid).id, "cpu")]
    assert item_of(s, eid).fallback == "gpu"
    s.info.clear()
    assert crud_recovery.reroute(s) == []  # once
    # and back: only a GPU worker is left
    worker(s, "c", ["cpu"], seen_ago=120)
    worker(s, "g", ["gpu"])
    assert [e.queue for e in crud_recovery.reroute(s)] == ["gpu"]


def test_top_up_routes_waiting_items_by_the_live_workers(fleet_session):
    s = fleet_session
    items = [{"task": "optimum", "stage": 0}] + [
        {"task": "training_batch", "stage": 1, "queue": "gpu", "fallback": "cpu"} for _ in range(2)
    ]
    exp, _ = crud.create_experiment(
        s, kind="training", spec={}, spec_hash="h", idempotency_key=None, items=items, runs=[]
    )
    s.execute(update(WorkItem).where(WorkItem.stage == 0).values(status="done"))
    s.flush()
    sent = crud_work.release_stage(s, experiment_id=exp.id, stage=1, window=10)
    assert [e.queue for e in sent] == ["cpu", "cpu"]
    rows = s.scalars(select(WorkItem).where(WorkItem.stage == 1)).all()
    assert all(r.queue == "cpu" and r.fallback == "gpu" and r.queued_at for r in rows)


def test_work_no_live_worker_takes_fails_after_the_deadline(fleet_session):
    s = fleet_session
    worker(s, "c", ["cpu"])
    eid = submit(s, "gpu", None, queued_ago=100)  # device "cuda", and no GPU worker ever
    assert crud_recovery.fail_stranded(s, deadline=200) == []
    assert crud_recovery.fail_stranded(s, deadline=30) == [eid]
    exp = s.get(Experiment, eid)
    assert exp is not None and exp.status == "failed"
    assert exp.error is not None and exp.error["type"] == "NoWorker"
    detail = exp.error["detail"]
    assert "'gpu' queue" in detail and "QUEUE_DEADLINE is 30 s" in detail
    assert "waited 100 s" in detail and "--queues gpu" in detail
    assert item_of(s, eid).status == "failed"
    assert crud_recovery.fail_stranded(s, deadline=30) == []  # once


def test_the_deadline_counts_from_the_last_worker_of_the_queue(fleet_session):
    s = fleet_session
    worker(s, "g", ["gpu"], seen_ago=40)  # it died 40 s ago; the item waited 100 s
    eid = submit(s, "gpu", None, queued_ago=100)
    assert crud_recovery.fail_stranded(s, deadline=60) == []
    assert crud_recovery.fail_stranded(s, deadline=35) == [eid]


def test_a_busy_queue_never_fails_its_work(fleet_session):
    s = fleet_session
    worker(s, "c", ["cpu"])
    submit(s, "cpu", None, queued_ago=10_000)
    assert crud_recovery.fail_stranded(s, deadline=1) == []


def test_auto_work_fails_only_when_neither_queue_is_served(fleet_session):
    s = fleet_session
    eid = submit(s, "gpu", "cpu", queued_ago=100)  # no worker at all: it went to cpu
    worker(s, "g", ["gpu"])
    assert crud_recovery.fail_stranded(s, deadline=30) == []  # reroute will move it
    worker(s, "g", ["gpu"], seen_ago=200)
    assert crud_recovery.fail_stranded(s, deadline=30) == [eid]
    detail = s.get(Experiment, eid).error["detail"]  # type: ignore[union-attr]
    assert "'cpu' or 'gpu' queue" in detail


def test_a_stopped_worker_is_not_live_but_was_seen(fleet_session):
    s = fleet_session
    worker(s, "c", ["cpu", "gpu"])
    assert fleet.live_workers(s) == {"cpu": 1, "gpu": 1}
    fleet.stopped(s, name="c")
    s.flush()
    assert fleet.live_workers(s) == {}
    seen = fleet.last_seen(s)
    assert set(seen) == {"cpu", "gpu"}
    assert (utcnow() - seen["cpu"]).total_seconds() < 5
