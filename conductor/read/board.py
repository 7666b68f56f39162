"""The overview board: every track and release, classified into production / current / upcoming.

Read in one read-only transaction with a handful of bulk queries (never one per release), so the
overview stays fast with hundreds of releases; evaluations, which never change once stored, are
kept decoded in the context's cache between refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from conductor.context import Context
from conductor.domain.definition import Pipeline
from conductor.domain.errors import ConductorError
from conductor.domain.kinds import AuditKind
from conductor.read.records import EvaluationInfo, ReleaseInfo, build
from conductor.read.release import EVALUATION_COLUMNS, RELEASE_COLUMNS, late_question
from conductor.read.status import GateLight, Waiting, lights_of, reason_of, stage_index, status_of, view_of, waiting_of
from conductor.store.freezes import active
from conductor.store.statements import AUDIT, EVALUATIONS, RELEASES, SIGNALS, TRACKS


@dataclass(frozen=True, slots=True)
class PendingApproval:
    release_id: int
    key: str
    evaluation_id: int
    stage: str
    target: str
    summary: str
    asked_at: datetime
    age: timedelta
    timezone: str = "UTC"  # the track pipeline's, for the times in the summary
    late: bool = False  # unanswered by its deadline (escalated, the release held on it): still answerable


@dataclass(frozen=True, slots=True)
class ReleaseCard:
    """One release as the overview shows it."""

    id: int
    key: str
    track_id: str
    version: str
    stage: str
    status: str
    view: str  # production | current | upcoming | finished
    stage_order: tuple[str, ...]
    stage_index: int  # position on the stage bar, -1 when off the main line
    halted_from: str | None
    paused: bool
    lights: tuple[GateLight, ...]
    waiting: Waiting
    entered_stage_at: datetime
    time_in_stage: timedelta
    timezone: str
    pending: PendingApproval | None = None
    updated_at: datetime | None = None
    reason: str | None = None  # halted or held: why, in one line (conductor.read.status.reason_of)


@dataclass
class TrackBoard:
    track: str
    definition: str
    timezone: str
    production: list[ReleaseCard] = field(default_factory=list)
    current: list[ReleaseCard] = field(default_factory=list)
    upcoming: list[ReleaseCard] = field(default_factory=list)
    finished: list[ReleaseCard] = field(default_factory=list)
    store_connected: bool = True  # False: its pipeline moves a store rollout and no store is connected
    digest: str | None = None  # the latest morning digest (conductor.service.digest), as sent
    frozen: tuple[str, ...] = ()  # the reasons of the freezes covering it now
    digest_at: datetime | None = None


@dataclass(frozen=True)
class Board:
    now: datetime
    pending: list[PendingApproval]
    tracks: list[TrackBoard]
    counts: dict[str, int]


def card_of(
    pipeline: Pipeline,
    order: tuple[str, ...],
    release: ReleaseInfo,
    latest: EvaluationInfo | None,
    pending: EvaluationInfo | None,
    latest_final_id: int | None,
    now: datetime,
    late: bool = False,
) -> ReleaseCard:
    """A release's card: the same status, lights and wait as every other surface (conductor.read.status)."""
    pa = None
    asked = pending if pending is not None else (latest if late else None)
    if asked is not None:
        pa = PendingApproval(
            release.id,
            release.key,
            asked.id,
            release.stage,
            asked.target or "",
            asked.summary,
            asked.created_at,
            now - asked.created_at,
            pipeline.timezone,
            late=pending is None,
        )
    status = status_of(pipeline, release, latest, pending)
    return ReleaseCard(
        id=release.id,
        key=release.key,
        track_id=release.track_id,
        version=release.version,
        stage=release.stage,
        status=status.value,
        view=view_of(pipeline, release, latest_final_id),
        stage_order=order,
        stage_index=stage_index(list(order), pipeline, release),
        halted_from=release.halted_from,
        paused=release.paused,
        lights=lights_of(pipeline, release, latest),
        waiting=waiting_of(pipeline, release, latest, pending, now, late),
        entered_stage_at=release.entered_stage_at,
        time_in_stage=now - release.entered_stage_at,
        timezone=pipeline.timezone,
        pending=pa,
        updated_at=release.updated_at,
        reason=reason_of(pipeline, release, latest, status, late),
    )


def evaluations_by_id(ctx: Context, conn: Connection, ids: list[int], *, keep: bool = True) -> dict[int, EvaluationInfo]:
    """The evaluations with these ids, decoded once: an evaluation never changes after it is stored
    (keep=False reads past the cache without filling it, for one-off bulk reads)."""
    cache = ctx.evaluation_cache
    with ctx.cache_lock:
        found = {i: cache[i] for i in ids if i in cache}
    missing = [i for i in ids if i not in found]
    loaded: dict[int, EvaluationInfo] = {}
    for start in range(0, len(missing), 500):
        rows = conn.execute(select(*EVALUATION_COLUMNS).where(EVALUATIONS.c.id.in_(missing[start : start + 500])))
        loaded.update({row.id: build(EvaluationInfo, row) for row in rows})
    if loaded and keep:
        with ctx.cache_lock:
            cache.update(loaded)
    return {**found, **loaded}


def _latest_evaluation_ids(conn: Connection, release_ids: list[int]) -> dict[int, int]:
    if not release_ids:
        return {}
    rows = conn.execute(
        select(EVALUATIONS.c.release_id, func.max(EVALUATIONS.c.id))
        .where(EVALUATIONS.c.release_id.in_(release_ids))
        .group_by(EVALUATIONS.c.release_id)
    ).all()
    return {rid: eid for rid, eid in rows}


def _track_timezone(ctx: Context, definition: str) -> str:
    # A track's releases carry their pinned definition; a track with none yet uses today's file.
    try:
        return ctx.catalog.get(definition).timezone
    except ConductorError:
        return "UTC"


def reading_time(ctx: Context, conn: Connection) -> datetime:
    """The clock's time, or the newest audit row's when the clock is behind the stored rows (a
    database written on a simulated clock that ran ahead, like the demo's): no wait, age or time in
    stage reads negative."""
    now = ctx.now()
    newest: datetime | None = conn.scalar(select(func.max(AUDIT.c.at)))
    return max(now, newest) if newest is not None else now


def _moves_a_store(ctx: Context, definition: str) -> bool:
    from conductor.domain.actions import STORE_ACTIONS

    try:
        pipeline = ctx.catalog.get(definition)
    except ConductorError:
        return False
    return any(a.action in STORE_ACTIONS for t in pipeline.transitions for a in t.actions)


def board(ctx: Context) -> Board:
    """Every track and release, classified into production / current / upcoming, pending approvals first."""
    with ctx.db.reading() as conn:
        now = reading_time(ctx, conn)
        rows = conn.execute(select(TRACKS.c.id, TRACKS.c.definition_name, TRACKS.c.settings).order_by(TRACKS.c.id)).all()
        tracks = {t.id: t.definition_name for t in rows}
        unconnected = {t.id for t in rows if not (t.settings or {}).get("store")}
        frozen = {t.id: tuple(f.reason for f in active(conn, t.id, now, dict(t.settings or {})) if f.holds_at(now)) for t in rows}
        digests = {
            t: (reason, at)
            for t, reason, at in conn.execute(
                select(AUDIT.c.track_id, AUDIT.c.reason, AUDIT.c.at).where(AUDIT.c.kind == AuditKind.DIGEST).order_by(AUDIT.c.id)
            )
        }  # the newest per track
        releases = [build(ReleaseInfo, r) for r in conn.execute(select(*RELEASE_COLUMNS).order_by(RELEASES.c.track_id, RELEASES.c.id))]
        pipelines = {h: ctx.pinned(conn, h) for h in {r.definition_hash for r in releases}}
        live = [r.id for r in releases if not pipelines[r.definition_hash].is_terminal(r.stage)]
        newest = _latest_evaluation_ids(conn, live)
        by_id = evaluations_by_id(
            ctx, conn, sorted(set(newest.values()) | {r.pending_evaluation_id for r in releases if r.pending_evaluation_id})
        )
        late = {r.id for r in releases if r.id in newest and late_question(conn, r, by_id.get(newest[r.id])) is not None}
    orders = {h: tuple(p.stage_order()) for h, p in pipelines.items()}
    latest_final: dict[str, tuple[datetime, int]] = {}
    for r in releases:
        if pipelines[r.definition_hash].stages[r.stage].kind == "final":
            latest_final[r.track_id] = max(latest_final.get(r.track_id, (r.entered_stage_at, r.id)), (r.entered_stage_at, r.id))
    with_releases = {r.track_id for r in releases}
    boards = {
        tid: TrackBoard(tid, definition, "UTC" if tid in with_releases else _track_timezone(ctx, definition))
        for tid, definition in tracks.items()
    }
    for tid, reasons in frozen.items():
        if tid in boards:
            boards[tid].frozen = reasons
    for tid, (text, at) in digests.items():
        if tid in boards:
            boards[tid].digest, boards[tid].digest_at = text, at
    for tid in unconnected & set(boards):
        boards[tid].store_connected = not _moves_a_store(ctx, boards[tid].definition)
    pending: list[PendingApproval] = []
    counts = {"production": 0, "current": 0, "upcoming": 0, "finished": 0, "releases": len(releases)}
    for r in releases:
        p = pipelines[r.definition_hash]
        card = card_of(
            p,
            orders[r.definition_hash],
            r,
            by_id.get(newest.get(r.id, -1)),
            by_id.get(r.pending_evaluation_id) if r.pending_evaluation_id else None,
            latest_final.get(r.track_id, (None, None))[1],
            now,
            r.id in late,
        )
        tb = boards.setdefault(r.track_id, TrackBoard(r.track_id, "?", p.timezone))
        tb.timezone = p.timezone
        getattr(tb, card.view).append(card)
        counts[card.view] += 1
        if card.pending is not None:
            pending.append(card.pending)
    for tb in boards.values():
        tb.production.sort(key=lambda x: (x.status == "released", -x.stage_index, x.id))
        tb.current.sort(key=lambda x: (-x.stage_index, x.id))
        tb.finished.sort(key=lambda x: -x.id)
    pending.sort(key=lambda p: p.asked_at)
    return Board(now, pending, list(boards.values()), counts)


def change_marks(ctx: Context, release_id: int | None = None) -> dict[str, str]:
    """Cheap markers that change whenever what a page shows changes (the live-update poll compares them)."""
    with ctx.db.reading() as conn:
        if release_id is None:
            board_row = conn.execute(
                select(
                    select(func.max(AUDIT.c.id)).scalar_subquery(),
                    select(func.max(EVALUATIONS.c.id)).scalar_subquery(),
                    select(func.count(RELEASES.c.id)).scalar_subquery(),
                    select(func.max(RELEASES.c.updated_at)).scalar_subquery(),
                )
            ).one()
            return {"board": ":".join(str(x) for x in board_row)}
        row = conn.execute(
            select(
                select(RELEASES.c.stage).where(RELEASES.c.id == release_id).scalar_subquery(),
                select(RELEASES.c.version_id).where(RELEASES.c.id == release_id).scalar_subquery(),
                select(func.max(AUDIT.c.id)).where(AUDIT.c.release_id == release_id).scalar_subquery(),
                select(func.max(EVALUATIONS.c.id)).where(EVALUATIONS.c.release_id == release_id).scalar_subquery(),
                select(func.max(SIGNALS.c.id)).where(SIGNALS.c.release_id == release_id).scalar_subquery(),
            )
        ).one()
    stage, version, audit, evaluation, signal = row
    return {
        "stage": str(stage),
        "release": f"{version}:{audit}:{evaluation}",
        "timeline": str(audit),
        "decision": f"{version}:{evaluation}",
        "signals": f"{signal}:{stage}",
    }
