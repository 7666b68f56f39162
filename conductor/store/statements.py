"""Core statements for the per-event hot path, built once.

Rows that are only ever appended in a step (signals, evaluations, audit entries, outbox actions,
timers) and the inbox row are written with SQLAlchemy Core on the session's connection instead of
through the ORM unit of work: no identity map, no autoflush, one statement each, sent when it is
called. The release row itself stays an ORM object (its version_id is the optimistic lock) and is
written once, at commit. Measured by bench/throughput.py: this halves the CPU time of an event.

Column defaults declared on the models (status, attempts, data, ...) apply to these inserts too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from conductor.store.models import AuditEntry, Evaluation, InboxEvent, OutboxAction, Release, SignalRow, Timer, Track

SIGNALS: Table = SignalRow.__table__  # type: ignore[assignment]
EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxAction.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
INBOX: Table = InboxEvent.__table__  # type: ignore[assignment]
TRACKS: Table = Track.__table__  # type: ignore[assignment]
RELEASES: Table = Release.__table__  # type: ignore[assignment]

INSERT_SIGNAL = SIGNALS.insert().returning(SIGNALS.c.id)
INSERT_AUDIT = AUDIT.insert()
INSERT_EVALUATION = EVALUATIONS.insert().returning(EVALUATIONS.c.id)

RETIRE_STAGE_TIMERS = (
    TIMERS.update()
    .where(TIMERS.c.release_id == bindparam("b_release_id"), TIMERS.c.fired_at.is_(None), TIMERS.c.key.like(bindparam("prefix")))
    .values(fired_at=bindparam("now"))
)

# The evidence JSON is only read when shown, not to compare fingerprints.
LAST_EVALUATION = (
    select(EVALUATIONS.c.id, EVALUATIONS.c.stage, EVALUATIONS.c.fingerprint)
    .where(EVALUATIONS.c.release_id == bindparam("release_id"))
    .order_by(EVALUATIONS.c.id.desc())
    .limit(1)
)


def _latest_signals():
    """Only the latest value of each signal counts, so only those rows are loaded: the cost of a
    step stays flat however many values a release has collected (ix_signals_release_name)."""
    t = SIGNALS.c
    latest = (
        select(t.id, func.row_number().over(partition_by=t.name, order_by=(t.observed_at.desc(), t.id.desc())).label("rank"))
        .where(t.release_id == bindparam("release_id"))
        .subquery()
    )
    return (
        select(t.name, t.value, t.observed_at, t.source, t.samples, t.sha, t.id, t.error, t.actor)
        .join(latest, t.id == latest.c.id)
        .where(latest.c.rank == 1)
        .order_by(t.observed_at, t.id)
    )


LATEST_SIGNALS = _latest_signals()

LOCK_EVENT = (
    select(INBOX.c.id, INBOX.c.status, INBOX.c.payload, INBOX.c.attempts)
    .where(INBOX.c.id == bindparam("event_id"))
    .with_for_update()
)
FINISH_EVENT = (
    INBOX.update()
    .where(INBOX.c.id == bindparam("event_id"))
    .values(status=bindparam("status"), note=bindparam("note"), release_id=bindparam("release_id"),
            processed_at=bindparam("processed_at"), attempts=INBOX.c.attempts + 1)
)
EVENT_BY_DELIVERY = select(INBOX.c.id, INBOX.c.status).where(
    INBOX.c.source == bindparam("source"), INBOX.c.delivery_id == bindparam("delivery_id")
)
RELEASE_ID_BY_VERSION = select(RELEASES.c.id).where(
    RELEASES.c.track_id == bindparam("track_id"), RELEASES.c.version == bindparam("version")
)
TRACKS_OF_REPOSITORY = (
    select(TRACKS.c.id, TRACKS.c.branch_pattern, TRACKS.c.critical_fix_marker)
    .where(TRACKS.c.repository == bindparam("repository"))
    .order_by(TRACKS.c.id)
)


@lru_cache(maxsize=None)
def _insert_if_new(dialect: str, table: Table, key: tuple[str, ...]):
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id for this dialect (both support it natively)."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"no INSERT ... ON CONFLICT for the {dialect} dialect")
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT through SQLAlchemy.
    return insert(table).on_conflict_do_nothing(index_elements=[table.c[k] for k in key]).returning(table.c.id)


def insert_new_id(conn: Connection, table: Table, key: str | tuple[str, ...], values: dict[str, Any]) -> int | None:
    """Insert the row unless one with the same unique `key` exists; the new row's id, or None.

    One statement, and safe against a concurrent writer (the database decides), unlike a SELECT
    followed by an INSERT."""
    keys = (key,) if isinstance(key, str) else key
    return conn.execute(_insert_if_new(conn.dialect.name, table, keys), values).scalar()


def insert_if_new(conn: Connection, table: Table, key: str | tuple[str, ...], values: dict[str, Any]) -> bool:
    """insert_new_id, answering only whether the row was inserted."""
    return insert_new_id(conn, table, key, values) is not None


def lock_events(ids: list[int], *, skip_locked: bool):
    """The inbox rows of a batch, row-locked; rows another transaction holds are skipped (PostgreSQL)."""
    q = select(INBOX.c.id, INBOX.c.status, INBOX.c.payload).where(INBOX.c.id.in_(ids)).order_by(INBOX.c.id)
    return q.with_for_update(skip_locked=True) if skip_locked else q.with_for_update()


def lock_releases(keys: list[tuple[str, str]], *, skip_locked: bool = False):
    """The releases named by (track, version), row-locked in id order, so concurrent batches
    always lock in the same order and cannot deadlock; with skip_locked, rows another
    transaction holds are left out instead of waited for (PostgreSQL)."""
    return (
        select(Release)
        .where(tuple_(Release.track_id, Release.version).in_(keys))
        .order_by(Release.id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )


def release_keys(keys: list[tuple[str, str]]):
    """Which of these (track, version) releases exist (no lock)."""
    return select(RELEASES.c.track_id, RELEASES.c.version).where(tuple_(RELEASES.c.track_id, RELEASES.c.version).in_(keys))
