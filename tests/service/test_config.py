"""Settings: embedded defaults, URL normalisation and the production guard rails."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_embedded_defaults_live_under_home(tmp_path):
    s = Settings(benignity_home=tmp_path, database_url="", broker_url="")
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'benignity.db'}"
    assert s.broker_url == "filesystem://" and s.is_sqlite and s.tokens == []


def test_postgres_urls_are_normalised_to_psycopg3():
    s = Settings(database_url="postgres://u@h:5432/db")
    assert s.database_url == "postgresql+psycopg://u@h:5432/db"


def test_tokens_are_split_and_trimmed():
    assert Settings(api_tokens=" a, b ,,c").tokens == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"database_url": "postgresql://h/db", "broker_url": "redis://h"}, "API_TOKENS"),
        ({"api_tokens": "t", "broker_url": "redis://h", "database_url": ""}, "embedded"),
        ({"api_tokens": "t", "database_url": "postgresql://h/db", "broker_url": ""}, "embedded"),
    ],
)
def test_production_refuses_unsafe_values(fields, reason):
    with pytest.raises(ValidationError, match=reason):
        Settings(environment="production", **fields)


def test_production_accepts_servers_and_tokens():
    s = Settings(
        environment="production",
        api_tokens="t",
        database_url="postgresql://h/db",
        broker_url="redis://h:6379/0",
    )
    assert s.database_url.startswith("postgresql+psycopg://")


def test_heartbeat_timeout_must_exceed_two_intervals():
    with pytest.raises(ValidationError, match="HEARTBEAT_TIMEOUT"):
        Settings(heartbeat_interval=5, heartbeat_timeout=8)
