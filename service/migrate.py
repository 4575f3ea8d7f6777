"""Run Alembic migrations from code (no alembic.ini needed)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from alembic import command
from alembic.config import Config


def _migrations_folder() -> Path:
    """migrations/ beside service/ in a checkout, else the copy the wheel installed."""
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    spec = find_spec("benignity_migrations")
    if spec is None or spec.origin is None:
        raise RuntimeError("the migrations are missing: reinstall benignity")
    return Path(spec.origin).parent


MIGRATIONS = _migrations_folder()


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at migrations/, for `url` or the configured database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """`alembic upgrade head` against `url` (default: DATABASE_URL)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
