"""A live API server (uvicorn in a thread) on the session's PostgreSQL and Redis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn

from tests.conftest import use_settings


@pytest.fixture
def live_server(pg_engine, redis_client, monkeypatch, tmp_path) -> Iterator[Callable[..., str]]:
    """Start the API with these settings over the test database; returns its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**env: str) -> str:
        from service.app import create_app

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
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=free, log_level="warning")
        srv = uvicorn.Server(config)
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        servers.append((srv, thread))
        deadline = time.monotonic() + 30
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{free}"

    yield start
    for srv, thread in servers:
        srv.should_exit = True
        thread.join(timeout=30)
