"""The training fan-in in SQL: the groups the database tallies (one GROUP BY over runs, no
curve read) equal an independent count in Python over the runs' params, on PostgreSQL and
SQLite, for a few hundred runs of mixed verdicts in a grid that sweeps every axis."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from service import crud_work
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
