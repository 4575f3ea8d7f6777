"""Fixtures for the real services: PostgreSQL, Redis and Celery worker processes.

The test session owns its state. It creates a fresh PostgreSQL database with a unique
name on the server of TEST_DATABASE_URL (default: the local server's `postgres`
database), migrates it with Alembic, and drops it at the end. It starts its own
`redis-server` on a free port (unless TEST_BROKER_URL names a Redis to use instead) and
stops it at the end. Both are created on first use: a run without tests that need them
creates neither.

PG_URL and REDIS_URL are fixed when this module is imported, so test modules may import
them; the database and the server behind them exist once `pg_engine` and `redis_client`
have been set up.

With REQUIRE_SERVICES=1 (as in CI) a missing service fails the tests that need it;
otherwise they are skipped. The session fails if it leaves behind a database of its own
(benignity_test_<pid>_...) or its redis-server; with CI=true, also if the keyspace of the
host's Redis at 127.0.0.1:6379 changed (other test sessions on a shared host would make
that check noisy, so it is left to CI).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from tests.services import RedisServer, free_port, host_keyspace, keyspace_changes

#: The session's own BENIGNITY_HOME: whatever a test runs in process (a job, a worker's
#: kernel cache: workers.celery_app points it at the home when imported) writes here, never
#: into the checkout's default ./.benignity or the user's own home. Removed at the end.
SESSION_HOME = tempfile.mkdtemp(prefix="benignity-tests-")
os.environ["BENIGNITY_HOME"] = SESSION_HOME

REQUIRED = os.environ.get("REQUIRE_SERVICES") == "1"
IN_CI = os.environ.get("CI") == "true"
T = TypeVar("T")
_BEFORE = pytest.StashKey[tuple[Any, Any]]()  # host state at session start


def _session_names() -> tuple[str, int]:
    """This process's database name and Redis port, the same however often it is imported."""
    mine = os.environ.get("BENIGNITY_TEST_SESSION", "").split(":")
    if len(mine) == 3 and mine[0] == str(os.getpid()):
        return mine[1], int(mine[2])
    name = f"benignity_test_{os.getpid()}_{secrets.token_hex(4)}"
    port = free_port()
    os.environ["BENIGNITY_TEST_SESSION"] = f"{os.getpid()}:{name}:{port}"
    return name, port


def _postgres_url(url: str) -> URL:
    parsed = make_url(url)
    return (
        parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed
    )


DB_NAME, REDIS_PORT = _session_names()
SESSION_PREFIX = f"benignity_test_{os.getpid()}_"
#: The server and maintenance database to run CREATE DATABASE on.
ADMIN_URL = _postgres_url(
    os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
)
#: The session's own database.
PG_URL: str = ADMIN_URL.set(database=DB_NAME).render_as_string(hide_password=False)
EXTERNAL_REDIS = os.environ.get("TEST_BROKER_URL")
#: The session's Redis: its own redis-server, or TEST_BROKER_URL.
REDIS_URL: str = EXTERNAL_REDIS or f"redis://127.0.0.1:{REDIS_PORT}/0"


def _missing(what: str, exc: BaseException) -> None:
    msg = f"{what} is not available: {type(exc).__name__}: {exc}"
    if REQUIRED:
        pytest.fail(f"{msg} (REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(msg)


def eventually(
    probe: Callable[[], T],
    timeout: float,
    until: Callable[[T], object] = bool,
    what: str = "the condition",
    interval: float = 0.05,
) -> T:
    """Call `probe` until `until(value)` holds and return that value; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g} s; last: {value!r}")
        time.sleep(interval)


# --- PostgreSQL ---------------------------------------------------------------------


def _admin() -> Engine:
    """The maintenance database, one connection per use (none left open)."""
    return create_engine(
        ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )


def _create_database(admin: Engine) -> None:
    for attempt in range(5):  # template1 is briefly busy while another session copies it
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
            return
        except Exception as exc:
            if "being accessed by other users" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.5 + attempt)


def drop_database(admin: Engine) -> None:
    """Drop the session's database; its remaining sessions (workers, say) are terminated."""
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    """The session's own database, created and migrated to head with Alembic, dropped at the end."""
    admin = _admin()
    try:
        _create_database(admin)
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        _missing("PostgreSQL", exc)
    engine = create_engine(PG_URL, pool_pre_ping=True)
    try:
        from service.migrate import upgrade

        upgrade(PG_URL)
        yield engine
    finally:
        engine.dispose()
        drop_database(admin)
        admin.dispose()


# --- Redis --------------------------------------------------------------------------


_servers: list[RedisServer] = []


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisServer | None]:
    """The session's own redis-server on REDIS_URL's port; None when TEST_BROKER_URL is set."""
    if EXTERNAL_REDIS:
        yield None
        return
    server = RedisServer(REDIS_PORT)
    _servers.append(server)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - no binary, port taken, ...
        server.remove()
        _missing("redis-server", exc)
    yield server
    server.remove()


@pytest.fixture(scope="session")
def redis_client(redis_process: RedisServer | None) -> Iterator[redis.Redis]:
    """A client of REDIS_URL, its database emptied before and after the session."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _missing("Redis", exc)
    client.flushdb()
    yield client
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def private_redis(
    redis_process: RedisServer | None, redis_client: redis.Redis
) -> Iterator[RedisServer]:
    """The session's redis-server, for tests that restart it; skipped with TEST_BROKER_URL."""
    if redis_process is None:
        pytest.skip("TEST_BROKER_URL names an outside Redis; this test restarts the session's own")
    yield redis_process
    redis_client.connection_pool.disconnect()  # connections to a server that has restarted


def use_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Point the service's settings at `env` and forget cached engines and clients."""
    from service import db, dispatch

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    db.reset_caches()
    dispatch.reset()


# --- the host is left as it was -----------------------------------------------------


def _databases() -> set[str] | None:
    admin = _admin()
    try:
        with admin.connect() as conn:
            return set(conn.scalars(text("SELECT datname FROM pg_database")))
    except Exception:  # noqa: BLE001 - no server, nothing of ours on it
        return None
    finally:
        admin.dispose()


def _ours(databases: set[str] | None) -> set[str]:
    """The databases this process could have made (the name carries its pid)."""
    return {name for name in databases or () if name.startswith(SESSION_PREFIX)}


def pytest_sessionstart(session: pytest.Session) -> None:
    # Other sessions may come and go meanwhile: only what this one could have made counts.
    session.config.stash[_BEFORE] = (host_keyspace() if IN_CI else None, _ours(_databases()))


@pytest.hookimpl(trylast=True)  # after the runner's teardown of session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    keyspace, databases = session.config.stash.get(_BEFORE, (None, set()))
    left = [f"database {name}" for name in sorted(_ours(_databases()) - databases)]
    if f"database {DB_NAME}" in left:
        left[left.index(f"database {DB_NAME}")] += " (dropped now)"
        admin = _admin()
        drop_database(admin)
        admin.dispose()
    for server in _servers:
        if server.alive():
            left.append(f"redis-server on port {server.port} (stopped now)")
            server.remove()
    if IN_CI and keyspace is not None:
        left += keyspace_changes(keyspace, host_keyspace() or {})
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the test session left the host changed:", *left]
        if reporter is not None:
            reporter.write_line("")  # end the progress line
            reporter.write_sep("!", "host state not restored", red=True)
            for line in lines:
                reporter.write_line(line, red=True)
        else:
            print("\n".join(lines), file=sys.stderr)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _session_home() -> Iterator[str]:
    yield SESSION_HOME
    shutil.rmtree(SESSION_HOME, ignore_errors=True)
