"""Labels, filters and DELETE on experiments that real workers ran."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from service.models import CensusCone, Experiment, ExperimentTag, Run, WorkItem
from tests.conftest import eventually
from tests.e2e.conftest import wait_for
from tests.e2e.test_optimum_e2e import SLOW, SPEC
from tests.service.test_api import assert_problem

CENSUS = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 4, "d": 8, "seed": 0},
    "weight_decay": 0.01,
    "widths": [2, 8],
    "samples_per_width": 4,
    "name": "Small census",
    "tags": ["e2e"],
}


def rows_of(pg_engine: Engine, experiment_id: str) -> dict[str, int]:
    with pg_engine.connect() as conn:
        return {
            table.__tablename__: conn.scalar(
                select(func.count()).select_from(table).where(table.experiment_id == experiment_id)
            )
            for table in (Run, WorkItem, CensusCone, ExperimentTag)
        }


def test_a_finished_census_is_found_relabelled_and_deleted(api, start_worker, pg_engine):
    start_worker()
    exp = api.post("/v1/experiments", json=CENSUS).json()
    done = wait_for(api, exp["id"], timeout=240)
    assert done["status"] == "succeeded", done
    found = api.get("/v1/experiments", params={"tag": "e2e", "name": "small", "n": 4, "d": 8})
    assert [e["id"] for e in found.json()["items"]] == [exp["id"]]

    url = f"/v1/experiments/{exp['id']}"
    etag = api.get(url).headers["etag"]  # a finished experiment's ETag holds still
    patched = api.patch(url, json={"tags": ["e2e", "kept"]}, headers={"If-Match": etag})
    assert patched.status_code == 200 and patched.json()["result"] == done["result"]
    assert api.get("/v1/experiments", params={"tag": "kept"}).json()["items"][0]["id"] == exp["id"]

    before = rows_of(pg_engine, exp["id"])
    assert (before["runs"], before["census_cones"], before["experiment_tags"]) == (2, 8, 2)
    assert before["work_items"] > 0
    assert api.delete(url).status_code == 204
    assert rows_of(pg_engine, exp["id"]) == dict.fromkeys(before, 0)
    assert_problem(api.get(url), 404)
    assert_problem(api.delete(url), 404)


def test_deleting_a_cancelled_experiment_while_its_work_still_stops(api, start_worker, pg_engine):
    start_worker()
    slow = api.post("/v1/experiments", json=SLOW).json()
    url = f"/v1/experiments/{slow['id']}"
    eventually(lambda: api.get(url).json()["status"], 60, lambda s: s == "running", "running")
    assert_problem(api.delete(url), 409, "cancel it first")
    assert api.post(f"{url}/cancel").status_code == 202
    assert api.delete(url).status_code == 204  # its work item may still be running
    with pg_engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(Experiment.id == slow["id"])) == 0
    assert set(rows_of(pg_engine, slow["id"]).values()) == {0}
    # the worker lets the vanished item go and takes the next experiment
    after = api.post("/v1/experiments", json=SPEC).json()
    assert wait_for(api, after["id"])["status"] == "succeeded"
