"""Work goes on through outages: PostgreSQL dropping every connection, or refusing them for
a few seconds (as during a restart), and the session's redis-server restarting empty, all
while work runs."""

from __future__ import annotations

import time
from contextlib import contextmanager

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from service.models import WorkItem
from tests.conftest import ADMIN_URL, eventually
from tests.e2e.conftest import wait_for
from tests.e2e.test_census_faults import SPEC
from tests.e2e.test_training_resume import SPEC as RESUME_SPEC
from tests.e2e.test_training_resume import batch_item

DROP_OTHERS = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def drop_connections(pg_engine) -> int:
    """Terminate every other session on the test database; returns how many."""
    with pg_engine.connect() as conn:
        dropped = int(conn.execute(DROP_OTHERS).scalar_one())
    pg_engine.dispose()
    return dropped


@contextmanager
def database_down(pg_engine):
    """The test database refuses new connections and loses its open ones, until exit."""
    name = pg_engine.url.database
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        drop_connections(pg_engine)
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def statuses(pg_engine, experiment_id: str) -> list[str]:
    with Session(pg_engine) as s:
        query = select(WorkItem.status).where(
            WorkItem.experiment_id == experiment_id, WorkItem.task == "census_chunk"
        )
        return list(s.scalars(query))


def test_census_survives_dropped_database_connections(api, start_worker, pg_engine):
    start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    deadline = time.monotonic() + 120
    for wanted in (0, 2):  # once in the first chunk, once after two chunks are stored
        while True:
            states = statuses(pg_engine, exp["id"])
            if "running" in states and states.count("done") >= wanted:
                break
            assert time.monotonic() < deadline and "failed" not in states, states
            time.sleep(0.02)
        if wanted == 0:
            assert drop_connections(pg_engine) >= 1  # at least the worker's own
        else:
            with database_down(pg_engine):
                # A fault window, not a wait for a condition: the outage lasts past a
                # chunk's end (chunks take about a second), so the worker's writes fail.
                time.sleep(3)
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": 400, "total": 400, "unit": "cones"}
    cones = api.get(f"/v1/experiments/{exp['id']}/cones", params={"limit": 1000}).json()
    keys = {(c["width"], c["sample"]) for c in cones["items"]}
    assert len(cones["items"]) == len(keys) == 400  # nothing lost, nothing stored twice


def test_a_sweep_that_ends_during_an_outage_is_stored_once_it_is_over(
    api, stack, start_worker, pg_engine
):
    stack["HEARTBEAT_TIMEOUT"] = "60"  # the outage must not look like a dead worker
    worker = start_worker()
    spec = {**RESUME_SPEC, "max_epochs": 1_000_000}  # about 2 s of training
    exp = api.post("/v1/experiments", json=spec).json()
    deadline = time.monotonic() + 120
    while batch_item(pg_engine, exp["id"]).checkpoint is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    with database_down(pg_engine):  # until the sweep has ended and failed to store its results
        eventually(worker.log.read_text, 90, lambda log: "trying again" in log, "a failed store")
    done = wait_for(api, exp["id"], timeout=120)
    assert done["status"] == "succeeded", done
    item = batch_item(pg_engine, exp["id"])
    assert item.attempts == 1 and item.output["resumed_from"] == 0  # not redone
    assert "trying again" in worker.log.read_text()
    runs = api.get(f"/v1/experiments/{exp['id']}/runs").json()["items"]
    assert len(runs) == 4 and all(r["final"]["epoch"] == 1_000_000 for r in runs)


def test_census_survives_a_broker_restart_that_loses_every_message(
    api, start_worker, pg_engine, private_redis
):
    start_worker()
    exp = api.post("/v1/experiments", json={**SPEC, "samples_per_width": 400}).json()
    deadline = time.monotonic() + 120
    while statuses(pg_engine, exp["id"]).count("done") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # A real restart of a Redis that keeps nothing on disk: every connection is dropped
    # and every queued message is gone.
    private_redis.restart()
    assert "queued" in statuses(pg_engine, exp["id"])  # work whose message was lost
    done = wait_for(api, exp["id"], timeout=300)
    assert done["status"] == "succeeded", done
    cones = api.get(f"/v1/experiments/{exp['id']}/cones", params={"limit": 1000}).json()
    assert len({(c["width"], c["sample"]) for c in cones["items"]}) == 800
