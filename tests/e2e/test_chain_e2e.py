"""A worker goes on from one finished census chunk to the next queued one in the same
transaction (workers/tasks.py, Chains): the chunks share a delivery's lease prefix, each
runs once, and every cone is stored once."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.crud_work import Claimed
from service.models import WorkItem
from tests.e2e.conftest import wait_for
from tests.e2e.test_census_faults import SPEC as CENSUS
from workers.tasks import Chain

SPEC = {**CENSUS, "widths": [40, 640], "samples_per_width": 100}


def test_one_worker_chains_the_chunks_of_a_census(api, start_worker, pg_engine):
    start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    with Session(pg_engine) as s:
        items = list(s.scalars(select(WorkItem).where(WorkItem.experiment_id == exp["id"])))
    chunks = [i for i in items if i.task == "census_chunk"]
    assert len(chunks) >= 4 and all(i.status == "done" and i.attempts == 1 for i in items)
    deliveries = {i.lease[:20] for i in items}
    assert len(deliveries) < len(items)  # some items ran without a message of their own
    cones = api.get(f"/v1/experiments/{exp['id']}/cones", params={"limit": 1000}).json()
    assert len(cones["items"]) == 200
    assert sum(r["samples"] for r in done["result"]["rows"]) == 200


def test_only_a_chained_item_cut_short_by_the_message_limit_goes_back():
    chain = Chain(prefix="a" * 20, first="first", started=time.monotonic(), hard=300.0)
    started = time.monotonic()
    chained = _claimed("second", 300.0)
    assert chain.cut_short(chained, started)  # its own soft limit (290 s) is far off
    assert not chain.cut_short(_claimed("first", 300.0), started)  # the message's own item
    assert not chain.cut_short(_claimed("second", None), started)  # no limit of its own
    assert not chain.cut_short(chained, started - 291.0)  # it reached its own limit


def _claimed(item_id: str, time_limit: float | None) -> Claimed:
    return Claimed(item_id, "e", "census_chunk", "cpu", 1, {}, {}, None, "l", 1, time_limit)


def test_a_chain_claims_on_only_within_chain_seconds(monkeypatch):
    """CHAIN_SECONDS (a setting) bounds how long a delivery goes on claiming; 0 sends every
    item through the broker."""
    chain = Chain(prefix="a" * 20, first="first", started=time.monotonic() - 1.0, hard=None)
    try:
        for seconds, room in (("2", True), ("0.5", False), ("0", False)):
            monkeypatch.setenv("CHAIN_SECONDS", seconds)
            get_settings.cache_clear()
            assert chain.room() is room, seconds
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
