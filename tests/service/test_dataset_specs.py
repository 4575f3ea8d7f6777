"""Issue 10's dataset options through POST /v1/experiments: correlated data, theorem2's rng."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from tests.service.test_api import SPEC, assert_problem, broker, make_client  # noqa: F401 - fixture

CORRELATED = {"generator": "correlated", "n": 6, "d": 10, "rho": 0.5}


@pytest.fixture
def client(pg_engine, broker: redis.Redis, monkeypatch) -> Iterator[TestClient]:  # noqa: F811
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")


def submit(client: TestClient, dataset: dict) -> dict:
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": dataset})
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_correlated_is_accepted_with_defaults(client: TestClient, broker: redis.Redis) -> None:  # noqa: F811
    exp = submit(client, CORRELATED)
    assert exp["spec"]["dataset"] == {**CORRELATED, "teacher_width": 10, "seed": 0}
    assert exp["status"] == "queued"
    assert broker.llen("cpu") == 1
    assert submit(client, {**CORRELATED, "rho": 0, "n": 10})["spec"]["dataset"]["rho"] == 0


@pytest.mark.parametrize("rho", [1, 1.0, -0.1])
def test_correlated_rho_outside_0_1_is_422(client: TestClient, rho: float) -> None:
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": {**CORRELATED, "rho": rho}})
    problem = assert_problem(resp, 422, "rho")
    assert [e["loc"][-1] for e in problem["errors"]] == ["rho"], problem


def test_correlated_rho_is_required(client: TestClient) -> None:
    dataset = {key: v for key, v in CORRELATED.items() if key != "rho"}
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": dataset})
    problem = assert_problem(resp, 422, "rho")
    assert [e["loc"][-1] for e in problem["errors"]] == ["rho"], problem


def test_correlated_needs_d_at_least_n(client: TestClient) -> None:
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": {**CORRELATED, "d": 5}})
    problem = assert_problem(resp, 422, "correlated data needs d >= n, got n=6, d=5")
    assert any("dataset" in e["loc"] for e in problem["errors"]), problem


@pytest.mark.parametrize("generator", ["orthogonal", "correlated"])
def test_correlated_is_planned_as_orthogonal(client: TestClient, generator: str) -> None:
    # plans.pattern_bound: d >= n and independent points give all 2^n patterns.
    dataset = {"generator": generator, "n": 30, "d": 30}
    dataset |= {"rho": 0.5} if generator == "correlated" else {}
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": dataset})
    assert_problem(resp, 422, "1073741824 activation patterns")


@pytest.mark.parametrize("rng", ["paper", "default"])
def test_theorem2_rng_is_accepted(client: TestClient, rng: str) -> None:
    exp = submit(client, {"generator": "theorem2", "d": 4, "rng": rng})
    assert exp["spec"]["dataset"]["rng"] == rng


def test_theorem2_rng_defaults_to_the_service_generator(client: TestClient) -> None:
    assert submit(client, {"generator": "theorem2", "d": 4})["spec"]["dataset"]["rng"] == "default"


def test_theorem2_unknown_rng_is_422(client: TestClient) -> None:
    resp = client.post(
        "/v1/experiments",
        json={**SPEC, "dataset": {"generator": "theorem2", "d": 4, "rng": "numpy"}},
    )
    problem = assert_problem(resp, 422, "rng", "paper")
    assert [e["loc"][-1] for e in problem["errors"]] == ["rng"], problem


def test_errors_are_located_without_the_generator_tag(client: TestClient) -> None:
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": {**CORRELATED, "rho": 1}})
    assert [e["loc"] for e in resp.json()["errors"]] == [["body", "dataset", "rho"]]
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": {**CORRELATED, "d": 5}})
    assert [e["loc"] for e in resp.json()["errors"]] == [["body", "dataset"]]


def test_paper_rng_refuses_seeds_numpy_cannot_take(client: TestClient) -> None:
    dataset = {"generator": "theorem2", "d": 4, "rng": "paper", "seed": 2**32}
    resp = client.post("/v1/experiments", json={**SPEC, "dataset": dataset})
    problem = assert_problem(resp, 422, "2**32")
    assert [e["loc"] for e in problem["errors"]] == [["body", "dataset"]], problem
