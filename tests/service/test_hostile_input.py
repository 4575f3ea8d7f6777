"""Never a 5xx for input: crafted cursors, ids and integers; bounded metrics; 503 in outages."""

from __future__ import annotations

import base64
import logging
import random

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.conftest import use_settings
from tests.service.test_api import SPEC, assert_problem

CENSUS = {**SPEC, "kind": "census", "widths": [4], "samples_per_width": 2}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSORS = [
    b64(b"[1e400]"),
    b64(b"[1e400, 1e400]"),
    b64(b'["2026-01-01T00:00:00", 5]'),
    b64(b"[99999999999]"),
    b64(b"[-1, -1]"),
    b64(b"\x00"),
    b64(b'{"a": 1}'),
    "\x00",
    "%%%",
]


@pytest.mark.parametrize("cursor", CURSORS)
def test_crafted_cursors_are_422(client, cursor):
    exp = client.post("/v1/experiments", json=CENSUS).json()["id"]
    for path in ("/v1/experiments", f"/v1/experiments/{exp}/runs", f"/v1/experiments/{exp}/cones"):
        assert_problem(client.get(path, params={"cursor": cursor}), 422, "cursor")


def test_a_cursor_of_one_kind_is_refused_by_the_others(client):
    exp = client.post("/v1/experiments", json=CENSUS).json()["id"]
    cone_cursor = b64(b"[1,2]")  # (width, sample)
    assert client.get(f"/v1/experiments/{exp}/cones", params={"cursor": cone_cursor}).is_success
    for path in ("/v1/experiments", f"/v1/experiments/{exp}/runs"):
        assert_problem(client.get(path, params={"cursor": cone_cursor}), 422, "cursor")


def test_out_of_range_integers_and_odd_ids(client):
    exp = client.post("/v1/experiments", json=CENSUS).json()["id"]
    cones = f"/v1/experiments/{exp}/cones"
    assert_problem(client.get(cones, params={"width": 99999999999}), 422, "width")
    assert_problem(client.get(cones, params={"width": 2**31}), 422, "width")
    assert client.get(cones, params={"width": 2**31 - 1}).json()["items"] == []
    for path in (
        "/v1/experiments/%00",
        f"/v1/experiments/{exp}%00",
        "/v1/experiments/%00/runs",
        f"/v1/experiments/{exp}/runs/%00/curve",
        "/v1/experiments/" + "f" * 5000,
        "/v1/experiments/%FF%FE/cones",
    ):
        assert_problem(client.get(path), 404)
    assert_problem(client.post("/v1/experiments/%00/cancel"), 404)


def test_metrics_series_stay_bounded_under_junk(client):
    def series() -> int:
        text_ = client.get("/metrics").text
        return sum(1 for line in text_.splitlines() if line.startswith("benignity_http_"))

    def junk(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(100):
            for method in ("GET", "POST", "BREW", "PROPFIND", f"X{seed}-{i}", "DELETE"):
                client.request(method, f"/junk/{rng.getrandbits(64):x}")
                client.request(method, f"/v1/experiments/{rng.getrandbits(64):x}")

    junk(0)
    series()  # /metrics itself is counted after its first answer
    first = series()
    junk(1)  # 400 more requests with new methods and paths add no series
    assert series() == first
    assert 'method="other"' in client.get("/metrics").text
    assert "/junk/" not in client.get("/metrics").text


def _set_connections(admin_url: str, database: str, allowed: bool) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
    engine.dispose()


def test_database_outage_is_503_with_retry_after_and_one_log_line(
    pg_engine, redis_client, monkeypatch, tmp_path, caplog
):
    from service.app import create_app

    url = pg_engine.url
    database = url.database
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    broker = redis_client.connection_pool.connection_kwargs
    use_settings(
        monkeypatch,
        DATABASE_URL=url.render_as_string(hide_password=False),
        BROKER_URL=f"redis://{broker.get('host', '127.0.0.1')}:{broker.get('port', 6379)}/0",
        BENIGNITY_HOME=str(tmp_path),
        API_TOKENS="",
    )
    with TestClient(create_app()) as client:
        exp = client.post("/v1/experiments", json=SPEC).json()["id"]
        assert client.get(f"/v1/experiments/{exp}").status_code == 200
        _set_connections(admin, database, allowed=False)
        try:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="benignity.api"):
                answers = [
                    client.get("/v1/experiments"),
                    client.post("/v1/experiments", json={**SPEC, "seed": 1}),
                    client.get(f"/v1/experiments/{'0' * 32}"),
                ]
            for resp in answers:
                assert_problem(resp, 503, "database is unavailable")
                assert int(resp.headers["retry-after"]) > 0
            records = [r for r in caplog.records if r.name == "benignity.api"]
            assert len(records) == len(answers), [r.getMessage() for r in records]
            assert all(r.exc_info is None for r in records)  # a line each, no traceback
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
        finally:
            _set_connections(admin, database, allowed=True)
        assert client.get(f"/v1/experiments/{exp}").status_code == 200  # back by itself


@pytest.fixture
def client(pg_engine, redis_client, monkeypatch):
    from tests.service.test_api import make_client

    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")
