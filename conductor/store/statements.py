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

from sqlalchemy import Connection, Insert, Select, Table, bindparam, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from conductor.store.models import (
    ApiToken,
    Approval,
    AuditChain,
    AuditEntry,
    DefinitionRow,
    Evaluation,
    Freeze,
    InboxEvent,
    OutboxAction,
    Release,
    SignalRow,
    SourcePoll,
    StoreState,
    Timer,
    Track,
)

SIGNALS: Table = SignalRow.__table__  # type: ignore[assignment]
EVALUATIONS: Table = Evaluation.__table__  # type: ignore[assignment]
AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
AUDIT_CHAIN: Table = AuditChain.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxAction.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
INBOX: Table = InboxEvent.__table__  # type: ignore[assignment]
TRACKS: Table = Track.__table__  # type: ignore[assignment]
STORE_STATES: Table = StoreState.__table__  # type: ignore[assignment]
FREEZES: Table = Freeze.__table__  # type: ignore[assignment]
SOURCE_POLLS: Table = SourcePoll.__table__  # type: ignore[assignment]
RELEASES: Table = Release.__table__  # type: ignore[assignment]
APPROVALS: Table = Approval.__table__  # type: ignore[assignment]
DEFINITIONS: Table = DefinitionRow.__table__  # type: ignore[assignment]
TOKENS: Table = ApiToken.__table__  # type: ignore[assignment]


# ---------------------------------------------------------------------------- inserts

# Appends that need no result are `.inline()`: no implicit RETURNING of the new id, so they can
# wait in a transaction's buffered writes (conductor.store.writes).
INSERT_SIGNAL = SIGNALS.insert().inline()
INSERT_AUDIT = AUDIT.insert().inline()
INSERT_APPROVAL = APPROVALS.insert().inline()
INSERT_EVALUATION = EVALUATIONS.insert().returning(EVALUATIONS.c.id)

# What an audit row says: the columns its row_hash covers (conductor.service.audit). seq, prev_hash
# and row_hash are the chain's, set when the row is sealed.
_CHAINED = ("id", "release_id", "track_id", "at", "actor", "kind", "from_stage", "to_stage", "reason", "evaluation_id", "event_id", "data")
AUDIT_CONTENT = tuple(AUDIT.c[name] for name in _CHAINED)
AUDIT_SEALED = (*AUDIT_CONTENT, AUDIT.c.seq, AUDIT.c.prev_hash, AUDIT.c.row_hash)


def _on_conflict_do_nothing(dialect: str, table: Table, key: tuple[str, ...]) -> Insert:
    """INSERT ... ON CONFLICT (key) DO NOTHING for this dialect (both support it natively)."""
    insert: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"no INSERT ... ON CONFLICT for the {dialect} dialect")
    stmt: Insert = insert(table).on_conflict_do_nothing(index_elements=[table.c[k] for k in key])
    return stmt


@cache
def _insert_if_new(dialect: str, table: Table, key: tuple[str, ...]) -> Insert:
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id."""
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT through SQLAlchemy.
    return _on_conflict_do_nothing(dialect, table, key).returning(*[c for c in table.primary_key.columns])


@cache
def insert_unless_present(dialect: str, table: Table, key: tuple[str, ...]) -> Insert:
    """INSERT ... ON CONFLICT (key) DO NOTHING, without RETURNING: for buffered writes, where a row
    that is already there (a repeated step) is simply not written again."""
    return _on_conflict_do_nothing(dialect, table, key).inline()


def upsert(dialect: str, table: Table, key: tuple[str, ...], columns: tuple[str, ...]) -> Insert:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET the given columns to the inserted values: one
    statement for "create or change" (both dialects have it natively), usable in buffered writes."""
    insert: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"no INSERT ... ON CONFLICT for the {dialect} dialect")
    stmt = insert(table)
    return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in key], set_={c: stmt.excluded[c] for c in columns}).inline()


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
# What a resume over a halt rules on: the evidence that halted it (its digest), not the question
# (a later, still-failing value is new evidence and halts again).
LATEST_DIGEST = (
    select(EVALUATIONS.c.digest).where(EVALUATIONS.c.release_id == bindparam("release_id")).order_by(EVALUATIONS.c.id.desc()).limit(1)
)
EVALUATION_BY_ID = select(EVALUATIONS).where(EVALUATIONS.c.id == bindparam("id"))


def _latest_signals(many: bool):  # noqa: ANN202 (a Select of a fixed shape)
    """Only the latest value of each signal counts, so only those rows are loaded: the cost of a
    step stays flat however many values a release has collected (ix_signals_release_name). With
    each, how many reports of that signal the same commit has had (`runs`: the first and its reruns)."""
    t = SIGNALS.c
    ranked = select(
        t.id,
        func.row_number().over(partition_by=(t.release_id, t.name), order_by=(t.observed_at.desc(), t.id.desc())).label("rank"),
        func.count().over(partition_by=(t.release_id, t.name, t.sha)).label("runs"),
    )
    ranked = ranked.where(t.release_id.in_(bindparam("release_ids", expanding=True)) if many else t.release_id == bindparam("release_id"))
    latest = ranked.subquery()
    return (
        select(t.release_id, t.name, t.value, t.observed_at, t.source, t.samples, t.events, t.sha, t.id, t.error, t.actor, latest.c.runs)
        .join(latest, t.id == latest.c.id)
        .where(latest.c.rank == 1)
        .order_by(t.observed_at, t.id)
    )


# A compare gate's baseline: the newest value of a signal that the previous release of the track
# recorded in the same ring (ix_signals_baseline), or that the production release recorded. A
# release that is halted or cancelled now (`stopped`: its pipeline's stages of those kinds) is no
# baseline: it was stopped for its numbers, and a release no worse than a bad one is not good.
_BASELINE_COLUMNS = (RELEASES.c.track_id, RELEASES.c.version, SIGNALS.c.name, SIGNALS.c.value, SIGNALS.c.observed_at,
                     SIGNALS.c.source, SIGNALS.c.samples, SIGNALS.c.events, SIGNALS.c.sha)  # fmt: skip
BASELINE_IN_RING = (
    select(*_BASELINE_COLUMNS)
    .join(RELEASES, RELEASES.c.id == SIGNALS.c.release_id)
    .where(SIGNALS.c.name == bindparam("name"), SIGNALS.c.stage == bindparam("stage"), RELEASES.c.track_id == bindparam("track_id"),
           SIGNALS.c.release_id < bindparam("release_id"), SIGNALS.c.value.is_not(None), SIGNALS.c.error.is_(None),
           RELEASES.c.stage.not_in(bindparam("stopped", expanding=True)))
    .order_by(SIGNALS.c.release_id.desc(), SIGNALS.c.observed_at.desc(), SIGNALS.c.id.desc())
    .limit(1)
)  # fmt: skip
BASELINE_IN_PRODUCTION = (
    select(*_BASELINE_COLUMNS)
    .join(RELEASES, RELEASES.c.id == SIGNALS.c.release_id)
    .where(SIGNALS.c.name == bindparam("name"), RELEASES.c.track_id == bindparam("track_id"), RELEASES.c.id != bindparam("release_id"),
           RELEASES.c.stage.in_(bindparam("stages", expanding=True)), SIGNALS.c.value.is_not(None), SIGNALS.c.error.is_(None))
    .order_by(RELEASES.c.id.desc(), SIGNALS.c.observed_at.desc(), SIGNALS.c.id.desc())
    .limit(1)
)  # fmt: skip


LATEST_SIGNALS = _latest_signals(many=False)
LATEST_SIGNALS_OF = _latest_signals(many=True)  # of several releases at once (a batch, a tick)

# ---------------------------------------------------------------------------- timers

# Due timers come from the partial index ix_timers_pending (due_at WHERE fired_at IS NULL), so
# finding the few that are due costs the same with ten thousand waiting.
DUE_TIMERS = (
    select(TIMERS.c.release_id)
    .where(TIMERS.c.fired_at.is_(None), TIMERS.c.due_at <= bindparam("now"))
    .order_by(TIMERS.c.due_at, TIMERS.c.id)
    .limit(bindparam("limit"))
)
# Read again once their releases are locked: what another tick fired meanwhile is gone.
DUE_TIMERS_OF = (
    select(TIMERS.c.id, TIMERS.c.release_id, TIMERS.c.key, TIMERS.c.kind, TIMERS.c.due_at, TIMERS.c.payload)
    .where(
        TIMERS.c.release_id.in_(bindparam("release_ids", expanding=True)),
        TIMERS.c.fired_at.is_(None),
        TIMERS.c.due_at <= bindparam("now"),
    )
    .order_by(TIMERS.c.due_at, TIMERS.c.id)
)
FIRE_TIMERS = TIMERS.update().where(TIMERS.c.id.in_(bindparam("timer_ids", expanding=True))).values(fired_at=bindparam("now"))

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
OUTBOX_IDS_BY_KEY = (
    select(OUTBOX.c.id)
    .where(OUTBOX.c.idempotency_key.in_(bindparam("keys", expanding=True)), OUTBOX.c.status == "pending")
    .order_by(OUTBOX.c.id)
)
EVENT_BY_DIGEST = (
    select(INBOX.c.id, INBOX.c.status)
    .where(INBOX.c.source == bindparam("source"), INBOX.c.body_digest == bindparam("digest"), INBOX.c.received_at >= bindparam("since"))
    .order_by(INBOX.c.id)
    .limit(1)
)
EVENT_BY_DELIVERY = select(INBOX.c.id, INBOX.c.status).where(
    INBOX.c.source == bindparam("source"), INBOX.c.delivery_id == bindparam("delivery_id")
)
TRACKS_OF_REPOSITORY = (
    select(TRACKS.c.id, TRACKS.c.branch_pattern, TRACKS.c.critical_fix_marker)
    .where(TRACKS.c.repository == bindparam("repository"))
    .order_by(TRACKS.c.id)
)


_LOCK_EVENTS = (
    select(INBOX.c.id, INBOX.c.status, INBOX.c.payload, INBOX.c.repository,
           TRACKS.c.id.label("track_id"), TRACKS.c.branch_pattern, TRACKS.c.critical_fix_marker)
    .outerjoin(TRACKS, TRACKS.c.repository == INBOX.c.repository)
    .where(INBOX.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(INBOX.c.id, TRACKS.c.id)
)  # fmt: skip
_LOCK_EVENTS_SKIP = _LOCK_EVENTS.with_for_update(of=INBOX, skip_locked=True)
_LOCK_EVENTS_WAIT = _LOCK_EVENTS.with_for_update(of=INBOX)


def lock_events(*, skip_locked: bool) -> Select[Any]:
    """The inbox rows of a batch (bind `ids`), row-locked, each with the tracks of the repository it
    names (one row per track; none when no track has that repository). Rows another transaction
    holds are skipped (PostgreSQL); the tracks are read, not locked."""
    return _LOCK_EVENTS_SKIP if skip_locked else _LOCK_EVENTS_WAIT


def release_keys(keys: list[tuple[str, str]]):  # noqa: ANN201
    """Which of these (track, version) releases exist (no lock)."""
    return select(RELEASES.c.track_id, RELEASES.c.version).where(tuple_(RELEASES.c.track_id, RELEASES.c.version).in_(keys))
