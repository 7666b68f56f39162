"""Read-only views for the dashboard: the board of every release, one release in depth, insights.

Nothing here writes. Each view is read in one session with a handful of bulk queries (never one
query per release), so the overview stays fast with hundreds of releases.
"""

from __future__ import annotations

import statistics
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conductor.domain.definition import CountGate, Pipeline, SignoffGate, ThresholdGate
from conductor.domain.gates import WAITING_REASONS
from conductor.errors import ConductorError
from conductor.service.engine import ROBOT, Conductor, ReleaseSnapshot
from conductor.store.db import Database
from conductor.store.models import ApiToken, AuditEntry, Evaluation, Release, SignalRow, Track

VIEWS = ("production", "current", "upcoming")
# Audit kinds that put a release into the stage named by to_stage.
ENTERING = frozenset({"release_started", "transitioned", "halted", "resumed", "cancelled"})
# What ends a wait for a human: an answer, or the question going away.
ANSWERS = frozenset({"approved", "rejected", "decision_withdrawn", "approval_escalated", "cancelled", "halted", "transitioned"})
WORKDAY_START_HOUR = 9
MAX_POINTS_PER_SIGNAL = 200
EVALUATION_CACHE_SIZE = 2_000  # the board needs the latest (and pending) one per live release


# ---------------------------------------------------------------------------- small records


@dataclass(frozen=True)
class GateLight:
    gate: str
    outcome: str  # pass | fail | inconclusive | no_data
    detail: str = ""


@dataclass(frozen=True)
class Waiting:
    """What the robot waits for before the release can move: one kind and a line of text."""

    kind: str  # soak | schedule | approval | signal | signoff | fix | resume | human | evaluation | advancing | done
    text: str
    until: datetime | None = None  # soak end or branch day
    since: datetime | None = None  # when the question was asked


@dataclass(frozen=True)
class PendingApproval:
    release_id: int
    key: str
    evaluation_id: int
    stage: str
    target: str
    summary: str
    asked_at: datetime
    age: timedelta


@dataclass
class ReleaseCard:
    """One release as the overview shows it."""

    id: int
    key: str
    track_id: str
    version: str
    stage: str
    status: str
    view: str  # production | current | upcoming | finished
    stage_order: list[str]
    stage_index: int  # position on the stage bar, -1 when off the main line
    halted_from: str | None
    paused: bool
    lights: list[GateLight]
    waiting: Waiting
    entered_stage_at: datetime
    time_in_stage: timedelta
    timezone: str
    pending: PendingApproval | None = None
    updated_at: datetime | None = None


@dataclass
class TrackBoard:
    track: str
    definition: str
    timezone: str
    production: list[ReleaseCard] = field(default_factory=list)
    current: list[ReleaseCard] = field(default_factory=list)
    upcoming: list[ReleaseCard] = field(default_factory=list)
    finished: list[ReleaseCard] = field(default_factory=list)


@dataclass
class Board:
    now: datetime
    pending: list[PendingApproval]
    tracks: list[TrackBoard]
    counts: dict[str, int]


@dataclass(frozen=True)
class GateRow:
    """One gate of a decision card, flattened from the stored evidence."""

    gate: str
    outcome: str
    reason: str
    detail: str
    signal: str | None
    value: Any
    thresholds: str
    samples: int | None
    min_samples: int | None
    source: str | None
    observed_at: datetime | None
    age: timedelta | None
    max_age: timedelta | None
    teams: dict[str, Any] | None = None
    commits: list[dict[str, Any]] | None = None


@dataclass
class DecisionCard:
    evaluation: Evaluation
    pending: bool
    rows: list[GateRow]
    summary: str
    target: str | None


@dataclass(frozen=True)
class SignalPoint:
    at: datetime
    value: float | None
    samples: int | None
    source: str
    error: str | None


@dataclass
class SignalSeries:
    name: str
    type: str
    description: str
    points: list[SignalPoint]
    # (label, value, kind): the bands the gates reading this signal judge it by
    thresholds: list[tuple[str, float, str]]


@dataclass
class ReleaseView:
    snapshot: ReleaseSnapshot
    card: ReleaseCard
    decision: DecisionCard | None
    signals: list[SignalSeries]
    stage_marks: list[tuple[datetime, str]]  # when the release entered each stage
    now: datetime


@dataclass
class StageTime:
    stage: str
    visits: int
    median: timedelta
    mean: timedelta


@dataclass
class TrackInsights:
    track: str
    definition: str
    timezone: str
    full_rollout_stage: str
    releases: int
    reached_full: int
    ended_short: int  # cancelled before reaching full rollout
    in_flight: int
    stage_times: list[StageTime]
    human_wait_total: timedelta
    human_wait_median: timedelta | None  # per release that waited at all
    approvals_asked: int
    robot_transitions: int
    saved_total: timedelta
    saved_median: timedelta | None  # per robot transition

    @property
    def share_full(self) -> float | None:
        decided = self.reached_full + self.ended_short
        return self.reached_full / decided if decided else None


# ---------------------------------------------------------------------------- evaluations, cached


@dataclass(frozen=True)
class EvaluationInfo:
    """A stored evaluation as the views read it (same attribute names as the Evaluation row)."""

    id: int
    release_id: int
    stage: str
    transition: str
    verdict: str
    fingerprint: str
    evidence: dict[str, Any]
    trigger: str
    created_at: datetime


# Evaluations are append-only (a new judgement is a new row), so a row read once never changes:
# the board keeps the parsed evidence instead of decoding the same JSON on every refresh.
_evaluation_cache: "WeakKeyDictionary[Database, OrderedDict[int, EvaluationInfo]]" = WeakKeyDictionary()
_evaluation_lock = threading.Lock()
_EVALUATION_COLUMNS = (
    Evaluation.id, Evaluation.release_id, Evaluation.stage, Evaluation.transition, Evaluation.verdict,
    Evaluation.fingerprint, Evaluation.evidence, Evaluation.trigger, Evaluation.created_at,
)


def evaluations_by_id(c: Conductor, s: Session, ids: list[int], *, cache_them: bool = True) -> dict[int, EvaluationInfo]:
    """The evaluations with these ids, from the cache or the database (then cached, unless told not to)."""
    with _evaluation_lock:
        cache = _evaluation_cache.setdefault(c.db, OrderedDict())
        found = {i: cache[i] for i in ids if i in cache}
        for i in found:
            cache.move_to_end(i)
    missing = [i for i in ids if i not in found]
    loaded: dict[int, EvaluationInfo] = {}
    for start in range(0, len(missing), 500):
        rows = s.execute(select(*_EVALUATION_COLUMNS).where(Evaluation.id.in_(missing[start : start + 500]))).all()
        loaded.update({r.id: EvaluationInfo(**r._mapping) for r in rows})
    if loaded and cache_them:
        with _evaluation_lock:
            cache.update(loaded)
            while len(cache) > EVALUATION_CACHE_SIZE:
                cache.popitem(last=False)
    return {**found, **loaded}


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """The columns of a release the board reads."""

    id: int
    track_id: str
    version: str
    stage: str
    definition_hash: str
    entered_stage_at: datetime
    paused: bool
    pause_reason: str | None
    pending_evaluation_id: int | None
    halted_from: str | None
    updated_at: datetime

    @property
    def key(self) -> str:
        return f"{self.track_id}/{self.version}"


_RELEASE_COLUMNS = tuple(getattr(Release, f) for f in ReleaseRow.__dataclass_fields__)


EvaluationLike = Evaluation | EvaluationInfo
ReleaseLike = Release | ReleaseRow

_stage_orders: dict[int, tuple[Pipeline, list[str]]] = {}


def stage_order(pipeline: Pipeline) -> list[str]:
    """pipeline.stage_order(), computed once per (immutable) pipeline object."""
    hit = _stage_orders.get(id(pipeline))
    if hit is not None and hit[0] is pipeline:
        return hit[1]
    if len(_stage_orders) > 256:
        _stage_orders.clear()
    order = pipeline.stage_order()
    _stage_orders[id(pipeline)] = (pipeline, order)
    return order


# ---------------------------------------------------------------------------- classification


def view_of(pipeline: Pipeline, release: ReleaseLike, latest_final_id: int | None) -> str:
    """Production (rolling out, halted, or the latest released), current (on the branch), upcoming (not cut yet)."""
    kind = pipeline.stages[release.stage].kind
    if kind in ("rollout", "halted"):
        return "production"
    if kind == "final":
        return "production" if release.id == latest_final_id else "finished"
    if kind == "cancelled":
        return "finished"
    return "upcoming" if release.stage == pipeline.initial_stage else "current"


def stage_index(pipeline: Pipeline, release: ReleaseLike) -> int:
    order = stage_order(pipeline)
    stage = release.halted_from if pipeline.stages[release.stage].kind == "halted" and release.halted_from else release.stage
    return order.index(stage) if stage in order else -1


def status_of(pipeline: Pipeline, release: ReleaseLike, latest: EvaluationLike | None, pending: EvaluationLike | None) -> str:
    # Same rules as ReleaseSnapshot.status, without building a snapshot per release.
    return ReleaseSnapshot(release, pipeline, latest, pending, [], [], []).status


def lights_of(pipeline: Pipeline, release: ReleaseLike, latest: EvaluationLike | None) -> list[GateLight]:
    """Each gate of the outgoing transition with its last outcome; a halted release shows what halted it."""
    kind = pipeline.stages[release.stage].kind
    if kind == "halted":
        if latest is not None and latest.stage == release.halted_from:
            return [GateLight(g["gate"], g["outcome"], g.get("detail", "")) for g in latest.evidence.get("gates", [])]
        return []
    if kind in ("final", "cancelled"):
        return []
    if latest is None or latest.stage != release.stage:
        t = pipeline.advance_from(release.stage)
        return [GateLight(g, "no_data", "not evaluated in this stage yet") for g in (t.gates if t else [])]
    return [GateLight(g["gate"], g["outcome"], g.get("detail", "")) for g in latest.evidence.get("gates", [])]


def _waiting_gates(pipeline: Pipeline, gates: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    signals, teams = [], []
    for g in gates:
        if g.get("outcome") != "inconclusive" or g.get("reason") not in WAITING_REASONS:
            continue
        spec = pipeline.gates.get(g["gate"])
        if isinstance(spec, SignoffGate):
            teams += [t for t, v in (g.get("inputs", {}).get("teams") or {}).items() if v is None]
        elif spec is not None:
            signals.append(f"{spec.signal} ({g.get('reason', '').replace('_', ' ')})")
        else:
            signals.append(g["gate"])
    return signals, teams


def waiting_of(
    pipeline: Pipeline, release: ReleaseLike, latest: EvaluationLike | None, pending: EvaluationLike | None, now: datetime
) -> Waiting:
    """What the release waits for: a soak end, branch day, an approval, a signal, a sign-off, a fix, a human."""
    kind = pipeline.stages[release.stage].kind
    if kind == "final":
        return Waiting("done", "nothing: released")
    if kind == "cancelled":
        return Waiting("done", "nothing: cancelled")
    if kind == "halted":
        return Waiting("human", "a release manager to resume or cancel", since=release.entered_stage_at)
    if release.paused:
        return Waiting("resume", f"resume (paused: {release.pause_reason or 'no reason given'})", since=release.updated_at)
    if pending is not None:
        target = pending.evidence.get("target", "")
        return Waiting("approval", f"approval to move to {target}", since=pending.created_at)
    if latest is None or latest.stage != release.stage:
        return Waiting("evaluation", "its first evaluation in this stage")
    ev = latest.evidence
    verdict = latest.verdict
    nb = ev.get("not_before")
    not_before = datetime.fromisoformat(nb) if nb else None
    if verdict == "wait" and not_before is not None and not_before > now:
        if ev.get("summary", "").startswith("schedule"):
            return Waiting("schedule", "the scheduled time", until=not_before)
        return Waiting("soak", "soak to end", until=not_before)
    if verdict == "wait":
        signals, teams = _waiting_gates(pipeline, ev.get("gates", []))
        if teams and not signals:
            return Waiting("signoff", "sign-off from " + ", ".join(teams))
        parts = signals + ([f"sign-off from {', '.join(teams)}"] if teams else [])
        return Waiting("signal", "signal: " + "; ".join(parts) if parts else ev.get("summary", ""))
    if verdict in ("hold", "halt"):
        failed = [g["gate"] for g in ev.get("gates", []) if g.get("outcome") == "fail"]
        return Waiting("fix", "a fix for " + ", ".join(failed) if failed else ev.get("summary", ""))
    if verdict == "ask":
        return Waiting("signal", "new evidence (the question on this evidence was answered no, or timed out)")
    return Waiting("advancing", "nothing: advancing")


def _card(
    pipeline: Pipeline, release: ReleaseLike, latest: EvaluationLike | None, pending: EvaluationLike | None, latest_final_id: int | None, now: datetime
) -> ReleaseCard:
    pa = None
    if pending is not None:
        pa = PendingApproval(
            release.id, release.key, pending.id, release.stage, pending.evidence.get("target", ""),
            pending.evidence.get("summary", ""), pending.created_at, now - pending.created_at,
        )
    return ReleaseCard(
        id=release.id,
        key=release.key,
        track_id=release.track_id,
        version=release.version,
        stage=release.stage,
        status=status_of(pipeline, release, latest, pending),
        view=view_of(pipeline, release, latest_final_id),
        stage_order=stage_order(pipeline),
        stage_index=stage_index(pipeline, release),
        halted_from=release.halted_from,
        paused=release.paused,
        lights=lights_of(pipeline, release, latest),
        waiting=waiting_of(pipeline, release, latest, pending, now),
        entered_stage_at=release.entered_stage_at,
        time_in_stage=now - release.entered_stage_at,
        timezone=pipeline.timezone,
        pending=pa,
        updated_at=release.updated_at,
    )


# ---------------------------------------------------------------------------- the board


def board(c: Conductor) -> Board:
    """Every track and release, classified into production / current / upcoming, pending approvals first."""
    now = c.now()
    with c.db.read() as s:
        tracks = {t.id: t for t in s.execute(select(Track.id, Track.definition_name).order_by(Track.id))}
        # Plain column rows, not ORM objects: the board only reads them, and 500 of them add up.
        releases = [ReleaseRow(**r._mapping) for r in s.execute(select(*_RELEASE_COLUMNS).order_by(Release.track_id, Release.id))]
        by_hash: dict[str, Pipeline] = {}
        for r in releases:
            if r.definition_hash not in by_hash:
                by_hash[r.definition_hash] = c.pipeline_of(s, r)  # type: ignore[arg-type]
        pipelines = {r.id: by_hash[r.definition_hash] for r in releases}
        live = [r.id for r in releases if not pipelines[r.id].is_terminal(r.stage)]
        newest = _latest_evaluation_ids(s, live)
        by_id = evaluations_by_id(c, s, sorted(set(newest.values()) | {r.pending_evaluation_id for r in releases if r.pending_evaluation_id}))
        latest = {rid: by_id[eid] for rid, eid in newest.items()}
        latest_final: dict[str, tuple[datetime, int]] = {}
        for r in releases:
            if pipelines[r.id].stages[r.stage].kind == "final":
                latest_final[r.track_id] = max(latest_final.get(r.track_id, (r.entered_stage_at, r.id)), (r.entered_stage_at, r.id))
        boards: dict[str, TrackBoard] = {}
        with_releases = {r.track_id for r in releases}
        for tid, t in tracks.items():
            boards[tid] = TrackBoard(tid, t.definition_name, "UTC" if tid in with_releases else _track_timezone(c, t))
        pending: list[PendingApproval] = []
        counts = {"production": 0, "current": 0, "upcoming": 0, "finished": 0, "releases": len(releases)}
        for r in releases:
            p = pipelines[r.id]
            pend = by_id.get(r.pending_evaluation_id) if r.pending_evaluation_id else None
            card = _card(p, r, latest.get(r.id), pend, latest_final.get(r.track_id, (None, None))[1], now)
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


def _track_timezone(c: Conductor, track: Any) -> str:
    # A track's releases carry their pinned definition; a track with none yet uses today's file.
    try:
        return c.catalog.get(track.definition_name).timezone
    except ConductorError:
        return "UTC"


def _latest_evaluation_ids(s: Session, release_ids: list[int]) -> dict[int, int]:
    if not release_ids:
        return {}
    rows = s.execute(
        select(Evaluation.release_id, func.max(Evaluation.id)).where(Evaluation.release_id.in_(release_ids)).group_by(Evaluation.release_id)
    ).all()
    return {rid: eid for rid, eid in rows}


# ---------------------------------------------------------------------------- one release


def _thresholds(spec: Any) -> str:
    if isinstance(spec, ThresholdGate):
        op_pass, op_fail = ("≥", "≤") if spec.better == "higher" else ("≤", "≥")
        return f"pass {op_pass} {spec.pass_at:g}, fail {op_fail} {spec.fail_at:g}"
    if isinstance(spec, CountGate):
        parts = []
        if spec.max is not None:
            parts.append(f"fail > {spec.max}")
        if spec.min is not None:
            parts.append(f"wait < {spec.min}")
        return ", ".join(parts)
    if isinstance(spec, SignoffGate):
        return "every team: " + ", ".join(spec.teams)
    return ""


def decision_card(pipeline: Pipeline, ev: Evaluation, pending: bool, now: datetime) -> DecisionCard:
    """Each gate of an evaluation with its value, thresholds, sample size, source and age (as of now)."""
    rows = []
    for g in ev.evidence.get("gates", []):
        spec = pipeline.gates.get(g["gate"])
        inputs = g.get("inputs") or {}
        observed = datetime.fromisoformat(inputs["observed_at"]) if inputs.get("observed_at") else None
        rows.append(
            GateRow(
                gate=g["gate"],
                outcome=g["outcome"],
                reason=g.get("reason", ""),
                detail=g.get("detail", ""),
                signal=inputs.get("signal") or getattr(spec, "signal", None),
                value=inputs.get("value"),
                thresholds=_thresholds(spec) if spec is not None else (f"needs {inputs.get('marker')!r}" if "marker" in inputs else ""),
                samples=inputs.get("samples"),
                min_samples=getattr(spec, "min_samples", None) or None,
                source=inputs.get("source"),
                observed_at=observed,
                age=(now - observed) if observed else None,
                max_age=getattr(spec, "max_age", None),
                teams=inputs.get("teams"),
                commits=inputs.get("commits"),
            )
        )
    return DecisionCard(ev, pending, rows, ev.evidence.get("summary", ""), ev.evidence.get("target"))


def release_view(c: Conductor, ref: int | str) -> ReleaseView:
    """One release with its decision card, signal histories and stage entry times; NotFound if unknown."""
    snap = c.snapshot(ref)
    now = c.now()
    r, p = snap.release, snap.pipeline
    with c.db.read() as s:
        rows = s.scalars(
            select(SignalRow).where(SignalRow.release_id == r.id, ~SignalRow.name.like("signoff.%")).order_by(SignalRow.observed_at, SignalRow.id)
        ).all()
    by_name: dict[str, list[SignalPoint]] = defaultdict(list)
    for row in rows:
        by_name[row.name].append(SignalPoint(row.observed_at, row.value, row.samples, row.source, row.error))
    series = []
    for name, spec in p.signals.items():
        if name not in by_name:
            continue
        bands: list[tuple[str, float, str]] = []
        for gname, g in p.gates.items():
            if isinstance(g, ThresholdGate) and g.signal == name:
                bands += [(f"{gname} pass", g.pass_at, "pass"), (f"{gname} fail", g.fail_at, "fail")]
            elif isinstance(g, CountGate) and g.signal == name:
                bands += [(f"{gname} max", float(g.max), "fail")] if g.max is not None else []
                bands += [(f"{gname} min", float(g.min), "pass")] if g.min is not None else []
        series.append(SignalSeries(name, spec.type, spec.description, by_name[name][-MAX_POINTS_PER_SIGNAL:], sorted(set(bands))))
    ev = snap.pending or snap.latest
    card = decision_card(p, ev, snap.pending is not None, now) if ev is not None and ev.stage == r.stage and ev.evidence.get("gates") else None
    latest_final = r.id if p.stages[r.stage].kind == "final" else None
    rc = _card(p, r, snap.latest, snap.pending, latest_final, now)
    marks = [(a.at, a.to_stage) for a in snap.audit if a.kind in ENTERING and a.to_stage]
    return ReleaseView(snap, rc, card, series, marks, now)


# ---------------------------------------------------------------------------- change marks


def change_marks(c: Conductor, release_id: int | None = None) -> dict[str, str]:
    """Cheap markers that change whenever what a page shows changes (the live-update poll compares them)."""
    with c.db.read() as s:
        if release_id is None:
            row = s.execute(
                select(
                    select(func.max(AuditEntry.id)).scalar_subquery(),
                    select(func.max(Evaluation.id)).scalar_subquery(),
                    select(func.count(Release.id)).scalar_subquery(),
                    select(func.max(Release.updated_at)).scalar_subquery(),
                )
            ).one()
            return {"board": ":".join(str(x) for x in row)}
        row = s.execute(
            select(
                select(Release.stage).where(Release.id == release_id).scalar_subquery(),
                select(Release.version_id).where(Release.id == release_id).scalar_subquery(),
                select(func.max(AuditEntry.id)).where(AuditEntry.release_id == release_id).scalar_subquery(),
                select(func.max(Evaluation.id)).where(Evaluation.release_id == release_id).scalar_subquery(),
                select(func.max(SignalRow.id)).where(SignalRow.release_id == release_id).scalar_subquery(),
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


# ---------------------------------------------------------------------------- sessions


def active_token(c: Conductor, token_id: int) -> tuple[str, str] | None:
    """(name, role) of an API token that is still valid, or None when it was revoked or deleted."""
    with c.db.read() as s:
        row = s.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return None
        return row.name, row.role


def token_id_for(c: Conductor, name: str) -> int | None:
    with c.db.read() as s:
        return s.scalar(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))


# ---------------------------------------------------------------------------- insights


def next_working_morning(at: datetime, tz: str, hour: int = WORKDAY_START_HOUR) -> datetime:
    """The manual baseline: the first hour:00 on a working day (Mon-Fri) at or after `at`, in `tz`."""
    local = at.astimezone(ZoneInfo(tz))
    t = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if t < local:
        t += timedelta(days=1)
    while t.weekday() >= 5:
        t += timedelta(days=1)
    return t.astimezone(at.tzinfo)


def newest_evidence_time(evidence: dict[str, Any]) -> datetime | None:
    """The later of the soak end and the newest input (signal or sign-off) an evaluation judged."""
    times = []
    if evidence.get("not_before"):
        times.append(datetime.fromisoformat(evidence["not_before"]))
    for g in evidence.get("gates", []):
        inputs = g.get("inputs") or {}
        if inputs.get("observed_at"):
            times.append(datetime.fromisoformat(inputs["observed_at"]))
        for team in (inputs.get("teams") or {}).values():
            if team and team.get("at"):
                times.append(datetime.fromisoformat(team["at"]))
    return max(times) if times else None


def gates_passed_at(evidence_time: datetime | None, entered: datetime, transition_at: datetime) -> datetime:
    """When every gate of an advance was passing and the soak was over: the newest evidence time,
    never before the stage was entered nor after the transition."""
    return min(max(entered, evidence_time or entered), transition_at)


# Per evaluation, only the time insights need (append-only rows: it never changes once read).
_evidence_times: "WeakKeyDictionary[Database, dict[int, datetime | None]]" = WeakKeyDictionary()
EVIDENCE_TIMES_CACHE_SIZE = 200_000


def _evidence_times_by_id(c: Conductor, s: Session, ids: list[int]) -> dict[int, datetime | None]:
    with _evaluation_lock:
        cache = _evidence_times.setdefault(c.db, {})
        found = {i: cache[i] for i in ids if i in cache}
    missing = [i for i in ids if i not in found]
    loaded = {i: newest_evidence_time(e.evidence) for i, e in evaluations_by_id(c, s, missing, cache_them=False).items()}
    with _evaluation_lock:
        if len(cache) + len(loaded) > EVIDENCE_TIMES_CACHE_SIZE:
            cache.clear()
        cache.update(loaded)
    return {**found, **loaded}


def _median(values: list[timedelta]) -> timedelta | None:
    return timedelta(seconds=statistics.median(v.total_seconds() for v in values)) if values else None


def insights(c: Conductor) -> list[TrackInsights]:
    """Per track: share reaching full rollout, time per stage, time waiting for humans, hours saved.

    Hours saved compare each robot transition with the manual baseline: a release manager would
    have pressed the button at the next 09:00 on a working day (track's time zone) after the gates
    passed. Transitions without gates (pure calendar moves such as branch day) are not counted.
    """
    now = c.now()
    with c.db.read() as s:
        tracks = list(s.scalars(select(Track).order_by(Track.id)))
        releases = list(s.scalars(select(Release).order_by(Release.id)))
        pipelines = {r.id: c.pipeline_of(s, r) for r in releases}
        audit: dict[int, list[Any]] = defaultdict(list)
        columns = (AuditEntry.release_id, AuditEntry.at, AuditEntry.kind, AuditEntry.actor, AuditEntry.from_stage, AuditEntry.to_stage, AuditEntry.evaluation_id)
        for a in s.execute(select(*columns).where(AuditEntry.release_id.is_not(None)).order_by(AuditEntry.release_id, AuditEntry.id)):
            audit[a.release_id].append(a)
        robot_ev_ids = [a.evaluation_id for rows in audit.values() for a in rows if a.kind == "transitioned" and a.actor == ROBOT and a.evaluation_id]
        evidence_times = _evidence_times_by_id(c, s, robot_ev_ids)

    by_track: dict[str, list[Release]] = defaultdict(list)
    for r in releases:
        by_track[r.track_id].append(r)
    out = []
    for t in tracks:
        rels = by_track.get(t.id, [])
        if not rels:
            continue
        pipeline = pipelines[rels[-1].id]
        order = stage_order(pipeline)
        rollouts = [st for st in order if pipeline.stages[st].kind == "rollout"]
        full = rollouts[-1] if rollouts else order[-1]
        reached = ended_short = in_flight = approvals = robot_moves = 0
        durations: dict[str, list[timedelta]] = defaultdict(list)
        waits_per_release: list[timedelta] = []
        saved: list[timedelta] = []
        for r in rels:
            p = pipelines[r.id]
            entries = audit.get(r.id, [])
            visits = [(a.at, a.to_stage) for a in entries if a.kind in ENTERING and a.to_stage]
            for (at, stage), (nxt, _) in zip(visits, visits[1:]):
                durations[stage].append(nxt - at)
            got_full = any(st == full for _, st in visits) or p.stages[r.stage].kind == "final"
            if got_full:
                reached += 1
            elif p.stages[r.stage].kind == "cancelled":
                ended_short += 1
            else:
                in_flight += 1
            waited = _human_wait(entries, now)
            approvals += sum(1 for a in entries if a.kind == "approval_requested")
            if waited:
                waits_per_release.append(waited)
            entered = {st: at for at, st in visits}
            last_entry: datetime | None = None
            for a in entries:
                if a.kind in ENTERING and a.to_stage:
                    prev_entry, last_entry = last_entry, a.at
                    if a.kind != "transitioned" or a.actor != ROBOT or a.evaluation_id not in evidence_times:
                        continue
                    tr = p.advance_from(a.from_stage) if a.from_stage else None
                    if tr is None or not tr.gates:
                        continue
                    passed = gates_passed_at(evidence_times[a.evaluation_id], prev_entry or entered.get(a.from_stage, a.at), a.at)
                    saved.append(next_working_morning(passed, p.timezone) - a.at)
                    robot_moves += 1
        stage_times = [
            StageTime(st, len(durations[st]), _median(durations[st]) or timedelta(0), sum(durations[st], timedelta(0)) / len(durations[st]))
            for st in [*order, *(x for x in pipeline.stages if x not in order)]
            if durations.get(st)
        ]
        out.append(
            TrackInsights(
                track=t.id,
                definition=t.definition_name,
                timezone=pipeline.timezone,
                full_rollout_stage=full,
                releases=len(rels),
                reached_full=reached,
                ended_short=ended_short,
                in_flight=in_flight,
                stage_times=stage_times,
                human_wait_total=sum(waits_per_release, timedelta(0)),
                human_wait_median=_median(waits_per_release),
                approvals_asked=approvals,
                robot_transitions=robot_moves,
                saved_total=sum(saved, timedelta(0)),
                saved_median=_median(saved),
            )
        )
    return out


def _human_wait(entries: list[Any], now: datetime) -> timedelta:
    """Time the robot sat on a question for a human (an approval, or a halted rollout), still open ones until now."""
    total = timedelta(0)
    open_since: datetime | None = None
    halted_since: datetime | None = None
    for a in entries:
        if a.kind == "approval_requested" and open_since is None:
            open_since = a.at
        elif a.kind in ANSWERS and open_since is not None:
            total += a.at - open_since
            open_since = None
        if a.kind == "halted":
            halted_since = a.at
        elif a.kind in ("resumed", "cancelled") and halted_since is not None:
            total += a.at - halted_since
            halted_since = None
    for since in (open_since, halted_since):
        if since is not None:
            total += now - since
    return total
