"""An unknown query parameter is a 422 that names it and the closest known one, so a
typo never silently widens a filter (shared/API.md, "Finding")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.service.test_api import SPEC, assert_problem, broker, make_client  # noqa: F401 - fixture


@pytest.fixture
def client(pg_engine, broker, monkeypatch) -> Iterator[TestClient]:  # noqa: F811
    yield from make_client(pg_engine, monkeypatch, API_TOKENS="")


def test_a_misspelt_filter_is_refused_with_a_hint(client):
    assert client.get("/v1/experiments", params={"status": "failed"}).status_code == 200
    resp = client.get("/v1/experiments", params={"statu": "failed"})
    (error,) = assert_problem(resp, 422, "statu")["errors"]
    assert error["loc"] == ["query", "statu"]
    assert "did you mean 'status'?" in error["msg"]
    two = client.get("/v1/experiments", params={"tags": "x", "created_since": "2026-01-01"})
    errors = assert_problem(two, 422)["errors"]
    assert [e["loc"] for e in errors] == [["query", "tags"], ["query", "created_since"]]
    assert "did you mean 'tag'?" in errors[0]["msg"]


def test_routes_with_query_parameters_of_their_own_still_take_them(client):
    exp = client.post("/v1/experiments", json=SPEC).json()
    base = f"/v1/experiments/{exp['id']}"
    assert client.get(base).status_code == 200
    assert client.get(f"{base}/runs", params={"limit": 5}).status_code == 200
    wrong = client.get(f"{base}/runs", params={"limt": 5})
    assert "did you mean 'limit'?" in assert_problem(wrong, 422)["errors"][0]["msg"]
    assert client.get(base, params={"wait": 0.2}).status_code == 200  # the long-poll
