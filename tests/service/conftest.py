"""A live API server (uvicorn in a thread) on the session's PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import use_settings
from tests.services import ThreadedAPI


@pytest.fixture
def live_server(pg_engine, redis_client, monkeypatch, tmp_path) -> Iterator[Callable[..., str]]:
    """Start the API with these settings over the test database; returns its base URL."""
    servers: list[ThreadedAPI] = []

    def start(**env: str) -> str:
        kwargs = redis_client.connection_pool.connection_kwargs
        host, port = kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379)
        base_env = {
            "DATABASE_URL": pg_engine.url.render_as_string(hide_password=False),
            "BROKER_URL": f"redis://{host}:{port}/0",
            "BENIGNITY_HOME": str(tmp_path),
            "API_TOKENS": "",
            "RATE_LIMIT": "",
        }
        use_settings(monkeypatch, **{**base_env, **env})
        servers.append(ThreadedAPI())
        return servers[-1].url

    yield start
    for api in servers:
        api.stop()
