"""A rolled-back PostgreSQL session for the work-item lifecycle tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session


@pytest.fixture
def session(pg_engine) -> Iterator[Session]:
    """A session in a transaction that is rolled back."""
    conn = pg_engine.connect()
    outer = conn.begin()
    with Session(bind=conn, join_transaction_mode="create_savepoint") as s:
        yield s
    outer.rollback()
    conn.close()
