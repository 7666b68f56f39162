"""Alembic's migrations produce exactly the schema the models describe, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conductor.store.models import Base


def test_migrations_match_models(database):
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_repeatable(tmp_path):
    from conductor.store.db import upgrade

    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)  # at head already: a no-op, not an error
