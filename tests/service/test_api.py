"""The HTTP API against a real PostgreSQL and Redis; each test's rows are rolled back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.conftest import PG_URL, REDIS_URL, use_settings

BROKER = REDIS_URL  # the test session's own redis-server
SPEC = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 6, "d": 10},
    "weight_decay": 0.01,
}
PROBLEM = "application/problem+json"


def make_client(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch, **env: str
) -> Iterator[TestClient]:
    from service.app import create_app
    from service.db import Database, database

    use_settings(monkeypatch, **{"DATABASE_URL": PG_URL, "BROKER_URL": BROKER, **env})
    conn = pg_engine.connect()
    outer = conn.begin()

    def session() -> Session:
        return Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)

    async def rolled_back() -> Database:
        return Database(session, concurrency=1)

    app = create_app()
    app.dependency_overrides[database] = rolled_back
    with TestClient(app) as client:
        yield client
    outer.rollback()
    conn.close()


@pytest.fixture
def broker(redis_client) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def client(pg_engine, broker, monkeypatch) -> Iterator[TestClient]:
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")


def assert_problem(resp, status: int, *fragments: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and body["title"] and body["type"]
    for fragment in fragments:
        assert fragment in json.dumps(body), (fragment, body)
    return body


def test_submit_returns_202_with_location_and_enqueues(client, broker):
    resp = client.post("/v1/experiments", json=SPEC)
    assert resp.status_code == 202, resp.text
    exp = resp.json()
    assert resp.headers["location"] == f"/v1/experiments/{exp['id']}"
    assert exp["status"] == "queued" and exp["progress"] == {"done": 0, "total": 1, "unit": "items"}
    assert exp["spec"]["dataset"]["teacher_width"] == 10 and exp["spec"]["seed"] == 0
    assert exp["result"] is None and exp["error"] is None
    assert client.get(exp["id"] and resp.headers["location"]).json() == exp
    assert broker.llen("cpu") == 1  # the message reached the real broker
    assert client.get(f"/v1/experiments/{exp['id']}/runs").json() == {
        "items": [],
        "next_cursor": None,
    }


def test_list_pages_newest_first_and_filters(client):
    ids = [client.post("/v1/experiments", json={**SPEC, "seed": i}).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/experiments", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:5] == ids[::-1]
    census = client.get("/v1/experiments", params={"kind": "census", "limit": 1000}).json()
    assert all(e["kind"] == "census" for e in census["items"])
    assert not set(ids) & {e["id"] for e in census["items"]}
    queued = client.get("/v1/experiments", params={"status": "queued", "limit": 1000}).json()
    assert set(ids) <= {e["id"] for e in queued["items"]}
    assert_problem(client.get("/v1/experiments", params={"cursor": "???"}), 422, "cursor")
    assert_problem(client.get("/v1/experiments", params={"limit": 0}), 422, "limit")


def test_unknown_experiment_is_404_problem(client):
    assert_problem(client.get("/v1/experiments/nope"), 404, "nope")
    assert_problem(client.post("/v1/experiments/nope/cancel"), 404)
    assert_problem(client.get("/v1/experiments/nope/runs"), 404)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            {**SPEC, "dataset": {"generator": "teacher", "n": 0, "d": 3}},
            "n",
            "greater than or equal",
        ),
        (
            {**SPEC, "dataset": {"generator": "custom", "X": [[1, 0], [0, 1]], "y": [1]}},
            "dataset",
            "2 rows but y has 1",
        ),
        ({**SPEC, "weight_decay": -1}, "weight_decay", "greater than 0"),
        ({**SPEC, "dataset": {"generator": "orthogonal", "n": 5, "d": 3}}, "dataset", "d >= n"),
        ({**SPEC, "kind": "bogus"}, "kind", "does not match"),
        (
            {**SPEC, "dataset": {"generator": "teacher", "n": 30, "d": 30}},
            "dataset",
            "1073741824 activation patterns",
        ),
    ],
)
def test_bad_specs_get_422_with_field_and_reason(client, body, field, reason):
    problem = assert_problem(client.post("/v1/experiments", json=body), 422, reason)
    assert any(field in e["loc"] for e in problem["errors"]), problem


def test_nan_in_raw_json_is_rejected(client):
    raw = json.dumps(SPEC).replace('"weight_decay": 0.01', '"weight_decay": NaN')
    resp = client.post("/v1/experiments", content=raw, headers={"content-type": "application/json"})
    assert_problem(resp, 422, "weight_decay")


def test_malformed_json_is_422(client):
    resp = client.post(
        "/v1/experiments", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(resp, 422, "JSON")


def test_pattern_limit_message_gives_count_and_limit(client):
    body = {**SPEC, "dataset": {"generator": "teacher", "n": 18, "d": 18}}
    assert_problem(client.post("/v1/experiments", json=body), 422, "262144", "150000")
    uniform = {
        **SPEC,
        "kind": "census",
        "widths": [10],
        "samples_per_width": 2,
        "dataset": {"generator": "teacher", "n": 60, "d": 4},
    }
    assert_problem(client.post("/v1/experiments", json=uniform), 422, "68560", "20000")
    rejection = {**uniform, "sampling": "rejection"}
    assert_problem(client.post("/v1/experiments", json=rejection), 422, "use random_vector")
    random_vector = {**uniform, "sampling": "random_vector"}
    assert client.post("/v1/experiments", json=random_vector).status_code == 202


def test_run_and_cone_budgets(client):
    grid = {
        **SPEC,
        "kind": "training",
        "widths": list(range(1, 101)),
        "init_scales": [1.0] * 100,
        "seeds": 2,
        "max_epochs": 10,
    }
    assert_problem(client.post("/v1/experiments", json=grid), 422, "20000 runs", "16384")
    census = {**SPEC, "kind": "census", "widths": [10] * 200, "samples_per_width": 2000}
    assert_problem(client.post("/v1/experiments", json=census), 422, "400000 cones", "200000")


def test_body_over_limit_is_413(pg_engine, broker, monkeypatch):
    for client in make_client(pg_engine, monkeypatch, MAX_BODY_BYTES="4096"):
        X = [[0.5] * 20 for _ in range(100)]
        body = {**SPEC, "dataset": {"generator": "custom", "X": X, "y": [1.0] * 100}}
        assert_problem(client.post("/v1/experiments", json=body), 413, "4096")
        assert client.post("/v1/experiments", json=SPEC).status_code == 202


def test_idempotency_key(client, broker):
    first = client.post("/v1/experiments", json=SPEC, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/experiments", json=SPEC, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert broker.llen("cpu") == 1  # the replay enqueued nothing
    other = client.post(
        "/v1/experiments", json={**SPEC, "weight_decay": 0.02}, headers={"Idempotency-Key": "k-1"}
    )
    assert_problem(other, 422, "Idempotency-Key")


def test_cancel_then_conflict(client):
    exp = client.post("/v1/experiments", json=SPEC).json()
    resp = client.post(f"/v1/experiments/{exp['id']}/cancel")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    assert resp.json()["finished_at"] is not None
    assert_problem(client.post(f"/v1/experiments/{exp['id']}/cancel"), 409, "already finished")


def test_bearer_tokens(pg_engine, broker, monkeypatch):
    for client in make_client(pg_engine, monkeypatch, API_TOKENS="alpha-token, beta-token"):
        resp = client.get("/v1/experiments")
        assert_problem(resp, 401, "missing")
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert_problem(
            client.get("/v1/experiments", headers={"Authorization": "Bearer wrong"}), 401, "invalid"
        )
        assert_problem(
            client.get("/v1/experiments", headers={"Authorization": "Basic beta-token"}), 401
        )
        ok = client.get("/v1/experiments", headers={"Authorization": "Bearer beta-token"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open


def _gauge(text: str, name: str) -> float:
    """A sample's value in Prometheus text, 0 when absent."""
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


@pytest.fixture
def fresh_home_client(pg_engine, broker, monkeypatch, tmp_path) -> Iterator[TestClient]:
    """A client whose BENIGNITY_HOME no worker has used (no kernel built in it)."""
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="", BENIGNITY_HOME=str(tmp_path))


def test_health_ready_metrics(fresh_home_client):
    client = fresh_home_client
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    checks = ready.json()["checks"]
    assert ready.status_code == 200 and (checks["database"], checks["broker"]) == ("ok", "ok")
    assert checks["native_kernel"] == "not built yet"  # no worker has built it in this home
    queued = 'benignity_work_items{queue="cpu",status="queued",task="optimum"}'
    before = _gauge(client.get("/metrics").text, queued)  # other tests may leave some
    client.post("/v1/experiments", json=SPEC)
    text = client.get("/metrics").text
    assert (
        'benignity_http_requests_total{method="POST",route="/v1/experiments",status="202"}' in text
    )
    assert 'benignity_experiments{kind="optimum",status="queued"}' in text
    assert _gauge(text, queued) == before + 1
    cpu_lag = 'benignity_oldest_queued_seconds{queue="cpu"}'
    lag = [line for line in text.splitlines() if line.startswith(cpu_lag)]
    assert len(lag) == 1 and 0 <= float(lag[0].split()[-1]) < 60
    assert 'benignity_oldest_queued_seconds{queue="gpu"} 0.0' in text


def test_readyz_is_503_when_the_broker_is_down(pg_engine, monkeypatch):
    for client in make_client(pg_engine, monkeypatch, BROKER_URL="redis://127.0.0.1:1/0"):
        resp = client.get("/readyz")
        assert resp.status_code == 503 and resp.json()["checks"]["broker"].startswith("error")
        # a submission is still accepted: the reaper sends it once the broker is back
        assert client.post("/v1/experiments", json=SPEC).status_code == 202
