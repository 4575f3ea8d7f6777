"""Concurrent submissions with one Idempotency-Key create exactly one experiment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.models import Experiment

SPEC = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 4, "d": 4, "seed": 9},
    "weight_decay": 0.05,
}


def test_racing_submissions_share_one_experiment(api, pg_engine):
    key = "race-" + __name__

    def submit(_: int):
        resp = api.post("/v1/experiments", json=SPEC, headers={"Idempotency-Key": key})
        return resp.status_code, resp.json()["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(submit, range(16)))
    assert {code for code, _ in answers} <= {200, 202}
    assert [code for code, _ in answers].count(202) == 1
    assert len({exp_id for _, exp_id in answers}) == 1
    with Session(pg_engine) as s:
        count = s.scalar(select(func.count()).where(Experiment.idempotency_key == key))
    assert count == 1
