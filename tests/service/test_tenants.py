"""Tenants apart: reads, lists, cancels, reports and idempotency keys; quotas and rate limits."""

from __future__ import annotations

import pytest

from tests.service.test_api import SPEC, assert_problem, make_client

TOKENS = "lab-a:a-one,lab-a:a-two,lab-b:b-one,ops:root-token,bare-token"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


A1, A2, B, ROOT, BARE = (auth(t) for t in ("a-one", "a-two", "b-one", "root-token", "bare-token"))


@pytest.fixture
def tenants(pg_engine, redis_client, monkeypatch):
    yield from make_client(pg_engine, monkeypatch, API_TOKENS=TOKENS, ADMIN_TENANT="ops")


def test_a_tenant_sees_only_its_own_experiments(tenants):
    client = tenants
    mine = client.post("/v1/experiments", json=SPEC, headers=A1).json()["id"]
    theirs = client.post("/v1/experiments", json=SPEC, headers=B).json()["id"]
    census = {**SPEC, "kind": "census", "widths": [4], "samples_per_width": 2}
    their_census = client.post("/v1/experiments", json=census, headers=B).json()["id"]

    # both tokens of lab-a are one tenant
    assert client.get(f"/v1/experiments/{mine}", headers=A2).status_code == 200
    listed = {e["id"] for e in client.get("/v1/experiments", headers=A2).json()["items"]}
    assert mine in listed and theirs not in listed and their_census not in listed

    # another tenant's id answers exactly as an unknown id does
    for path in (
        f"/v1/experiments/{theirs}",
        f"/v1/experiments/{theirs}/runs",
        f"/v1/experiments/{their_census}/cones",
        f"/v1/experiments/{theirs}/runs/{'0' * 32}/curve",
        f"/v1/experiments/{their_census}/figure.svg",
        f"/v1/experiments/{theirs}/export.csv",
        f"/v1/experiments/{theirs}/export.parquet",
    ):
        assert_problem(client.get(path, headers=A1), 404, "no experiment")
    assert_problem(client.post(f"/v1/experiments/{theirs}/cancel", headers=A1), 404)
    assert client.get(f"/v1/experiments/{theirs}", headers=B).json()["status"] == "queued"

    # a bare token is its own tenant; the admin tenant sees everyone's
    assert_problem(client.get(f"/v1/experiments/{mine}", headers=BARE), 404)
    everyone = {e["id"] for e in client.get("/v1/experiments", headers=ROOT).json()["items"]}
    assert {mine, theirs, their_census} <= everyone
    assert client.post(f"/v1/experiments/{theirs}/cancel", headers=ROOT).status_code == 202


def test_idempotency_keys_are_per_tenant(tenants):
    client = tenants
    key = {"Idempotency-Key": "nightly-1"}
    a = client.post("/v1/experiments", json=SPEC, headers={**A1, **key})
    b = client.post("/v1/experiments", json=SPEC, headers={**B, **key})
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["id"] != b.json()["id"]
    # lab-b reusing the key with another body learns nothing about lab-a's use of it
    other = {**SPEC, "weight_decay": 0.5}
    c = client.post("/v1/experiments", json=other, headers={**B, "Idempotency-Key": "x"})
    assert c.status_code == 202
    again = client.post("/v1/experiments", json=SPEC, headers={**A2, **key})
    assert again.status_code == 200 and again.json()["id"] == a.json()["id"]
    assert_problem(
        client.post("/v1/experiments", json=other, headers={**A1, **key}), 422, "Idempotency-Key"
    )


def test_quota_on_active_work_items_is_429_with_retry_after(pg_engine, redis_client, monkeypatch):
    for client in make_client(pg_engine, monkeypatch, API_TOKENS=TOKENS, QUOTA_ACTIVE_ITEMS="2"):
        for _ in range(2):  # an optimum is one work item
            assert client.post("/v1/experiments", json=SPEC, headers=A1).status_code == 202
        over = client.post("/v1/experiments", json=SPEC, headers=A2)
        body = assert_problem(over, 429, "2 work items queued or running", "quota of 2")
        assert int(over.headers["retry-after"]) > 0 and body["status"] == 429
        assert client.post("/v1/experiments", json=SPEC, headers=B).status_code == 202
        # cancelling frees the quota
        first = client.get("/v1/experiments", headers=A1).json()["items"][-1]["id"]
        client.post(f"/v1/experiments/{first}/cancel", headers=A1)
        assert client.post("/v1/experiments", json=SPEC, headers=A1).status_code == 202


def test_rate_limit_is_per_tenant_with_retry_after(pg_engine, redis_client, monkeypatch):
    for client in make_client(pg_engine, monkeypatch, API_TOKENS=TOKENS, RATE_LIMIT="5/minute"):
        for _ in range(5):
            assert client.get("/v1/experiments", headers=A1).status_code == 200
        over = client.get("/v1/experiments", headers=A2)
        assert_problem(over, 429, "lab-a", "5/minute")
        assert 0 < int(over.headers["retry-after"]) <= 60
        assert client.get("/v1/experiments", headers=B).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes are not rate limited


def test_polls_answered_from_the_cache_keep_tenants_apart(tenants):
    client = tenants
    mine = client.post("/v1/experiments", json=SPEC, headers=A1).json()["id"]
    path = f"/v1/experiments/{mine}"
    first = client.get(path, headers=A1)  # read, and kept for the pollers' fast path
    again = client.get(path, headers=A2)  # same tenant: answered from the cache
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert (
        client.get(path, headers={**A1, "If-None-Match": first.headers["etag"]}).status_code == 304
    )
    assert_problem(client.get(path, headers=B), 404)  # another tenant is never answered from it
    assert_problem(client.get(path), 401)
    assert_problem(client.get(path, headers=auth("wrong")), 401)
    assert client.get(path, headers=ROOT).json()["id"] == mine
    text = client.get("/metrics").text
    assert 'route="/v1/experiments/{experiment_id}",status="304"' in text
