"""SQLAlchemy 2 tables: the database is the source of truth for every release.

Schema changes go through Alembic (conductor/store/migrations); never create_all in production.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite drops the zone, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class DefinitionRow(Base):
    """A pipeline definition as it was when a release pinned it (by content hash)."""

    __tablename__ = "definitions"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Track(Base):
    """An app x platform (music-android) with its pipeline and where its events come from."""

    __tablename__ = "tracks"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    definition_name: Mapped[str] = mapped_column(String(100))
    repository: Mapped[str | None] = mapped_column(String(200))
    branch_pattern: Mapped[str] = mapped_column(String(200), default="release/{version}")
    critical_fix_marker: Mapped[str] = mapped_column(String(200), default="Release-Fix: critical")
    four_eyes: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class Release(Base):
    """One release of a track; also the model python-statemachine reads and writes `stage` on."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("track_id", "version"), Index("ix_releases_stage", "stage"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.id"))
    version: Mapped[str] = mapped_column(String(50))
    stage: Mapped[str] = mapped_column(String(50))
    definition_hash: Mapped[str] = mapped_column(ForeignKey("definitions.hash"))
    entered_stage_at: Mapped[datetime]
    branch: Mapped[str | None] = mapped_column(String(200))
    head_sha: Mapped[str | None] = mapped_column(String(64))
    # The release's store build (Play versionCode, App Store build number): from the CI event that
    # built it, a person, or the store itself (the release of that name on a testing track).
    build: Mapped[str | None] = mapped_column(String(50))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_reason: Mapped[str | None] = mapped_column(Text)
    pending_evaluation_id: Mapped[int | None] = mapped_column(Integer)
    # Evidence a human already ruled on (rejected, timed out, or resumed over): the robot neither
    # asks nor halts again on exactly this fingerprint; new evidence is judged afresh.
    rejected_fingerprint: Mapped[str | None] = mapped_column(String(64))
    halted_from: Mapped[str | None] = mapped_column(String(50))
    # Commits pushed to the release branch without the critical-fix marker, until a human approves.
    unreviewed_commits: Mapped[list[Any]] = mapped_column(default=list)
    # Every commit pushed to the release branch since the last approval, marked or not: four-eyes
    # refuses an approval to anyone who authored one of them.
    commits_since_approval: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Optimistic lock: every UPDATE checks and bumps it, so a lost update raises instead.
    version_id: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    __mapper_args__ = {"version_id_col": version_id}

    @property
    def key(self) -> str:
        return f"{self.track_id}/{self.version}"


class SignalRow(Base):
    """A measured value (or a source error) for one release, as reported at one time."""

    __tablename__ = "signals"
    __table_args__ = (
        Index("ix_signals_release_name", "release_id", "name", "observed_at"),
        Index("ix_signals_baseline", "name", "stage", "release_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int | None] = mapped_column(Integer)
    # Of the samples, how many the value counts (crash-free sessions, ANRs): compare gates use counts.
    events: Mapped[int | None] = mapped_column(BigInteger)
    # The stage (ring) the release was in when the value was recorded: a baseline is the same ring's.
    stage: Mapped[str | None] = mapped_column(String(50))
    source: Mapped[str] = mapped_column(String(100))
    sha: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(100))
    event_id: Mapped[int | None] = mapped_column(Integer)
    observed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]


class Evaluation(Base):
    """One judgement of a release's outgoing transition, with the evidence it was made on."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_release", "release_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    stage: Mapped[str] = mapped_column(String(50))
    transition: Mapped[str] = mapped_column(String(120))
    verdict: Mapped[str] = mapped_column(String(20))
    fingerprint: Mapped[str] = mapped_column(String(64))  # the question it puts (conductor.domain.decisions)
    digest: Mapped[str | None] = mapped_column(String(64))  # everything it judged: a new digest is new evidence
    evidence: Mapped[dict[str, Any]]
    trigger: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class Approval(Base):
    """A release manager's answer to a paused decision (or to a halt)."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id"))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class AuditEntry(Base):
    """Append-only: every transition, approval, pause, halt, with actor and reason.

    Hash-chained after it commits (conductor.service.audit): the sealer gives each row its place in
    the chain (seq), the hash of the row before it (prev_hash) and the hash of its own content and
    prev_hash (row_hash). Writers insert the content only; the three chain columns stay NULL until
    the row is sealed."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_release", "release_id", "id"),
        # Only unsealed rows are looked up by the sealer: the index holds just those.
        Index("ix_audit_unsealed", "id", postgresql_where=text("seq IS NULL"), sqlite_where=text("seq IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A release's entry, or (release_id None) a track's: creating or changing a track is audited too.
    release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    track_id: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(50))
    from_stage: Mapped[str | None] = mapped_column(String(50))
    to_stage: Mapped[str | None] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(Text, default="")
    evaluation_id: Mapped[int | None] = mapped_column(Integer)
    event_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seq: Mapped[int | None] = mapped_column(Integer, unique=True)  # the place in the chain: 1, 2, 3, ...
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class AuditChain(Base):
    """The chain's head, one row (id 1): the last sealed place and its hash. The sealer locks it,
    so one sealer runs at a time; verify compares the last sealed row with it (a deleted tail)."""

    __tablename__ = "audit_chain"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime | None]


class InboxEvent(Base):
    """An inbound event, stored before any work; (source, delivery_id) makes redelivery a no-op."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("source", "delivery_id"),
        Index("ix_inbox_status", "status", "received_at"),
        Index("ix_inbox_replay", "source", "body_digest", "received_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(50))
    delivery_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]]
    # What the payload names, as columns: the worker joins the tracks of the repository when it locks the row.
    repository: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of the raw body, for sources whose signatures cover no timestamp (the replay guard).
    body_digest: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    release_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    # Last time the sweeper re-enqueued it (None: only the receiver did); keeps a backlog from snowballing.
    enqueued_at: Mapped[datetime | None]


class OutboxAction(Base):
    """An action to run after the transition that caused it committed; idempotency_key is unique."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    action: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    # When the relay should (re)send it: now for a new row, a lease while it is queued or running,
    # the backoff after a failure. A row whose time has come and is not done is sent again.
    next_attempt_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    # What the adapter reported (response, channels delivered so far, skip reason).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StoreState(Base):
    """What Conductor last set at the store for a release (wanted) and what the store last said
    (seen). They differ while a change is on its way (halting), or when someone changed the rollout
    in the store's console (drift: the robot stops acting until a release manager decides)."""

    __tablename__ = "store_states"
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    store: Mapped[str] = mapped_column(String(20))  # play, appstore
    build: Mapped[str | None] = mapped_column(String(50))
    wanted: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {"status": ..., "percent": ...}
    wanted_at: Mapped[datetime | None]
    seen: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # StoreRollout.as_dict()
    synced_at: Mapped[datetime | None]  # when the store was last read
    drift_since: Mapped[datetime | None]
    drift: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what differed, in words and values
    # Apple's 30-day pause budget: when a release manager was last asked about it.
    budget_asked_at: Mapped[datetime | None]


class SourcePoll(Base):
    """A pulled source's next poll for one release (a due row: the scheduler finds what is due),
    and how the last ones went (for /metrics, the release page and `conductor sources check`)."""

    __tablename__ = "source_polls"
    __table_args__ = (UniqueConstraint("release_id", "source"), Index("ix_source_polls_due", "due_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    track_id: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100))  # the source's name in the track's sources
    kind: Mapped[str] = mapped_column(String(50))
    due_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]  # a poll in flight: not claimed again before this
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row, for the backoff
    last_polled_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)


class Freeze(Base):
    """A freeze: no transition that raises user exposure happens while it lasts (halts and cancels
    still do). A track's, or (track_id NULL) every track's; until `ends_at`, or until lifted."""

    __tablename__ = "freezes"
    __table_args__ = (Index("ix_freezes_active", "lifted_at", "starts_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))  # manual, calendar
    actor: Mapped[str] = mapped_column(String(100))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    skip_branch_cut: Mapped[bool] = mapped_column(Boolean, default=False)  # a holiday: no branch cut that day either
    created_at: Mapped[datetime]
    lifted_at: Mapped[datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(String(100))


class Timer(Base):
    """A wait with a due time (soak end, branch day, approval deadline); fired by tick."""

    __tablename__ = "timers"
    # Only unfired timers are ever looked up by due time: the index holds just those.
    __table_args__ = (
        Index("ix_timers_pending", "due_at", postgresql_where=text("fired_at IS NULL"), sqlite_where=text("fired_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    due_at: Mapped[datetime]
    fired_at: Mapped[datetime | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once at creation."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(30))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The VCS identities (logins, emails) the holder commits as: four-eyes compares them with authors.
    identities: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
