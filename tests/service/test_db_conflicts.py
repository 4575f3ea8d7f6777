"""A request's transaction that PostgreSQL aborts to break a deadlock runs again.

The deadlock is real: another connection holds row 1 and asks for row 2 while the
request's work holds row 2 and asks for row 1 (as a cancel, which locks an experiment and
then its work items, meets a worker's claim, which locks a work item and then its
experiment). The request's session has the shorter deadlock_timeout, so it is the one
PostgreSQL aborts.
"""

from __future__ import annotations

import secrets
import threading

import anyio
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.db import Database


def test_a_transaction_aborted_by_a_deadlock_runs_again(pg_engine):
    table = f"deadlock_probe_{secrets.token_hex(4)}"
    with pg_engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
    other_holds_1, work_holds_2 = threading.Event(), threading.Event()
    attempts: list[int] = []

    def other() -> None:
        with pg_engine.connect() as conn:
            conn.execute(text("SET deadlock_timeout = '20s'"))
            conn.execute(text(f"UPDATE {table} SET v = v + 1 WHERE id = 1"))
            other_holds_1.set()
            assert work_holds_2.wait(20)
            # Whichever of the two waits first, the cycle is found by the request's work
            # (deadlock_timeout 1 s against 20 s here), so no pause is needed to order them.
            conn.execute(text(f"UPDATE {table} SET v = v + 1 WHERE id = 2"))
            conn.commit()

    def work(session: Session) -> int:
        attempts.append(1)
        session.execute(text("SET LOCAL deadlock_timeout = '1s'"))
        session.execute(text(f"UPDATE {table} SET v = v + 10 WHERE id = 2"))
        if len(attempts) == 1:
            work_holds_2.set()
            assert other_holds_1.wait(20)
        session.execute(text(f"UPDATE {table} SET v = v + 10 WHERE id = 1"))
        session.commit()
        return len(attempts)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert other_holds_1.wait(20)
        db = Database(sessionmaker(bind=pg_engine), 2)
        assert anyio.run(db.run, work) == 2  # the first try was the deadlock's victim
    finally:
        thread.join(timeout=60)
        with pg_engine.begin() as conn:
            values = dict(conn.execute(text(f"SELECT id, v FROM {table}")).all())
            conn.execute(text(f"DROP TABLE {table}"))
    assert values == {1: 11, 2: 11}  # both transactions committed once each
