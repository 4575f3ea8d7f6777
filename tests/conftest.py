"""Fixtures for the real services: PostgreSQL, Redis and Celery worker processes.

With REQUIRE_SERVICES=1 (as in CI) a missing service fails the tests that need
it; otherwise they are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
REQUIRED = os.environ.get("REQUIRE_SERVICES") == "1"


def _missing(what: str, exc: Exception) -> None:
    msg = f"{what} is not reachable: {type(exc).__name__}: {exc}"
    if REQUIRED:
        pytest.fail(f"{msg} (REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    """The test database, emptied and migrated to head with Alembic once per session."""
    engine = create_engine(PG_URL, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    except Exception as exc:  # noqa: BLE001
        _missing("PostgreSQL", exc)
    from service.migrate import upgrade

    upgrade(PG_URL)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _missing("Redis", exc)
    client.flushdb()
    yield client
    client.flushdb()


def use_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Point the service's settings at `env` and forget cached engines and clients."""
    from service import db, dispatch

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    db.reset_caches()
    dispatch.reset()
