"""Every write, and the reads of the hot path, as SQLAlchemy Core statements built once.

The one persistence rule: the ORM classes in conductor.store.models declare the schema (for
Alembic and for tests that set up rows); every statement the service runs is Core, on a
Connection inside `Database.begin()`. No identity map, no autoflush, no flush order to reason
about: a statement runs when it is called. Building a statement costs more than running it, so
the fixed ones are module constants.

Column defaults declared on the models (status, attempts, data, ...) apply to these inserts too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, Table, bindparam, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from conductor.store.models import (
    ApiToken,
    Approval,
    AuditEntry,
    DefinitionRow,
    Evaluation,
    InboxEvent,
    OutboxAction,
    Release,
    SignalRow,
    Timer,
    Track,
)

SIGNALS: Table = SignalRow.__table__  # type: ignore[assignment]
EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxAction.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
INBOX: Table = InboxEvent.__table__  # type: ignore[assignment]
TRACKS: Table = Track.__table__  # type: ignore[assignment]
RELEASES: Table = Release.__table__  # type: ignore[assignment]
APPROVALS: Table = Approval.__table__  # type: ignore[assignment]
DEFINITIONS: Table = DefinitionRow.__table__  # type: ignore[assignment]
TOKENS: Table = ApiToken.__table__  # type: ignore[assignment]


# ---------------------------------------------------------------------------- inserts

INSERT_SIGNAL = SIGNALS.insert().returning(SIGNALS.c.id)
INSERT_AUDIT = AUDIT.insert()
INSERT_EVALUATION = EVALUATIONS.insert().returning(EVALUATIONS.c.id)
INSERT_APPROVAL = APPROVALS.insert()


@cache
def _insert_if_new(dialect: str, table: Table, key: tuple[str, ...]) -> Insert:
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id for this dialect (both support it natively)."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"no INSERT ... ON CONFLICT for the {dialect} dialect")
    stmt = insert(table).on_conflict_do_nothing(index_elements=[table.c[k] for k in key])
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT through SQLAlchemy.
    return stmt.returning(*[c for c in table.primary_key.columns])


def insert_new_id(conn: Connection, table: Table, key: str | tuple[str, ...], values: dict[str, Any]) -> Any:
    """Insert the row unless one with the same unique `key` exists; the new row's id, or None.

    One statement, and safe against a concurrent writer (the database decides), unlike a SELECT
    followed by an INSERT."""
    keys = (key,) if isinstance(key, str) else key
    return conn.execute(_insert_if_new(conn.dialect.name, table, keys), values).scalar()


# ---------------------------------------------------------------------------- one release's state

# The stage timers of a visit carry "<release>:<stage>:" as their key prefix; leaving the stage
# retires them (marked fired, never run).
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
LATEST_FINGERPRINT = (
    select(EVALUATIONS.c.fingerprint).where(EVALUATIONS.c.release_id == bindparam("release_id")).order_by(EVALUATIONS.c.id.desc()).limit(1)
)
EVALUATION_BY_ID = select(EVALUATIONS).where(EVALUATIONS.c.id == bindparam("id"))


def _latest_signals():  # noqa: ANN202 (a Select of a fixed shape)
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

# ---------------------------------------------------------------------------- timers

# Due timers come from the partial index ix_timers_pending (due_at WHERE fired_at IS NULL), so
# finding the few that are due costs the same with ten thousand waiting.
DUE_TIMERS = (
    select(TIMERS.c.id, TIMERS.c.release_id, TIMERS.c.kind, TIMERS.c.due_at, TIMERS.c.payload)
    .where(TIMERS.c.fired_at.is_(None), TIMERS.c.due_at <= bindparam("now"))
    .order_by(TIMERS.c.due_at, TIMERS.c.id)
    .limit(bindparam("limit"))
)
FIRE_TIMER = TIMERS.update().where(TIMERS.c.id == bindparam("timer_id"), TIMERS.c.fired_at.is_(None)).values(fired_at=bindparam("now"))

# ---------------------------------------------------------------------------- inbox

FINISH_EVENT = (
    INBOX.update()
    .where(INBOX.c.id == bindparam("event_id"))
    .values(
        status=bindparam("status"),
        note=bindparam("note"),
        release_id=bindparam("release_id"),
        processed_at=bindparam("processed_at"),
        attempts=INBOX.c.attempts + 1,
    )
)
FAIL_PENDING_EVENT = (
    INBOX.update()
    .where(INBOX.c.id == bindparam("event_id"), INBOX.c.status == "pending")
    .values(status="failed", note=bindparam("note"), processed_at=bindparam("processed_at"), attempts=INBOX.c.attempts + 1)
)
EVENT_BY_DELIVERY = select(INBOX.c.id, INBOX.c.status).where(
    INBOX.c.source == bindparam("source"), INBOX.c.delivery_id == bindparam("delivery_id")
)
TRACKS_OF_REPOSITORY = (
    select(TRACKS.c.id, TRACKS.c.branch_pattern, TRACKS.c.critical_fix_marker)
    .where(TRACKS.c.repository == bindparam("repository"))
    .order_by(TRACKS.c.id)
)


def lock_events(ids: list[int], *, skip_locked: bool):  # noqa: ANN201
    """The inbox rows of a batch, row-locked; rows another transaction holds are skipped (PostgreSQL)."""
    q = select(INBOX.c.id, INBOX.c.status, INBOX.c.payload).where(INBOX.c.id.in_(ids)).order_by(INBOX.c.id)
    return q.with_for_update(skip_locked=skip_locked)


def release_keys(keys: list[tuple[str, str]]):  # noqa: ANN201
    """Which of these (track, version) releases exist (no lock)."""
    return select(RELEASES.c.track_id, RELEASES.c.version).where(tuple_(RELEASES.c.track_id, RELEASES.c.version).in_(keys))
