"""Shared fixtures: databases (SQLite always; PostgreSQL when reachable), clocks, a conductor.

Service-backed tests skip with one line saying how to enable them, except under CI=true,
where a missing service fails the run instead.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DEFINITIONS = ROOT / "state_definitions"
# What the service's scenario tests run on: a frozen copy of the weekly train with fixed-band crash
# and ANR gates (their scripts are written against those bands), not the shipped, tuned one.
DEFINITIONS = ROOT / "tests" / "fixtures" / "definitions"
FIXTURES = Path(os.environ.get("CONDUCTOR_FIXTURES_DIR", ROOT.parent / "shared" / "fixtures"))
PG_URL = os.environ.get("CONDUCTOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def service_unavailable(what: str, how: str) -> None:
    """Skip on a laptop without the service; fail under CI, where nothing may be skipped."""
    msg = f"{what} not reachable; {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def _worker() -> str:
    # Unique per test run and worker, so two runs on one machine never drop each other's database.
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"p{os.getpid()}")[:10]
    return f"{run}_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    from conductor.store.db import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A migrated database of this xdist worker's own on the shared PostgreSQL server."""
    import sqlalchemy as sa

    from conductor.store.db import upgrade

    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = f"conductor_test_{_worker()}"
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except sa.exc.OperationalError as exc:
        service_unavailable("PostgreSQL", f"start it or set CONDUCTOR_TEST_POSTGRES_URL ({exc.__class__.__name__})")
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


TABLES = [
    "freezes",
    "source_polls",
    "store_states",
    "api_tokens",
    "audit_log",
    "audit_chain",
    "approvals",
    "outbox",
    "timers",
    "signals",
    "evaluations",
    "inbox",
    "releases",
    "tracks",
    "definitions",
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request, tmp_path, sqlite_template):
    """A migrated, empty database on each backend: the same tests run on SQLite and PostgreSQL."""
    from sqlalchemy import text

    from conductor.store.db import Database

    if request.param == "sqlite":
        path = tmp_path / "conductor.db"
        shutil.copy(sqlite_template, path)
        db = Database(f"sqlite:///{path}")
    else:
        url = request.getfixturevalue("postgres_url")
        db = Database(url)
        with db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    yield db
    db.dispose()


@pytest.fixture
def clock():
    from conductor.clock import ManualClock

    return ManualClock(MONDAY)


@pytest.fixture
def catalog():
    from conductor.domain.loader import DefinitionCatalog

    return DefinitionCatalog(DEFINITIONS)


def apply_event(ctx, event_id: int) -> str:
    """Apply one stored event as a worker would (a batch of one); its status afterwards."""
    from conductor.service.inbox import process_events

    return process_events(ctx, [event_id], wait=True).statuses[event_id]


def inline(conductor, settings=None, adapters=None):
    """The test's conductor wired with the inline dispatcher: every job runs at once (bootstrap)."""
    from conductor.bootstrap import build
    from conductor.config import Settings

    return build(settings or Settings(database_url=conductor.db.url, broker_url=None), mode="inline", context=conductor, adapters=adapters)


@pytest.fixture
def conductor(database, catalog, clock):
    from conductor.facade import Conductor

    c = Conductor(database, catalog, clock)
    c.ensure_track("music-android", "mobile_weekly", repository="acme/music-android")
    return c


@pytest.fixture(autouse=True)
def _logging_as_found():
    """What a test configures of structlog (the demo, an in-process CLI command, a server) ends
    with it: a later test capturing logs sees structlog's defaults, whatever ran before it."""
    yield
    import structlog

    import conductor.logging

    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    conductor.logging._configured = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long tests first: with `--dist worksteal` (the Makefile's) the worker that runs them
    hands its short ones to the other, so both finish together instead of one waiting a minute
    and a half for the game day at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
