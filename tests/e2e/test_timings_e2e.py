"""A census run by a real worker reports the timings that its stored timestamps give."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.orm import Session

from tests.e2e.conftest import wait_for
from tests.e2e.test_census_e2e import SPEC
from tests.service.test_timings import _close, _expected


def test_a_finished_census_reports_its_stage_timings(api, start_worker, pg_engine):
    start_worker()
    exp = api.post("/v1/experiments", json=SPEC).json()
    done = wait_for(api, exp["id"], timeout=240)
    assert done["status"] == "succeeded", done
    timings = done["timings"]
    created, started, finished = (
        datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert timings["submit_to_done"] == pytest.approx((finished - created).total_seconds())
    assert timings["submit_to_start"] == pytest.approx((started - created).total_seconds())
    with Session(pg_engine) as session:
        expected = _expected(session, exp["id"])
    optimum, chunks = timings["stages"]
    assert optimum["task"] == "optimum" and chunks["task"] == "census_chunk"
    for got, want in zip(timings["stages"], expected, strict=True):
        assert _close(got, want), (got, want)
    assert chunks["items"] == chunks["finished"] >= 3  # every width in chunks of its own
    assert 0 <= chunks["release"] < timings["submit_to_done"]
    assert chunks["run"]["max"] <= chunks["wall"] < timings["submit_to_done"]
