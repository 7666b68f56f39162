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


def test_migration_files_are_a_numbered_line_so_the_head_is_known_without_alembic():
    from alembic.script import ScriptDirectory

    from conductor.store.db import MIGRATIONS, alembic_config, head_revision

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_current_head() == head_revision()
    for rev in script.walk_revisions():
        (path,) = (MIGRATIONS / "versions").glob(f"{rev.revision}_*.py")  # file NNNN_name.py holds revision NNNN
        assert rev.down_revision == (None if rev.revision == "0001" else f"{int(rev.revision) - 1:04d}")


def test_ensure_head_migrates_a_new_file_and_leaves_one_at_head_alone(tmp_path, monkeypatch):
    from conductor.store import db

    url = f"sqlite:///{tmp_path / 'new.db'}"
    calls = []
    real = db.upgrade
    monkeypatch.setattr(db, "upgrade", lambda u, revision="head": (calls.append(u), real(u, revision)))
    db.ensure_head(url)
    db.ensure_head(url)
    assert calls == [url]  # migrated once; the second time the version row said it is at head
