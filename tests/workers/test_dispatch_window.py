"""The dispatch window on PostgreSQL: an experiment holds at most `window` items queued or
running; the rest wait in the database and are sent as others finish, by the reaper if a
top-up was lost, and never after a cancel."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import crud, crud_recovery, crud_work
from service.models import WorkItem


def census(session: Session, chunks: int) -> str:
    items = [{"task": "optimum", "stage": 0}] + [
        {"task": "census_chunk", "stage": 1, "payload": {"i": i}, "time_limit": 90.0}
        for i in range(chunks)
    ]
    exp, sent = crud.create_experiment(
        session, kind="census", spec={}, spec_hash="h", idempotency_key=None,
        items=items, runs=[], window=3,
    )  # fmt: skip
    assert len(sent) == 1  # the optimum
    session.flush()
    return exp.id


def statuses(session: Session, experiment_id: str) -> Counter:
    rows = session.scalars(select(WorkItem.status).where(WorkItem.experiment_id == experiment_id))
    return Counter(rows)


def finish(session: Session, item_id: str) -> None:
    item = session.get(WorkItem, item_id)
    assert item is not None and item.status == "queued"
    item.status = "done"
    session.flush()


def test_a_stage_is_sent_a_window_at_a_time(session):
    eid = census(session, chunks=10)
    finish(session, session.scalars(select(WorkItem.id).where(WorkItem.stage == 0,
           WorkItem.experiment_id == eid)).one())  # fmt: skip
    sent = crud_work.release_stage(session, experiment_id=eid, stage=1, window=3)
    assert len(sent) == 3 and all(e.time_limit == 90.0 for e in sent)
    assert statuses(session, eid) == {"done": 1, "queued": 3, "waiting": 7}
    assert crud_work.top_up(session, experiment_id=eid, window=3) == []  # no room
    finish(session, sent[0].item_id)
    more = crud_work.top_up(session, experiment_id=eid, window=3)
    assert len(more) == 1 and more[0].item_id not in {e.item_id for e in sent}
    assert statuses(session, eid) == {"done": 2, "queued": 3, "waiting": 6}
    assert crud.active_items(session, tenant="") >= 9  # waiting items count toward quotas


def test_the_reaper_sends_what_a_lost_top_up_did_not(session):
    eid = census(session, chunks=5)
    finish(session, session.scalars(select(WorkItem.id).where(WorkItem.stage == 0,
           WorkItem.experiment_id == eid)).one())  # fmt: skip
    for env in crud_work.release_stage(session, experiment_id=eid, stage=1, window=3):
        finish(session, env.item_id)  # done, but the worker died before its top-up
    sent = crud_recovery.reap(session, heartbeat_timeout=60, requeue_after=60, window=3)
    queued = waiting_ids(session, eid, "queued")
    assert len(queued) == 2 and queued <= {e.item_id for e in sent}
    assert statuses(session, eid) == {"done": 4, "queued": 2}


def waiting_ids(session: Session, experiment_id: str, status: str) -> set[str]:
    query = select(WorkItem.id).where(
        WorkItem.experiment_id == experiment_id, WorkItem.status == status
    )
    return set(session.scalars(query))


def test_a_cancel_leaves_nothing_waiting_to_send(session):
    eid = census(session, chunks=10)
    finish(session, session.scalars(select(WorkItem.id).where(WorkItem.stage == 0,
           WorkItem.experiment_id == eid)).one())  # fmt: skip
    crud_work.release_stage(session, experiment_id=eid, stage=1, window=3)
    assert statuses(session, eid)["waiting"] == 7
    crud.cancel_experiment(session, experiment_id=eid)
    assert statuses(session, eid) == {"done": 1, "cancelled": 10}
    assert crud_work.top_up(session, experiment_id=eid, window=3) == []
    assert not [
        e for e in crud_recovery.reap(session, heartbeat_timeout=60, requeue_after=60, window=3)
        if e.item_id in waiting_ids(session, eid, "cancelled")
    ]  # fmt: skip


def census_released(session: Session, chunks: int, window: int = 10) -> str:
    eid = census(session, chunks=chunks)
    finish(session, session.scalars(select(WorkItem.id).where(WorkItem.stage == 0,
           WorkItem.experiment_id == eid)).one())  # fmt: skip
    crud_work.release_stage(session, experiment_id=eid, stage=1, window=window)
    return eid


def queued_in_order(session: Session, experiment_id: str) -> list[str]:
    query = (
        select(WorkItem.id)
        .where(WorkItem.experiment_id == experiment_id, WorkItem.status == "queued")
        .order_by(WorkItem.stage, WorkItem.id)
    )
    return list(session.scalars(query))


def held(session: Session, experiment_id: str):
    exp = crud_work.lock_experiment(session, experiment_id=experiment_id)
    assert exp is not None
    return exp


def test_a_chain_claims_the_next_queued_item_and_its_message_is_then_skipped(session):
    eid = census_released(session, chunks=4)
    order = queued_in_order(session, eid)
    first = crud_work.claim_item(session, item_id=order[0], lease="a" * 32, max_attempts=5)
    assert first is not None and first.time_limit == 90.0
    nxt = crud_work.claim_next(session, item=first, lease="a" * 20 + "1" * 12, max_attempts=5,
                               time_limit=90.0, held=held(session, eid))  # fmt: skip
    assert nxt is not None and nxt.item_id == order[1]  # the lowest queued id, not the first
    assert (nxt.experiment_id, nxt.stage, nxt.spec) == (eid, 1, first.spec)
    # the broker message of the chained item arrives later: the compare-and-set skips it
    assert crud_work.claim_item(session, item_id=order[1], lease="b" * 32, max_attempts=5) is None
    assert crud_work.running_under(session, lease_prefix="a" * 20) in {order[0], order[1]}
    assert statuses(session, eid) == {"done": 1, "running": 2, "queued": 2}


def test_a_chain_takes_only_items_of_its_time_limit_and_queue(session):
    eid = census_released(session, chunks=3)
    order = queued_in_order(session, eid)
    first = crud_work.claim_item(session, item_id=order[0], lease="a" * 32, max_attempts=5)
    assert first is not None
    other = session.get(WorkItem, order[1])
    assert other is not None
    other.queue = "gpu"
    last = session.get(WorkItem, order[2])
    assert last is not None
    last.time_limit = 600.0
    session.flush()
    kwargs = {"item": first, "lease": "c" * 32, "max_attempts": 5, "held": held(session, eid)}
    for limit in (60.0, 90.0, 300.0, 900.0, None):  # no item runs under a limit not its own
        assert crud_work.claim_next(session, time_limit=limit, **kwargs) is None
    taken = crud_work.claim_next(session, time_limit=600.0, **kwargs)
    assert taken is not None and taken.item_id == order[2]


def test_a_kill_during_a_chain_is_counted_against_the_chained_item(session):
    eid = census_released(session, chunks=2)
    order = queued_in_order(session, eid)
    prefix = "d" * 20
    first = crud_work.claim_item(session, item_id=order[0], lease=prefix + "0" * 12, max_attempts=5)
    assert first is not None
    assert crud_work.complete_item(session, item=first, output={"width": 40})
    nxt = crud_work.claim_next(session, item=first, lease=prefix + "1" * 12, max_attempts=5,
                               time_limit=90.0, held=held(session, eid))  # fmt: skip
    assert nxt is not None
    assert crud_work.running_under(session, lease_prefix=prefix) == nxt.item_id
    back = crud_recovery.record_kill(
        session, item_id=nxt.item_id, lease_prefix=prefix, cause="was killed", max_kills=2
    )
    assert back is not None and back.item_id == nxt.item_id
    assert statuses(session, eid) == {"done": 2, "queued": 1}
