"""Engines, sessions and migrations. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_MIN = (3, 35)  # RETURNING (conductor.store.statements)


@dataclass(frozen=True)
class Timeouts:
    """How long the database may take (PostgreSQL; SQLite has its busy timeout): to connect, to run
    one statement, to wait for a row lock, and to hand out a pooled connection. A frozen server
    fails a request within seconds instead of holding it; TCP keepalives and tcp_user_timeout drop
    a connection whose server vanished."""

    connect_s: float = 5.0
    statement_s: float = 30.0
    lock_s: float = 10.0
    pool_s: float = 5.0

    def connect_args(self) -> dict[str, Any]:
        options = f"-c statement_timeout={int(self.statement_s * 1000)} -c lock_timeout={int(self.lock_s * 1000)}"
        return {"connect_timeout": max(1, round(self.connect_s)), "options": options, "keepalives": 1, "keepalives_idle": 10,
                "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": int(max(self.statement_s, 10) * 1000)}  # fmt: skip


def make_engine(url: str, timeouts: Timeouts | None = None, **kwargs) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and one writer at a time; PostgreSQL
    the `timeouts`."""
    if url.startswith("sqlite"):
        import sqlite3

        if sqlite3.sqlite_version_info < SQLITE_MIN:
            from conductor.domain.errors import ConductorError

            raise ConductorError(
                f"SQLite {sqlite3.sqlite_version} is too old: Conductor needs {'.'.join(map(str, SQLITE_MIN))} "
                "or newer (INSERT ... RETURNING); use a newer Python build or PostgreSQL"
            )
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _):
            dbapi_conn.isolation_level = None  # let BEGIN below control transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # BEGIN IMMEDIATE takes the write lock up front: SQLite's stand-in for SELECT ... FOR
            # UPDATE. Read-only sessions use a deferred BEGIN so they never wait for a writer (WAL);
            # an autocommit connection (one statement, its own transaction) begins nothing.
            options = conn.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT":
                return
            conn.exec_driver_sql("BEGIN" if options.get("readonly") else "BEGIN IMMEDIATE")

        return engine
    # No pool pre-ping: it would cost a round trip per transaction on the hot path. A connection
    # that died fails its statement once (OperationalError, connection_invalidated); the pool
    # then drops its connections and the retry (a task's, the webhook store's) reconnects.
    t = timeouts or Timeouts()
    return create_engine(url, connect_args=t.connect_args(), pool_timeout=t.pool_s, **kwargs)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (Alembic)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration's revision. Migrations are files NNNN_name.py with revision "NNNN",
    each revising the one before (tests/integration/test_migrations.py holds them to that), so
    the head is the highest number: no need to load Alembic's script directory to know it."""
    return max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def ensure_head(url: str) -> None:
    """Migrate to head unless the database is there already. Reading alembic_version takes a
    millisecond; importing Alembic to find out takes about 0.4 s, on every CLI command."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        current = None  # a new file: no tables yet
    finally:
        engine.dispose()
    if current != head_revision():
        upgrade(url)


class Database:
    """An engine: `begin()` is a write transaction, `reading()` a read-only one (Core connections).

    ORM sessions (`transaction()`, `read()`) are for tests and tools that set rows up by hand; the
    service writes through Core only (conductor.store.statements)."""

    def __init__(self, url: str, engine: Engine | None = None, timeouts: Timeouts | None = None):
        self.url = url
        self.engine = engine or make_engine(url, timeouts)
        self.read_engine = self.engine.execution_options(readonly=True)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back on any exception."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """Each statement its own transaction: for a single write that needs no BEGIN and no COMMIT
        (on PostgreSQL one round trip in all)."""
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction; on SQLite it never waits for (or blocks) a writer."""
        with self.read_engine.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back everything on any exception."""
        with self.sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only; on SQLite it does not take the write lock."""
        with self.read_sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
