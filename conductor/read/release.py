"""One release as every surface shows it: `ReleaseSnapshot`, and the lists and decisions around it.

A snapshot is read in one read-only transaction and is frozen: its rows (release, latest and
pending evaluation, timeline, actions, timers), its pinned pipeline and, computed once by
conductor.read.status, its status, gate lights and what it waits for. Its properties speak the
API's vocabulary (track, release_version, version, gates, timeline, ...), so the API's response
models are built from it directly (pydantic from_attributes) and the CLI prints the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from conductor.context import Context
from conductor.domain.definition import Pipeline
from conductor.domain.errors import NotFound
from conductor.domain.kinds import ReleaseStatus
from conductor.read.records import ActionInfo, AuditInfo, EvaluationInfo, ReleaseInfo, TimerInfo, build, columns
from conductor.read.status import GateLight, Waiting, lights_of, status_of, waiting_of
from conductor.store.questions import unanswered_escalation
from conductor.store.releases import release_filter, where_release
from conductor.store.statements import AUDIT, AUDIT_CONTENT, EVALUATIONS, OUTBOX, RELEASES, STORE_STATES, TIMERS, TRACKS

RELEASE_COLUMNS = columns(ReleaseInfo, RELEASES)
EVALUATION_COLUMNS = columns(EvaluationInfo, EVALUATIONS)


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A stored evaluation with its gates, as the API's decision and the CLI's decision card show it."""

    id: int
    release_id: int
    stage: str
    transition: str
    target: str | None
    verdict: str
    summary: str
    fingerprint: str
    trigger: str
    pending: bool  # this decision waits for a release manager
    created_at: datetime
    gates: tuple[GateLight, ...]
    evidence: dict[str, Any]

    @classmethod
    def of(cls, ev: EvaluationInfo, pending: bool) -> DecisionView:
        gates = tuple(
            GateLight(g["gate"], g["outcome"], g.get("reason"), g.get("detail", ""), g.get("inputs") or {}, g.get("ages_s") or {})
            for g in ev.gates
        )
        return cls(
            ev.id,
            ev.release_id,
            ev.stage,
            ev.transition,
            ev.target,
            ev.verdict,
            ev.summary,
            ev.fingerprint,
            ev.trigger,
            pending,
            ev.created_at,
            gates,
            ev.evidence,
        )


@dataclass(frozen=True, slots=True)
class StoreView:
    """The release at its store: what is connected, what Conductor set, what the store says."""

    connected: str | None = None  # the connection, described (credentials by reference); None: not connected
    build: str | None = None
    wanted: dict[str, Any] | None = None
    seen: dict[str, Any] | None = None
    synced_at: datetime | None = None
    drift: str | None = None  # what differs, while in drift
    halting: bool = False  # a halt queued for the store and not confirmed yet
    skipped: int = 0  # store actions skipped because no store is connected

    @property
    def line(self) -> str:
        """One line for the CLI and the dashboard."""
        if self.connected is None:
            tail = f" ({self.skipped} store action(s) skipped)" if self.skipped else ""
            return f"store not connected: rollout actions are not performed{tail}"
        if self.drift:
            return f"store drift: {self.drift}; the robot waits for a release manager (conductor store accept|reapply)"
        if self.halting:
            return "halting at the store: the halt is not confirmed yet (retried until it is)"
        seen = self.seen or {}
        state = str(seen.get("status", "not rolled out yet")).replace("_", " ")
        if seen.get("percent") is not None and seen.get("status") not in ("completed", "none"):
            state += f" at {seen['percent']:g}%"
        if seen.get("day"):
            state += f" (day {seen['day']} of 7)"
        synced = f", read {self.synced_at:%Y-%m-%d %H:%M %Z}" if self.synced_at else ""
        return f"{self.connected}: {state}{' build ' + self.build if self.build else ''}{synced}"


@dataclass(frozen=True, slots=True)
class ReleaseSnapshot:
    """One release, read at one moment (see the module docstring)."""

    release: ReleaseInfo
    pipeline: Pipeline
    latest: EvaluationInfo | None
    pending: EvaluationInfo | None
    status: ReleaseStatus
    waiting: Waiting
    lights: tuple[GateLight, ...]
    audit: tuple[AuditInfo, ...] = ()
    outbox: tuple[ActionInfo, ...] = ()
    timers: tuple[TimerInfo, ...] = ()
    store: StoreView | None = None
    read_at: datetime | None = field(default=None, compare=False)
    # The question on the latest evidence went unanswered by its deadline (escalated, held on it)
    # and still stands: a release manager can answer it late (conductor.store.questions).
    late: EvaluationInfo | None = None

    @classmethod
    def of(
        cls,
        pipeline: Pipeline,
        release: ReleaseInfo,
        latest: EvaluationInfo | None,
        pending: EvaluationInfo | None,
        now: datetime,
        late: EvaluationInfo | None = None,
        **rows: Any,
    ) -> ReleaseSnapshot:
        status = status_of(pipeline, release, latest, pending)
        store = rows.get("store")
        if status is ReleaseStatus.HALTED and store is not None and store.halting:
            status = ReleaseStatus.HALTING
        return cls(
            release,
            pipeline,
            latest,
            pending,
            status,
            waiting_of(pipeline, release, latest, pending, now, late is not None),
            lights_of(pipeline, release, latest),
            read_at=now,
            late=late,
            **rows,
        )

    # ---- the API's names (api.schemas.ReleaseSummary / ReleaseDetail read these)

    @property
    def id(self) -> int:
        return self.release.id

    @property
    def key(self) -> str:
        return self.release.key

    @property
    def track(self) -> str:
        return self.release.track_id

    @property
    def release_version(self) -> str:
        return self.release.version

    @property
    def stage(self) -> str:
        return self.release.stage

    @property
    def version(self) -> int:
        """The optimistic-lock version a writer sends back as expected_version / If-Match."""
        return self.release.version_id

    @property
    def paused(self) -> bool:
        return self.release.paused

    @property
    def pause_reason(self) -> str | None:
        return self.release.pause_reason

    @property
    def pending_decision_id(self) -> int | None:
        return self.release.pending_evaluation_id

    @property
    def branch(self) -> str | None:
        return self.release.branch

    @property
    def head_sha(self) -> str | None:
        return self.release.head_sha

    @property
    def build(self) -> str | None:
        return self.release.build

    @property
    def gates(self) -> tuple[GateLight, ...]:
        return self.lights

    @property
    def entered_stage_at(self) -> datetime:
        return self.release.entered_stage_at

    @property
    def created_at(self) -> datetime:
        return self.release.created_at

    @property
    def updated_at(self) -> datetime:
        return self.release.updated_at

    @property
    def waiting_for(self) -> str:
        return self.waiting.text

    @property
    def definition(self) -> dict[str, str]:
        return {"name": self.pipeline.name, "hash": self.release.definition_hash}

    @property
    def unreviewed_commits(self) -> list[dict[str, Any]]:
        return list(self.release.unreviewed_commits or [])

    @property
    def latest_decision(self) -> DecisionView | None:
        if self.latest is None:
            return None
        return DecisionView.of(self.latest, self.pending is not None and self.pending.id == self.latest.id)

    @property
    def pending_decision(self) -> DecisionView | None:
        return DecisionView.of(self.pending, True) if self.pending is not None else None

    @property
    def late_decision(self) -> DecisionView | None:
        """The question that went unanswered by its deadline and can still be answered."""
        return DecisionView.of(self.late, True) if self.late is not None else None

    @property
    def timeline(self) -> tuple[AuditInfo, ...]:
        return self.audit

    @property
    def actions(self) -> tuple[ActionInfo, ...]:
        return self.outbox


def _one_release(conn: Connection, ref: int | str) -> ReleaseInfo:
    named = release_filter(ref)
    if named is None:
        raise NotFound(f"unknown release {ref!r}; use its id or TRACK/VERSION")
    by, params = named
    row = conn.execute(select(*RELEASE_COLUMNS).where(where_release(by)), params).first()
    if row is None:
        raise NotFound(f"unknown release {ref!r}")
    return build(ReleaseInfo, row)


def late_question(conn: Connection, release: ReleaseInfo, latest: EvaluationInfo | None) -> EvaluationInfo | None:
    """The latest evaluation, when it puts a question that went unanswered by its deadline and can
    still be answered (its freshest card); None otherwise (one query, and only for a release held
    on a question)."""
    held = (
        release.pending_evaluation_id is None
        and latest is not None
        and latest.verdict == "ask"
        and latest.stage == release.stage
        and release.rejected_fingerprint == latest.fingerprint
    )
    if not held or latest is None:
        return None
    return latest if unanswered_escalation(conn, release.id, release.stage, release.rejected_fingerprint) is not None else None


def evaluation(conn: Connection, evaluation_id: int) -> EvaluationInfo | None:
    row = conn.execute(select(*EVALUATION_COLUMNS).where(EVALUATIONS.c.id == evaluation_id)).first()
    return build(EvaluationInfo, row) if row is not None else None


def snapshot(ctx: Context, ref: int | str) -> ReleaseSnapshot:
    """Everything shown about one release (by id or 'track/version'), in one read; NotFound if unknown."""
    with ctx.db.reading() as conn:
        release = _one_release(conn, ref)
        rid = release.id
        latest_row = conn.execute(
            select(*EVALUATION_COLUMNS).where(EVALUATIONS.c.release_id == rid).order_by(EVALUATIONS.c.id.desc()).limit(1)
        ).first()
        latest = build(EvaluationInfo, latest_row) if latest_row is not None else None
        pending = None
        if release.pending_evaluation_id is not None:
            pending = (
                latest
                if latest is not None and latest.id == release.pending_evaluation_id
                else evaluation(conn, release.pending_evaluation_id)
            )
        audit_rows = conn.execute(select(*AUDIT_CONTENT).where(AUDIT.c.release_id == rid).order_by(AUDIT.c.id))
        audit = tuple(build(AuditInfo, a) for a in audit_rows)
        outbox = tuple(build(ActionInfo, o) for o in conn.execute(select(OUTBOX).where(OUTBOX.c.release_id == rid).order_by(OUTBOX.c.id)))
        timers = tuple(
            build(TimerInfo, t)
            for t in conn.execute(select(TIMERS).where(TIMERS.c.release_id == rid, TIMERS.c.fired_at.is_(None)).order_by(TIMERS.c.due_at))
        )
        pipeline = ctx.pinned(conn, release.definition_hash)
        store = _store_view(conn, release, outbox)
        late = late_question(conn, release, latest)
    return ReleaseSnapshot.of(pipeline, release, latest, pending, ctx.now(), late, audit=audit, outbox=outbox, timers=timers, store=store)


def _store_view(conn: Connection, release: ReleaseInfo, outbox: tuple[ActionInfo, ...]) -> StoreView:
    from conductor.actions.connections import parse_connections
    from conductor.domain.actions import STORE_ACTIONS
    from conductor.domain.errors import ConductorError

    settings = conn.execute(select(TRACKS.c.settings).where(TRACKS.c.id == release.track_id)).scalar()
    try:
        connection = parse_connections(release.track_id, dict(settings or {})).store
    except ConductorError:
        connection = None
    skipped = sum(o.action in STORE_ACTIONS and o.status == "skipped" for o in outbox)
    if connection is None:
        return StoreView(build=release.build, skipped=skipped)
    row = conn.execute(select(STORE_STATES).where(STORE_STATES.c.release_id == release.id)).first()
    halting = any(o.action == "halt_rollout" and o.status in ("pending", "sending") for o in outbox)
    drift = (row.drift or {}).get("detail") if row is not None and row.drift_since is not None else None
    return StoreView(connection.describe(), release.build, row.wanted if row else None, row.seen if row else None,
                     row.synced_at if row else None, drift, halting, skipped)  # fmt: skip


def summaries(ctx: Context, conn: Connection, releases: list[ReleaseInfo]) -> list[ReleaseSnapshot]:
    """Snapshots without timeline, actions and timers (enough for status, lights and waiting), read in bulk."""
    ids = [r.id for r in releases]
    latest_ids = (
        list(conn.scalars(select(func.max(EVALUATIONS.c.id)).where(EVALUATIONS.c.release_id.in_(ids)).group_by(EVALUATIONS.c.release_id)))
        if ids
        else []
    )
    wanted = set(latest_ids) | {r.pending_evaluation_id for r in releases if r.pending_evaluation_id}
    evaluations = (
        {
            e.id: e
            for e in (build(EvaluationInfo, row) for row in conn.execute(select(*EVALUATION_COLUMNS).where(EVALUATIONS.c.id.in_(wanted))))
        }
        if wanted
        else {}
    )
    latest = {evaluations[i].release_id: evaluations[i] for i in latest_ids if i in evaluations}
    now = ctx.now()
    return [
        ReleaseSnapshot.of(
            ctx.pinned(conn, r.definition_hash),
            r,
            latest.get(r.id),
            evaluations.get(r.pending_evaluation_id) if r.pending_evaluation_id else None,
            now,
            late_question(conn, r, latest.get(r.id)),
        )
        for r in releases
    ]


@dataclass(frozen=True, slots=True)
class ReleasePage:
    items: list[ReleaseSnapshot]
    next_cursor: int | None


def list_releases(
    ctx: Context,
    *,
    track: str | None = None,
    stage: str | None = None,
    awaiting_approval: bool | None = None,
    paused: bool | None = None,
    limit: int | None = 50,
    cursor: int | None = None,
    newest_first: bool = True,
) -> ReleasePage:
    """Releases with filters, newest first; `cursor` is the `next_cursor` of the previous page (ids below it)."""
    q = select(*RELEASE_COLUMNS)
    if track is not None:
        q = q.where(RELEASES.c.track_id == track)
    if stage is not None:
        q = q.where(RELEASES.c.stage == stage)
    if awaiting_approval is not None:
        q = q.where(RELEASES.c.pending_evaluation_id.is_not(None) if awaiting_approval else RELEASES.c.pending_evaluation_id.is_(None))
    if paused is not None:
        q = q.where(RELEASES.c.paused.is_(paused))
    if cursor is not None:
        q = q.where(RELEASES.c.id < cursor)
    q = q.order_by(RELEASES.c.id.desc() if newest_first else RELEASES.c.id)
    if limit is not None:
        q = q.limit(limit + 1)
    with ctx.db.reading() as conn:
        rows = [build(ReleaseInfo, r) for r in conn.execute(q)]
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        items = summaries(ctx, conn, rows)
    return ReleasePage(items, rows[-1].id if more and rows else None)


def get_decision(ctx: Context, release_id: int, decision_id: int) -> DecisionView:
    """A stored decision of the release (pending or not); NotFound otherwise."""
    with ctx.db.reading() as conn:
        release = conn.execute(
            select(RELEASES.c.track_id, RELEASES.c.version, RELEASES.c.pending_evaluation_id).where(RELEASES.c.id == release_id)
        ).first()
        if release is None:
            raise NotFound(f"unknown release {release_id}")
        ev = evaluation(conn, decision_id)
    if ev is None or ev.release_id != release_id:
        raise NotFound(f"release {release.track_id}/{release.version} has no decision {decision_id}")
    return DecisionView.of(ev, release.pending_evaluation_id == ev.id)
