"""Per-stage timings (service/timings.py): the SQL's figures against the same ones computed
in Python from the stored timestamps, on PostgreSQL and on SQLite, and in the API's answer."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service import timings
from service.models import Experiment, WorkItem, as_utc
from tests.service.test_api import SPEC, broker, make_client  # noqa: F401 - broker: a fixture

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    from service.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'timings.db'}"
    upgrade(url)
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _seed(session: Session, rng: random.Random, counts: tuple[int, ...]) -> str:
    """An experiment whose stages have these item counts, with random times (ms apart);
    the last stage's last item still runs."""
    exp = Experiment(kind="census", status="running", spec={}, spec_hash="x", created_at=T0)
    exp.started_at = T0 + timedelta(seconds=0.25)
    session.add(exp)
    session.flush()
    clock = T0
    for stage, count in enumerate(counts):
        for i in range(count):
            queued = clock + timedelta(milliseconds=rng.randint(0, 500))
            started = queued + timedelta(milliseconds=rng.randint(1, 3000), microseconds=7)
            finished = started + timedelta(milliseconds=rng.randint(1, 2000))
            last = stage == len(counts) - 1 and i == count - 1
            session.add(
                WorkItem(
                    experiment_id=exp.id,
                    stage=stage,
                    task=f"task{stage}",
                    status="running" if last else "done",
                    queued_at=queued,
                    started_at=started,
                    finished_at=None if last else finished,
                )
            )
        session.flush()
        clock = max(
            as_utc(t)
            for t in session.scalars(
                select(WorkItem.finished_at).where(
                    WorkItem.experiment_id == exp.id, WorkItem.stage == stage
                )
            )
            if t is not None
        ) + timedelta(milliseconds=30)
    return exp.id


def _expected(session: Session, experiment_id: str) -> list[dict]:
    """The same figures from the stored rows, in Python."""
    rows = session.scalars(select(WorkItem).where(WorkItem.experiment_id == experiment_id)).all()
    out, last_finish = [], None
    for stage in sorted({r.stage for r in rows}):
        mine = [r for r in rows if r.stage == stage]
        waits = {r.id: (as_utc(r.started_at) - as_utc(r.queued_at)).total_seconds() for r in mine}
        ran = [
            (as_utc(r.finished_at) - as_utc(r.started_at)).total_seconds()
            for r in mine
            if r.finished_at
        ]
        first = min(mine, key=lambda r: as_utc(r.started_at))
        done = all(r.finished_at for r in mine)
        ends = [as_utc(r.finished_at) for r in mine if r.finished_at]
        starts = [as_utc(r.started_at) for r in mine]
        queued = min(as_utc(r.queued_at) for r in mine)
        out.append(
            {
                "stage": stage,
                "items": len(mine),
                "finished": len(ran),
                "wait": {
                    "first": waits[first.id],
                    "median": statistics.median(waits.values()),
                    "max": max(waits.values()),
                },
                "run": {"sum": sum(ran), "max": max(ran)},
                "wall": (max(ends) - min(starts)).total_seconds() if done else None,
                "release": None if last_finish is None else (queued - last_finish).total_seconds(),
            }
        )
        last_finish = max(ends) if done else None
    return out


def _close(found: object, expected: object) -> bool:
    if isinstance(expected, dict):
        assert isinstance(found, dict)
        return all(_close(found[k], v) for k, v in expected.items())
    if isinstance(expected, float):
        assert isinstance(found, float)
        return found == pytest.approx(expected, abs=1e-4)  # SQLite's julianday: ~40 µs
    return found == expected


@pytest.mark.parametrize("counts", [(1, 7), (1, 8), (3, 1, 5)])
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_stage_timings_agree_with_the_stored_timestamps(backend, counts, request):
    engine = request.getfixturevalue("pg_engine" if backend == "postgresql" else "sqlite_engine")
    rng = random.Random(hash(counts) % 1000)
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        exp_id = _seed(session, rng, counts)
        exp = session.get(Experiment, exp_id)
        assert exp is not None
        found = timings.stage_timings(
            session,
            experiment_id=exp_id,
            created_at=exp.created_at,
            started_at=exp.started_at,
            finished_at=None,
        )
        expected = _expected(session, exp_id)
        outer.rollback()
    assert [s["task"] for s in found["stages"]] == [f"task{i}" for i in range(len(counts))]
    assert len(found["stages"]) == len(expected)
    for got, want in zip(found["stages"], expected, strict=True):
        assert _close(got, want), (got, want)
    assert found["submit_to_start"] == pytest.approx(0.25)
    assert found["submit_to_done"] is None
    assert found["stages"][-1]["wall"] is None  # its last item still runs


@pytest.fixture
def client(pg_engine, monkeypatch, request):
    request.getfixturevalue("broker")  # the session's own Redis, emptied
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")


def test_an_experiment_answers_with_its_timings(client):
    exp = client.post("/v1/experiments", json=SPEC).json()
    assert exp["timings"]["submit_to_done"] is None
    (stage,) = exp["timings"]["stages"]
    assert stage["stage"] == 0 and stage["task"] == "optimum" and stage["items"] == 1
    assert stage["finished"] == 0 and stage["wait"]["first"] is None
    assert stage["wall"] is None and stage["release"] is None
    got = client.get(f"/v1/experiments/{exp['id']}").json()
    assert got["timings"] == exp["timings"]
    # lists leave timings out (other tests' experiments may share the database)
    listed = client.get("/v1/experiments", params={"id_prefix": exp["id"]}).json()["items"]
    assert [(e["id"], e["timings"]) for e in listed] == [(exp["id"], None)]


def test_a_settled_experiment_keeps_its_timings_and_an_unsettled_one_reads_them_again(
    sqlite_engine,
):
    """Ended with every item finished: the second read runs no query and answers as the
    first. Ended (cancelled) with an item still running, or still running: every read
    queries, and sees the item finish."""
    seen: list[str] = []
    event.listen(sqlite_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with Session(sqlite_engine) as session:
        exp_id = _seed(session, random.Random(3), (1, 4))
        session.commit()
        exp = session.get(Experiment, exp_id)
        assert exp is not None

        def read(terminal: bool) -> tuple[dict, int]:
            seen.clear()
            times = timings.experiment_timings(
                session,
                experiment_id=exp_id,
                terminal=terminal,
                created_at=exp.created_at,
                started_at=exp.started_at,
                finished_at=exp.finished_at,
            )
            return times, len(seen)

        running, queries = read(terminal=False)
        assert queries > 0 and running["stages"][-1]["wall"] is None
        cancelled, queries = read(terminal=True)  # its last item has not stopped yet
        assert queries > 0 and cancelled == running
        last = session.scalars(
            select(WorkItem).where(WorkItem.experiment_id == exp_id, WorkItem.finished_at.is_(None))
        ).one()
        last.finished_at, last.status = as_utc(last.started_at) + timedelta(seconds=2), "cancelled"
        exp.status, exp.finished_at = "cancelled", last.finished_at
        session.commit()
        settled, queries = read(terminal=True)
        assert queries > 0 and settled["stages"][-1]["wall"] is not None
        assert settled["submit_to_done"] is not None
        again, queries = read(terminal=True)
        assert queries == 0 and again == settled
        assert [s["task"] for s in again["stages"]] == ["task0", "task1"]
