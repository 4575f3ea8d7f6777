"""Alembic migrations, shipped with the package as `benignity_migrations`."""
