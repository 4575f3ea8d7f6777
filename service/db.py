"""Engine, sessions, and how the API reaches the database without deadlock.

The API's handlers are async. Each one hands its database work to `Database.run`,
which opens a session in a worker thread, runs one function and closes the session
(returning the connection to the pool) before the thread is released. No request
holds a connection while it waits for anything else, and at most
`db_pool_size + db_max_overflow` threads ask for connections at once, so a burst
of requests queues in order instead of deadlocking threads against connections.
Requests that need no database (`/healthz`) never wait behind those that do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from service.config import get_settings

T = TypeVar("T")

#: What a database outage looks like to a caller: the server refused or dropped the
#: connection, or the pool had no connection to give within DB_POOL_TIMEOUT.
OUTAGES = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


#: SQLSTATEs of a transaction that PostgreSQL aborted to break a deadlock (40P01) or a
#: serialization conflict (40001): nothing of it was kept, so it can simply run again.
CONFLICTS = frozenset({"40P01", "40001"})
#: Tries of one `Database.run` whose transaction keeps being chosen as the victim.
CONFLICT_TRIES = 4


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a transaction aborted by a deadlock or serialization conflict."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in CONFLICTS


def outage_cause(exc: BaseException) -> str:
    """One line saying why the database is away: the driver's first line, not a traceback."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys.

    SQLite commits with synchronous=NORMAL, the setting SQLite advises with WAL: a commit
    no longer waits for an fsync (8.5 ms each on this machine's disk, several per work
    item), and the database stays consistent after any crash; only a power cut may lose
    the last commits, whose work items the reaper then runs again."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    settings = get_settings()
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={"connect_timeout": 5},  # a server that does not answer is an outage
    )


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured DATABASE_URL."""
    settings = get_settings()
    if settings.is_sqlite:
        settings.benignity_home.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


class Database:
    """Runs the API's database work in threads, one short session per call."""

    def __init__(self, factory: Callable[[], Session], concurrency: int) -> None:
        self.factory, self.concurrency = factory, concurrency
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[[Session], T], *, abandon_on_cancel: bool = False) -> T:
        """`fn(session)` in a worker thread; the session is closed before this returns.

        With `abandon_on_cancel`, a caller that is cancelled (a timeout) returns at
        once and the thread finishes, and closes its session, on its own.
        """
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        return await anyio.to_thread.run_sync(
            self._call, fn, limiter=self._limiter, abandon_on_cancel=abandon_on_cancel
        )

    def _call(self, fn: Callable[[Session], T]) -> T:
        """`fn` in a fresh session, run again (up to CONFLICT_TRIES) when PostgreSQL aborts
        its transaction to break a deadlock: e.g. a cancel (experiment, then its work items)
        against a worker's claim (a work item, then its experiment)."""
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                with self.factory() as session:
                    return fn(session)
            except sa_exc.OperationalError as exc:
                if attempt == CONFLICT_TRIES or not is_conflict(exc):
                    raise
            time.sleep(random.uniform(0, 0.05 * attempt))  # noqa: S311 - jitter, not secrets
        raise AssertionError("unreachable")


@lru_cache
def get_database() -> Database:
    """The process-wide Database; its concurrency matches the connection pool."""
    settings = get_settings()
    return Database(get_sessionmaker(), settings.db_pool_size + settings.db_max_overflow)


async def database() -> Database:
    """FastAPI dependency (async, so it costs no thread)."""
    return get_database()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for workers)."""
    with get_sessionmaker()() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def reset_caches() -> None:
    """Forget the cached settings, engine and sessionmaker (tests, CLI)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_database.cache_clear()
    get_sessionmaker.cache_clear()
    get_engine.cache_clear()
    get_settings.cache_clear()
