"""A census chunk's cone rows as PostgreSQL stores them (crud_work.insert_cones: one COPY)
read back equal to the rows the job made, whatever their strings and floats hold."""

from __future__ import annotations

import math

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from service import crud, crud_work
from service.models import CensusCone
from workers import jobs

SPEC = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 4, "d": 3, "teacher_width": 2, "seed": 0},
    "weight_decay": 0.01,
    "widths": [3],
    "samples_per_width": 6,
    "sampling": "uniform",
    "seed": 0,
}

ODD = {
    "width": 7,
    "sample": 2**31 - 1,
    "verdict": "spurious",
    "value": 0.1 + 0.2,
    "gap": 5e-324,
    "covered": -0.0,
    "method": "solved",
    "detail": {
        "text": 'tab\there, "quotes", back\\slash, new\nline, \u03bb, \\N, NULL',
        "floats": [1e-300, 1.7976931348623157e308, -2.5, None],
        "nested": {"a": [True, False, None]},
    },
}


def experiment(session: Session) -> str:
    exp, _ = crud.create_experiment(
        session, kind="census", spec={}, spec_hash="h", idempotency_key=None,
        items=[{"task": "optimum", "stage": 0}], runs=[], window=1,
    )  # fmt: skip
    session.flush()
    return exp.id


def stored(session: Session, experiment_id: str) -> list[dict]:
    query = select(CensusCone).where(CensusCone.experiment_id == experiment_id)
    rows = sorted(session.scalars(query), key=lambda c: (c.width, c.sample))
    return [{k: getattr(c, k) for k in crud_work.CONE_COLUMNS} for c in rows]


def test_copied_cone_rows_read_back_as_made(session):
    optimum = jobs.optimum_job(jobs.LocalContext(spec=SPEC)).output
    payload = {"width": 3, "start": 0, "stop": 6}
    chunk = jobs.census_chunk_job(
        jobs.LocalContext(spec=SPEC, payload=payload, outputs={0: [optimum]})
    )
    cones = [*chunk.cones, ODD]
    eid = experiment(session)
    crud_work.insert_cones(session, experiment_id=eid, cones=cones)
    session.flush()
    got = stored(session, eid)
    assert got == sorted(cones, key=lambda c: (c["width"], c["sample"]))
    assert math.copysign(1.0, got[-1]["covered"]) == -1.0  # -0.0 kept

    # the same rows through an executemany INSERT (the path elsewhere) read back the same
    other = experiment(session)
    session.execute(insert(CensusCone), [{"experiment_id": other, **c} for c in cones])
    session.flush()
    assert stored(session, other) == got


def test_a_cone_row_with_nan_values_is_stored(session):
    eid = experiment(session)
    cone = {**ODD, "value": math.nan, "gap": math.inf}
    crud_work.insert_cones(session, experiment_id=eid, cones=[cone])
    session.flush()
    (got,) = stored(session, eid)
    assert math.isnan(got["value"]) and got["gap"] == math.inf
