"""The training fan-in in SQL: the groups the database tallies (one GROUP BY over runs, no
curve read) equal an independent count in Python over the runs' params, on PostgreSQL and
SQLite, for a few hundred runs of mixed verdicts in a grid that sweeps every axis; and two
last batches finishing in concurrent transactions on PostgreSQL fan in once, completely,
whether the fan-in runs before the experiment's lock or under it."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session

from service import crud_find, crud_work
from service.models import Base, Experiment, Run, WorkItem, new_id
from service.specs import training_grid
from workers import jobs, tasks
from workers.landscape.census.records import wilson_interval

SPEC: dict[str, Any] = {
    "kind": "training",
    "data_seeds": [5, 2],
    "weight_decay": [0.1, 0.01],
    "optimizer": {"name": "gd", "lr": [0.01, 0.05]},
    "widths": [2, 7, 12],
    "init_scales": [0.1, 1.0],
    "seeds": 7,
}  # 336 runs in 48 groups
VERDICTS = [*jobs.RUN_VERDICTS, None]  # None: a run without a verdict (it failed)


def optima() -> list[dict[str, Any]]:
    return [
        {
            "optimum": 0.5 + ds + lam,
            "num_patterns": 4,
            "num_signed_cones": 8,
            "theory_bound": 9,
            "data_seed": ds,
            "weight_decay": lam,
        }
        for ds in SPEC["data_seeds"]
        for lam in SPEC["weight_decay"]
    ]


def add_experiment(session: Session, seed: int = 0) -> tuple[str, list[Run]]:
    """A training experiment whose runs have random verdicts and cone_global flags (true,
    false, null or absent; some runs without a final), each with a curve blob."""
    rng = random.Random(seed)
    exp = Experiment(id=new_id(), kind="training", status="running", spec=SPEC, spec_hash="h")
    session.add(exp)
    session.add(
        WorkItem(id=new_id(), experiment_id=exp.id, task="optimum", stage=0, output=optima()[0])
    )
    for out in optima()[1:]:
        session.add(WorkItem(id=new_id(), experiment_id=exp.id, task="optimum", output=out))
    runs = []
    for index, params in enumerate(training_grid(SPEC)):
        held = rng.choice([True, False, None, "absent", "no final"])
        final = None if held == "no final" else {} if held == "absent" else {"cone_global": held}
        verdict = rng.choice(VERDICTS)
        curve = rng.randbytes(64)
        runs.append(
            Run(
                experiment_id=exp.id,
                index=index,
                params=params,
                verdict=verdict,
                final=final,
                curve=curve,
                status="done",
            )
        )
    session.add_all(runs)
    session.flush()
    return exp.id, runs


def independent_groups(runs: list[Run]) -> list[dict[str, Any]]:
    """Each group's counts, found by matching every run's params against the group's."""
    out = []
    for ds in SPEC["data_seeds"]:
        for lam in SPEC["weight_decay"]:
            for lr in SPEC["optimizer"]["lr"]:
                for width in SPEC["widths"]:
                    for scale in SPEC["init_scales"]:
                        want = {"data_seed": ds, "weight_decay": lam, "lr": lr}
                        want |= {"width": width, "init_scale": scale}
                        mine = [r for r in runs if all(r.params[k] == v for k, v in want.items())]
                        n = len(mine)
                        count = {v: sum(r.verdict == v for r in mine) for v in jobs.RUN_VERDICTS}
                        held = sum(r.final is not None and r.final.get("cone_global") is True
                                   for r in mine)  # fmt: skip
                        out.append(
                            {
                                **want,
                                "runs": n,
                                "p_global": count["global_minimum"] / n,
                                "p_spurious": count["spurious_local_minimum"] / n,
                                "p_saddle": count["saddle_point"] / n,
                                "p_not_converged": count["not_converged"] / n,
                                "p_diverged": count["diverged"] / n,
                                "p_collapsed": count["collapsed"] / n,
                                "p_cone_global": held / n,
                                "p_global_ci": wilson_interval(count["global_minimum"], n),
                                "p_spurious_ci": wilson_interval(
                                    count["spurious_local_minimum"], n
                                ),
                                "p_cone_global_ci": wilson_interval(held, n),
                            }
                        )
    return out


@pytest.fixture
def sqlite_session(tmp_path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'fan_in.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_session(request) -> Session:
    name = "session" if request.param == "postgresql" else "sqlite_session"
    return request.getfixturevalue(name)


def claimed(experiment_id: str) -> crud_work.Claimed:
    """The last batch of the experiment, as its worker holds it."""
    return crud_work.Claimed(
        item_id=new_id(),
        experiment_id=experiment_id,
        task="training_batch",
        queue="cpu",
        stage=0,
        payload={},
        spec=SPEC,
        checkpoint=None,
        lease="a" * 32,
        attempts=1,
    )


def test_the_database_tallies_equal_an_independent_count(any_session):
    eid, runs = add_experiment(any_session)
    tallies = crud_work.run_tallies(
        any_session, experiment_id=eid, block=SPEC["seeds"], verdicts=jobs.RUN_VERDICTS
    )
    groups = jobs.training_groups_of(SPEC, tallies)
    expected = independent_groups(runs)
    assert len(groups) == 48 and sum(g["runs"] for g in groups) == len(runs) == 336
    assert groups == expected
    # and the same tallies of the runs in memory give the same groups
    assert jobs.tally_runs(SPEC, runs) == tallies
    assert any(0 < g["p_cone_global"] < 1 for g in groups)


def test_the_fan_in_reads_no_curve_in_a_few_statements(any_session):
    eid, runs = add_experiment(any_session, seed=1)
    any_session.expunge_all()  # nothing in the identity map: every read goes to the database
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    engine = any_session.get_bind().engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        outcome = tasks._fan_in(any_session, claimed(eid))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # the kind, the optima (stage 0), the tallies: never a run row, never a curve
    assert len(seen) == 3, seen
    assert not any("curve" in s.lower() for s in seen), seen
    (tally,) = [s for s in seen if "runs" in s.lower()]
    assert "group by" in tally.lower()
    assert outcome.runs == []
    expected = jobs.finalize("training", SPEC, {0: optima()}, runs).output
    assert outcome.output == expected
    assert outcome.output["groups"] == independent_groups(runs)


# --- two batches finishing at once (PostgreSQL) ------------------------------------------


def add_running_sweep(engine, seed: int) -> tuple[str, list[crud_work.Claimed]]:
    """A committed training experiment whose optima are done and whose two batches (half
    of the runs each) run under leases; its runs have no verdict yet."""
    with Session(engine) as s:
        exp = Experiment(
            id=new_id(), kind="training", status="running", spec=SPEC, spec_hash=f"race{seed}"
        )
        s.add(exp)
        s.add_all(
            WorkItem(
                id=new_id(), experiment_id=exp.id, task="optimum", stage=0, status="done", output=o
            )
            for o in optima()
        )
        grid = training_grid(SPEC)
        half = len(grid) // 2
        held = []
        for start, stop in ((0, half), (half, len(grid))):
            lease = new_id()
            item = WorkItem(
                id=new_id(),
                experiment_id=exp.id,
                task="training_batch",
                stage=1,
                status="running",
                lease=lease,
                payload={"runs": [start, stop]},
            )
            s.add(item)
            held.append(
                crud_work.Claimed(
                    item_id=item.id,
                    experiment_id=exp.id,
                    task="training_batch",
                    queue="cpu",
                    stage=1,
                    payload={"runs": [start, stop]},
                    spec=SPEC,
                    checkpoint=None,
                    lease=lease,
                    attempts=1,
                )
            )
        s.add_all(
            Run(experiment_id=exp.id, index=i, params=p, status="running")
            for i, p in enumerate(grid)
        )
        s.commit()
        return exp.id, held


def batch_outcome(item: crud_work.Claimed, rng: random.Random) -> jobs.Outcome:
    start, stop = item.payload["runs"]
    updates = [
        {
            "index": i,
            "status": "done",
            "verdict": rng.choice(jobs.RUN_VERDICTS),
            "final": {"cone_global": rng.choice([True, False])},
        }
        for i in range(start, stop)
    ]
    return jobs.Outcome(output={"runs": stop - start}, runs=updates)


def complete_together(
    items: list[crud_work.Claimed], outcomes: list[jobs.Outcome]
) -> list[BaseException]:
    """Each item's outcome stored by `tasks._complete` in its own thread, all let go at once;
    what they raised."""
    start = threading.Barrier(len(items), timeout=30)
    errors: list[BaseException] = []

    def finish(item: crud_work.Claimed, outcome: jobs.Outcome) -> None:
        try:
            start.wait()
            tasks._complete(item, outcome)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    pairs = zip(items, outcomes, strict=True)
    threads = [threading.Thread(target=finish, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.parametrize("meet", [True, False], ids=["both-miss-the-hint", "free-race"])
def test_two_batches_finishing_at_once_give_one_complete_fan_in(pg_engine, monkeypatch, meet):
    """Both last batches store their outcomes in concurrent transactions. With `meet`, each
    waits for the other after storing its outcome and before its unlocked count, so neither
    sees the other's (uncommitted) item as done: the fan-in must then happen under the
    experiment's lock, by whichever transaction takes the lock second. Without it, the
    threads race freely (the second to count usually finds the first committed and fans in
    before the lock). Either way the experiment succeeds once, with every run's verdict."""
    from tests.conftest import PG_URL, use_settings

    use_settings(monkeypatch, DATABASE_URL=PG_URL)
    gate = threading.Barrier(2, timeout=30)
    hint = crud_work.item_counts
    first_count: set[int] = set()

    def item_counts(session: Session, *, experiment_id: str) -> dict[tuple[int, str], int]:
        me = threading.get_ident()
        if meet and me not in first_count:  # the unlocked hint: wait for the other batch
            first_count.add(me)
            gate.wait()
        return hint(session, experiment_id=experiment_id)

    monkeypatch.setattr(crud_work, "item_counts", item_counts)
    fan_ins: list[tuple[int, bool]] = []  # (thread, whether it held the lock already)
    locked: set[int] = set()
    fan_in, lock = tasks._fan_in, crud_work.lock_experiment

    def watched_lock(session: Session, *, experiment_id: str) -> Experiment | None:
        locked.add(threading.get_ident())
        return lock(session, experiment_id=experiment_id)

    def watched_fan_in(session: Session, item: crud_work.Claimed) -> jobs.Outcome:
        fan_ins.append((threading.get_ident(), threading.get_ident() in locked))
        return fan_in(session, item)

    monkeypatch.setattr(crud_work, "lock_experiment", watched_lock)
    monkeypatch.setattr(tasks, "_fan_in", watched_fan_in)
    for trial in range(4):
        eid, items = add_running_sweep(pg_engine, trial)
        rng = random.Random(trial)
        outcomes = [batch_outcome(item, rng) for item in items]
        first_count.clear()
        locked.clear()
        fan_ins.clear()
        errors = complete_together(items, outcomes)
        assert not errors, errors
        with Session(pg_engine) as s:
            exp = s.get(Experiment, eid)
            assert exp is not None and exp.status == "succeeded", exp and exp.status
            runs = list(s.scalars(select(Run).where(Run.experiment_id == eid).order_by(Run.index)))
            assert all(r.verdict is not None for r in runs)
            assert exp.result["groups"] == independent_groups(runs)
            states = s.scalars(select(WorkItem.status).where(WorkItem.experiment_id == eid))
            assert sorted(states) == ["done"] * 6
            crud_find.delete_experiment(s, experiment_id=eid)
            s.commit()
        # the finishing transaction fanned in; with `meet`, only it, and under the lock
        if meet:
            assert len(fan_ins) == 1 and fan_ins[0][1], fan_ins
        else:
            assert 1 <= len(fan_ins) <= 2, fan_ins
