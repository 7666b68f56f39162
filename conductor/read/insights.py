"""Insights per track: share reaching full rollout, time per stage, time waiting for humans, hours saved.

Hours saved compare each robot transition with the manual baseline: a release manager would have
pressed the button at the next 09:00 on a working day (the track's time zone) after the gates
passed. Transitions without gates (pure calendar moves such as branch day) are not counted.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from conductor.context import Context
from conductor.domain.definition import Pipeline
from conductor.domain.kinds import ANSWERS, MOVES, ROBOT, AuditKind
from conductor.read.board import evaluations_by_id, reading_time
from conductor.read.records import ReleaseInfo, build
from conductor.read.release import RELEASE_COLUMNS
from conductor.store.statements import AUDIT, EVALUATIONS, RELEASES, TRACKS

WORKDAY_START_HOUR = 9


@dataclass(frozen=True, slots=True)
class StageTime:
    stage: str
    visits: int
    median: timedelta
    mean: timedelta


@dataclass(frozen=True, slots=True)
class ShadowTally:
    """How a shadow gate fared: in how many stored evaluations it was judged, and in how many it
    would have changed the live decision."""

    gate: str
    judged: int
    disagreed: int


@dataclass(frozen=True, slots=True)
class TrackInsights:
    track: str
    definition: str
    timezone: str
    full_rollout_stage: str
    releases: int
    reached_full: int
    ended_short: int  # cancelled before reaching full rollout
    in_flight: int
    stage_times: tuple[StageTime, ...]
    human_wait_total: timedelta
    human_wait_median: timedelta | None  # per release that waited at all
    approvals_asked: int
    robot_transitions: int
    saved_total: timedelta
    saved_median: timedelta | None  # per robot transition
    shadow: tuple[ShadowTally, ...] = ()
    halted: int = 0  # halted (a rollout stopped on a failed gate), not counted as on the way

    @property
    def share_full(self) -> float | None:
        """Of the releases that ended (reached full rollout, cancelled before it, or halted), the share that reached it."""
        decided = self.reached_full + self.ended_short + self.halted
        return self.reached_full / decided if decided else None


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


def elapsed(since: datetime, until: datetime) -> timedelta:
    """until - since, never negative (a clock behind the stored rows, as in the demo's database, reads as no time)."""
    return max(until - since, timedelta(0))


def human_wait(entries: list[Any], now: datetime) -> timedelta:
    """Time the robot sat on a question for a human (an approval, or a halted rollout), still open ones until now."""
    total = timedelta(0)
    open_since: datetime | None = None
    halted_since: datetime | None = None
    for a in entries:
        if a.kind == AuditKind.APPROVAL_REQUESTED and open_since is None:
            open_since = a.at
        elif a.kind in ANSWERS and open_since is not None:
            total += elapsed(open_since, a.at)
            open_since = None
        if a.kind == AuditKind.HALTED:
            halted_since = a.at
        elif a.kind in (AuditKind.RESUMED, AuditKind.CANCELLED) and halted_since is not None:
            total += elapsed(halted_since, a.at)
            halted_since = None
    for since in (open_since, halted_since):
        if since is not None:
            total += elapsed(since, now)
    return total


def questions_asked(entries: list[Any]) -> int:
    """Distinct questions put to a release manager: a question asked again (the same fingerprint,
    after it was withdrawn or answered) is still one question."""
    return len({a.fingerprint or a.evaluation_id for a in entries if a.kind == AuditKind.APPROVAL_REQUESTED})


def _median(values: list[timedelta]) -> timedelta | None:
    return timedelta(seconds=statistics.median(v.total_seconds() for v in values)) if values else None


def _evidence_times(ctx: Context, conn: Connection, ids: list[int]) -> dict[int, datetime | None]:
    """Per evaluation, only the time insights need (append-only rows: it never changes once read)."""
    cache = ctx.evidence_times
    with ctx.cache_lock:
        found = {i: cache[i] for i in ids if i in cache}
    missing = [i for i in ids if i not in found]
    loaded = {i: newest_evidence_time(e.evidence) for i, e in evaluations_by_id(ctx, conn, missing, keep=False).items()}
    with ctx.cache_lock:
        cache.update(loaded)
    return {**found, **loaded}


@dataclass
class _Tally:
    """Counts of one track while its releases are walked."""

    reached: int = 0
    ended_short: int = 0
    halted: int = 0
    in_flight: int = 0
    approvals: int = 0
    robot_moves: int = 0

    def count(self, kind: str, *, reached: bool) -> None:
        """Where one release ended up, by the kind of its stage and whether it reached full rollout."""
        if kind == "halted":
            self.halted += 1  # stopped on a failed gate until a human resumes or cancels: not on the way
        elif reached or kind == "final":
            self.reached += 1
        elif kind == "cancelled":
            self.ended_short += 1
        else:
            self.in_flight += 1


def insights(ctx: Context) -> list[TrackInsights]:
    """Per track: share reaching full rollout, time per stage, time waiting for humans, hours saved
    (open waits count until board.reading_time: never negative on a clock behind the rows)."""
    with ctx.db.reading() as conn:
        now = reading_time(ctx, conn)
        tracks = list(conn.execute(select(TRACKS.c.id, TRACKS.c.definition_name).order_by(TRACKS.c.id)))
        releases = [build(ReleaseInfo, r) for r in conn.execute(select(*RELEASE_COLUMNS).order_by(RELEASES.c.id))]
        pipelines = {r.id: ctx.pinned(conn, r.definition_hash) for r in releases}
        audit: dict[int, list[Any]] = defaultdict(list)
        cols = (AUDIT.c.release_id, AUDIT.c.at, AUDIT.c.kind, AUDIT.c.actor, AUDIT.c.from_stage, AUDIT.c.to_stage, AUDIT.c.evaluation_id)
        rows = conn.execute(
            select(*cols, EVALUATIONS.c.fingerprint)
            .outerjoin(EVALUATIONS, EVALUATIONS.c.id == AUDIT.c.evaluation_id)
            .where(AUDIT.c.release_id.is_not(None))
            .order_by(AUDIT.c.release_id, AUDIT.c.id)
        )
        for a in rows:
            audit[a.release_id].append(a)
        robot_ids = [
            a.evaluation_id
            for rows in audit.values()
            for a in rows
            if a.kind == AuditKind.TRANSITIONED and a.actor == ROBOT and a.evaluation_id
        ]
        evidence_times = _evidence_times(ctx, conn, robot_ids)
        shadows = _shadow_tallies(conn)
    by_track: dict[str, list[ReleaseInfo]] = defaultdict(list)
    for r in releases:
        by_track[r.track_id].append(r)
    return [
        replace(_track(t.id, t.definition_name, rels, pipelines, audit, evidence_times, now), shadow=shadows.get(t.id, ()))
        for t in tracks
        if (rels := by_track.get(t.id))
    ]


def _shadow_tallies(conn: Connection) -> dict[str, tuple[ShadowTally, ...]]:
    """Per track and shadow gate: evaluations that judged it, and those where it would have
    changed the live decision. Only evaluations that carry shadow gates are read."""
    has_shadow = EVALUATIONS.c.evidence["shadow_verdict"].as_string().is_not(None)
    rows = conn.execute(
        select(RELEASES.c.track_id, EVALUATIONS.c.verdict, EVALUATIONS.c.evidence)
        .join(RELEASES, RELEASES.c.id == EVALUATIONS.c.release_id)
        .where(has_shadow)
    )
    tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for track, verdict, evidence in rows:
        for g in evidence.get("shadow", []):
            counts = tally[track][g["gate"]]
            counts[0] += 1
            counts[1] += (g.get("inputs") or {}).get("would", verdict) != verdict
    return {t: tuple(ShadowTally(g, c[0], c[1]) for g, c in sorted(gates.items())) for t, gates in tally.items()}


def _track(
    track: str,
    definition: str,
    rels: list[ReleaseInfo],
    pipelines: dict[int, Pipeline],
    audit: dict[int, list[Any]],
    evidence_times: dict[int, datetime | None],
    now: datetime,
) -> TrackInsights:
    pipeline = pipelines[rels[-1].id]
    order = pipeline.stage_order()
    rollouts = [st for st in order if pipeline.stages[st].kind == "rollout"]
    full = rollouts[-1] if rollouts else order[-1]
    tally = _Tally()
    durations: dict[str, list[timedelta]] = defaultdict(list)
    waits: list[timedelta] = []
    saved: list[timedelta] = []
    for r in rels:
        p = pipelines[r.id]
        entries = audit.get(r.id, [])
        visits = [(a.at, a.to_stage) for a in entries if a.kind in MOVES and a.to_stage]
        for (at, stage), (nxt, _) in zip(visits, visits[1:], strict=False):
            durations[stage].append(elapsed(at, nxt))
        tally.count(p.stages[r.stage].kind, reached=any(st == full for _, st in visits))
        waited = human_wait(entries, now)
        tally.approvals += questions_asked(entries)
        if waited:
            waits.append(waited)
        saved += _saved_by_robot(p, entries, visits, evidence_times)
    tally.robot_moves = len(saved)
    stage_times = tuple(
        StageTime(st, len(durations[st]), _median(durations[st]) or timedelta(0), sum(durations[st], timedelta(0)) / len(durations[st]))
        for st in [*order, *(x for x in pipeline.stages if x not in order)]
        if durations.get(st)
    )
    return TrackInsights(
        track=track,
        definition=definition,
        timezone=pipeline.timezone,
        full_rollout_stage=full,
        releases=len(rels),
        reached_full=tally.reached,
        ended_short=tally.ended_short,
        in_flight=tally.in_flight,
        halted=tally.halted,
        stage_times=stage_times,
        human_wait_total=sum(waits, timedelta(0)),
        human_wait_median=_median(waits),
        approvals_asked=tally.approvals,
        robot_transitions=tally.robot_moves,
        saved_total=sum(saved, timedelta(0)),
        saved_median=_median(saved),
    )


def _saved_by_robot(
    p: Pipeline, entries: list[Any], visits: list[tuple[datetime, str]], evidence_times: dict[int, datetime | None]
) -> list[timedelta]:
    """Per gated robot transition of one release: the next working morning after the gates passed, minus when it moved."""
    entered = {st: at for at, st in visits}
    saved = []
    last_entry: datetime | None = None
    for a in entries:
        if a.kind not in MOVES or not a.to_stage:
            continue
        prev_entry, last_entry = last_entry, a.at
        if a.kind != AuditKind.TRANSITIONED or a.actor != ROBOT or a.evaluation_id not in evidence_times:
            continue
        tr = p.advance_from(a.from_stage) if a.from_stage else None
        if tr is None or not tr.gates:
            continue
        passed = gates_passed_at(evidence_times[a.evaluation_id], prev_entry or entered.get(a.from_stage, a.at), a.at)
        saved.append(elapsed(a.at, next_working_morning(passed, p.timezone)))
    return saved
