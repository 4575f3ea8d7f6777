"""Many concurrent requests against a one-connection pool: all answer, none deadlock.

Before the API's handlers were async, 64 concurrent pollers got 5 answers in 20 s:
threads held connections while waiting for other threads. Here a real uvicorn
server on PostgreSQL gets 200 concurrent requests with a pool of one connection
and the poll cache off, so every request queues for that connection.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.service.test_api import SPEC


@pytest.fixture
def server(live_server):
    return live_server(POLL_CACHE_SECONDS="0", DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0")


def test_200_concurrent_requests_on_one_connection_all_answer(server):
    async def run() -> tuple[list[int], list[int]]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=120) as client:
            ids = [(await client.post("/v1/experiments", json=SPEC)).json()["id"] for _ in range(4)]
            paths = [f"/v1/experiments/{ids[i % 4]}" for i in range(150)]
            paths += ["/v1/experiments?limit=5"] * 25 + [f"/v1/experiments/{ids[0]}/runs"] * 25
            answers = asyncio.gather(*(client.get(p) for p in paths))
            probes = [(await client.get("/healthz")).status_code for _ in range(5)]
            return [r.status_code for r in await answers], probes

    statuses, probes = asyncio.run(run())
    assert statuses == [200] * 200
    assert probes == [200] * 5
