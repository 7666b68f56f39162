"""Replay: the recorded signal histories of past releases, run through another definition.

Before a changed definition goes live (a compare gate instead of a fixed band, a new tolerance, a
shadow gate made live), a release engineer wants to know what it would have done to the releases
already shipped. Replay answers that and writes nothing:

- Each release is walked along the stages it really visited, at the times it really entered and
  left them (the audit log's moves). Within each visit the new definition's `decide()` is run at
  every moment something could have changed its mind: when the visit began, whenever a signal or
  a sign-off was recorded, at each time the new definition itself would have woken up (end of a
  soak, a schedule, max_wait), and when the release left the stage.
- Each gate sees what the robot saw then: for each signal the newest value recorded by that time,
  with the number of reports on the same commit (reruns), and for compare gates the baseline as
  it stood then (the previous release's newest value in the same ring, or production's).
- The first verdict other than "wait" is the new definition's decision for that visit. It is set
  beside the recorded one: the first question asked, hold, halt or robot move in that visit.
- A halt or a hold ends the replayed release there (nothing after it would have happened); a
  question is assumed answered as the real one was, when the real release left the stage.

What replay cannot know: the branch head at each moment is not recorded, so head_sha conditions
judge values of whatever commit they were measured on, and a changed stage list is compared only
on the stages both share (a recorded stage the definition lacks ends that release's replay).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from conductor.context import Context
from conductor.domain.decisions import Verdict, decide
from conductor.domain.definition import CompareGate, Pipeline
from conductor.domain.errors import NotFound
from conductor.domain.gates import Baseline, GateContext, SignalValue, Signoff
from conductor.domain.kinds import MOVES, ROBOT, SIGNOFF_PREFIX, AuditKind
from conductor.store.statements import AUDIT, RELEASES, SIGNALS, TRACKS

# A decision at most this far from the recorded one, of the same kind, is the same decision.
SAME_TIME = timedelta(minutes=1)
# How a verdict reads after "would have" / "instead of".
_WOULD = {"advance": "advanced", "ask": "asked", "hold": "held", "halt": "halted", "wait": "still been waiting", "cancel": "been cancelled"}
_INSTEAD = {"advance": "advancing", "ask": "asking", "hold": "holding", "halt": "halting", "wait": "waiting", "cancel": "cancelling"}


@dataclass(frozen=True, slots=True)
class VisitOutcome:
    """What happened (or would have) in one stage visit: the first verdict that was not "wait"."""

    stage: str
    verdict: str  # advance, ask, hold, halt, cancel; "wait" when nothing was decided before it left
    at: datetime | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReleaseReplay:
    release: str
    started_at: datetime
    recorded: tuple[VisitOutcome, ...]
    replayed: tuple[VisitOutcome, ...]
    difference: str | None  # the first difference in words; None when the decisions agree
    recorded_hours: float | None  # start to final stage, as recorded
    replayed_hours: float | None  # as the definition would have had it (None: it would have stopped)
    note: str = ""  # what cut the replay short


@dataclass(frozen=True, slots=True)
class Totals:
    releases: int
    asks: int
    holds: int
    halts: int
    released: int
    median_hours_to_release: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "releases": self.releases, "asks": self.asks, "holds": self.holds, "halts": self.halts,
            "released": self.released, "median_hours_to_release": self.median_hours_to_release,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplayReport:
    definition: str
    tracks: tuple[str, ...]
    since: datetime
    releases: tuple[ReleaseReplay, ...]
    recorded: Totals
    replayed: Totals

    @property
    def differing(self) -> int:
        return sum(r.difference is not None for r in self.releases)


@dataclass(frozen=True, slots=True)
class _Visit:
    stage: str
    entered: datetime
    left: datetime
    audit: tuple[Any, ...]  # the audit rows within the visit


@dataclass(frozen=True, slots=True)
class _Row:
    """One recorded signal row (signals and sign-offs)."""

    release_id: int
    name: str
    value: float | None
    samples: int | None
    events: int | None
    stage: str | None
    source: str
    sha: str | None
    error: str | None
    actor: str | None
    observed_at: datetime
    recorded_at: datetime
    id: int


def replay(ctx: Context, pipeline: Pipeline, *, track: str | None = None, since: timedelta = timedelta(days=90)) -> ReplayReport:
    """Run the releases started within `since` on `track` (default: every track whose definition
    has the pipeline's name) through `pipeline`. Reads only."""
    now = ctx.now()
    cutoff = now - since
    with ctx.db.reading() as conn:
        tracks = _tracks(conn, pipeline, track)
        releases = list(
            conn.execute(
                select(RELEASES.c.id, RELEASES.c.track_id, RELEASES.c.version, RELEASES.c.created_at)
                .where(RELEASES.c.track_id.in_(tracks), RELEASES.c.created_at >= cutoff)
                .order_by(RELEASES.c.id)
            )
        )
        ids = [r.id for r in releases]
        audit: dict[int, list[Any]] = defaultdict(list)
        cols = (AUDIT.c.release_id, AUDIT.c.at, AUDIT.c.kind, AUDIT.c.actor, AUDIT.c.from_stage, AUDIT.c.to_stage, AUDIT.c.id)
        for a in conn.execute(select(*cols).where(AUDIT.c.release_id.in_(ids)).order_by(AUDIT.c.id)):
            audit[a.release_id].append(a)
        history = _History(conn, tracks, pipeline, audit)
    final = {s for s, st in pipeline.stages.items() if st.kind == "final"}
    done = [_replay_release(pipeline, r, audit[r.id], history, now, final) for r in releases]
    return ReplayReport(pipeline.name, tuple(tracks), cutoff, tuple(done), _totals(done, recorded=True), _totals(done, recorded=False))


def _tracks(conn: Connection, pipeline: Pipeline, track: str | None) -> list[str]:
    if track is not None:
        if conn.execute(select(TRACKS.c.id).where(TRACKS.c.id == track)).first() is None:
            raise NotFound(f"no track {track!r}")
        return [track]
    found = [r.id for r in conn.execute(select(TRACKS.c.id).where(TRACKS.c.definition_name == pipeline.name).order_by(TRACKS.c.id))]
    if not found:
        raise NotFound(f"no track uses a definition named {pipeline.name!r}: name one with --track")
    return found


class _History:
    """Every recorded signal of the tracks' releases, to answer "what did the robot see at t"."""

    def __init__(self, conn: Connection, tracks: list[str], pipeline: Pipeline, audit: dict[int, list[Any]]) -> None:
        t = SIGNALS.c
        rows = conn.execute(
            select(t.release_id, t.name, t.value, t.samples, t.events, t.stage, t.source, t.sha, t.error, t.actor, t.observed_at,
                   t.recorded_at, t.id, RELEASES.c.track_id, RELEASES.c.version)
            .join(RELEASES, RELEASES.c.id == t.release_id)
            .where(RELEASES.c.track_id.in_(tracks))
            .order_by(t.recorded_at, t.id)
        )  # fmt: skip
        self.by_release: dict[int, list[_Row]] = defaultdict(list)
        self.names: dict[int, str] = {}
        for r in rows:
            self.by_release[r.release_id].append(_Row(*r[:13]))
            self.names[r.release_id] = f"{r.track_id}/{r.version}"
        self.production = {s for s, st in pipeline.stages.items() if st.kind in ("rollout", "final")}
        # Each release's stage over time (its moves), for "which release was in production at t".
        self.moves = {rid: [(a.at, a.to_stage) for a in rows if a.kind in MOVES and a.to_stage] for rid, rows in audit.items()}

    def stage_at(self, release_id: int, t: datetime) -> str | None:
        stage = None
        for at, to in self.moves.get(release_id, ()):
            if at > t:
                break
            stage = to
        return stage

    def baselines(self, pipeline: Pipeline, release_id: int, stage: str) -> dict[str, _BaselineCursor | _ProductionBaseline]:
        """For each compare gate of the stage's way out, its baseline as time moves forward."""
        transition = pipeline.advance_from(stage)
        found: dict[str, _BaselineCursor | _ProductionBaseline] = {}
        for name in transition.gates if transition else ():
            gate = pipeline.gates[name]
            if isinstance(gate, CompareGate) and gate.signal not in found:
                previous = gate.baseline == "previous"
                rows = [
                    r
                    for rel, rows in self.by_release.items()
                    if (rel < release_id if previous else rel != release_id)
                    for r in rows
                    if r.name == gate.signal and (r.stage == stage or not previous) and r.value is not None and r.error is None
                ]
                ordered = sorted(rows, key=lambda r: (r.recorded_at, r.id))
                found[gate.signal] = _BaselineCursor(ordered, self, pipeline) if previous else _ProductionBaseline(ordered, self)
        return found


class _ProductionBaseline:
    """The production baseline at time t as BASELINE_IN_PRODUCTION finds it live: the newest value,
    from any ring, of the newest other release that is in a rollout or final stage at t."""

    def __init__(self, rows: list[_Row], history: _History) -> None:
        self.rows, self.history = rows, history

    def at(self, t: datetime) -> Baseline | None:
        h = self.history
        live = [r for r in self.rows if r.recorded_at <= t and h.stage_at(r.release_id, t) in h.production]
        if not live:
            return None
        b = max(live, key=lambda r: (r.release_id, r.observed_at, r.id))
        return Baseline(h.names[b.release_id], SignalValue(b.name, b.value, b.observed_at, b.source, b.samples, b.sha, None, b.events))


class _BaselineCursor:
    """A compare gate's baseline at time t, as the live robot's query (BASELINE_IN_RING) would have
    found it then: the newest value recorded by t of the newest release with one that was not
    halted or cancelled at t."""

    def __init__(self, rows: list[_Row], history: _History, pipeline: Pipeline) -> None:
        self.rows, self.history, self.next = rows, history, 0
        self.stopped = {s for s in (pipeline.halt_stage, pipeline.cancel_stage) if s is not None}
        self.best: dict[int, _Row] = {}  # per release, its newest value recorded so far

    def at(self, t: datetime) -> Baseline | None:
        while self.next < len(self.rows) and self.rows[self.next].recorded_at <= t:
            r = self.rows[self.next]
            self.next += 1
            best = self.best.get(r.release_id)
            if best is None or (r.observed_at, r.id) > (best.observed_at, best.id):
                self.best[r.release_id] = r
        h = self.history
        b = next((self.best[rid] for rid in sorted(self.best, reverse=True) if h.stage_at(rid, t) not in self.stopped), None)
        if b is None:
            return None
        return Baseline(h.names[b.release_id], SignalValue(b.name, b.value, b.observed_at, b.source, b.samples, b.sha, None, b.events))


class _Cursor:
    """One release's recorded signals folded in as time moves forward: what the robot saw at t."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows
        self.next = 0
        self.latest: dict[str, _Row] = {}
        self.signoffs: dict[str, Signoff] = {}
        self.runs: dict[tuple[str, str | None], int] = defaultdict(int)

    def at(self, t: datetime) -> tuple[dict[str, SignalValue], dict[str, Signoff]]:
        while self.next < len(self.rows) and self.rows[self.next].recorded_at <= t:
            r = self.rows[self.next]
            self.next += 1
            self.runs[(r.name, r.sha)] += 1
            if r.name.startswith(SIGNOFF_PREFIX):
                team = r.name.removeprefix(SIGNOFF_PREFIX)
                self.signoffs[team] = Signoff(team, r.value == 1.0, r.actor or "?", r.observed_at)
            elif r.name not in self.latest or (r.observed_at, r.id) >= (self.latest[r.name].observed_at, self.latest[r.name].id):
                self.latest[r.name] = r
        signals = {
            n: SignalValue(n, r.value, r.observed_at, r.source, r.samples, r.sha, r.error, r.events, self.runs[(n, r.sha)])
            for n, r in self.latest.items()
        }
        return signals, dict(self.signoffs)


def _visits(audit: list[Any], now: datetime) -> list[_Visit]:
    """The stage visits the audit log records: each move opens one, the next move closes it."""
    moves = [a for a in audit if a.kind in MOVES and a.to_stage]
    visits = []
    for i, a in enumerate(moves):
        left = moves[i + 1].at if i + 1 < len(moves) else now
        rows = tuple(x for x in audit if a.at <= x.at <= left and x.id > a.id and (i + 1 >= len(moves) or x.id <= moves[i + 1].id))
        visits.append(_Visit(a.to_stage, a.at, left, rows))
    return visits


def _recorded(visit: _Visit) -> VisitOutcome:
    """What the live robot (or a person) did first in a visit."""
    for a in visit.audit:
        if a.kind == AuditKind.APPROVAL_REQUESTED:
            return VisitOutcome(visit.stage, "ask", a.at)
        if a.kind in (AuditKind.HELD, AuditKind.HALTED):
            return VisitOutcome(visit.stage, "hold" if a.kind == AuditKind.HELD else "halt", a.at)
        if a.kind == AuditKind.CANCELLED:
            return VisitOutcome(visit.stage, "cancel", a.at, f"by {a.actor}")
        if a.kind == AuditKind.TRANSITIONED:
            return VisitOutcome(visit.stage, "advance", a.at, "" if a.actor == ROBOT else f"by {a.actor}")
    return VisitOutcome(visit.stage, "wait", None)


def _replayed(pipeline: Pipeline, release_id: int, visit: _Visit, history: _History, cursor: _Cursor) -> VisitOutcome:
    """The new definition's first decision in a visit, judged at each moment it could change."""
    times = {visit.entered, visit.left}
    times |= {r.recorded_at for r in history.by_release.get(release_id, ()) if visit.entered < r.recorded_at < visit.left}
    baselines = history.baselines(pipeline, release_id, visit.stage)
    pending = sorted(times)
    seen: set[datetime] = set()
    while pending:
        at = pending.pop(0)
        if at in seen:
            continue
        seen.add(at)
        signals, signoffs = cursor.at(at)
        base = {n: b for n, c in baselines.items() if (b := c.at(at)) is not None}
        d = decide(pipeline, visit.stage, GateContext(at, visit.entered, None, signals, signoffs, base))
        if d is None:
            return VisitOutcome(visit.stage, "wait", None, "the stage has no way out")
        if d.verdict is not Verdict.WAIT:
            return VisitOutcome(visit.stage, d.verdict.value, at, d.summary)
        if d.wait_until is not None and at < d.wait_until <= visit.left and d.wait_until not in seen:
            pending = sorted({*pending, d.wait_until})
    return VisitOutcome(visit.stage, "wait", None)


def _replay_release(pipeline: Pipeline, release: Any, audit: list[Any], history: _History, now: datetime, final: set[str]) -> ReleaseReplay:
    key = f"{release.track_id}/{release.version}"
    visits = _visits(audit, now)
    started = visits[0].entered if visits else release.created_at
    recorded: list[VisitOutcome] = []
    replayed: list[VisitOutcome] = []
    note = ""
    stopped = False
    replayed_time = timedelta(0)
    cursor = _Cursor(history.by_release.get(release.id, []))
    for v in visits:
        if v.stage not in pipeline.stages:
            note = f"the definition has no stage {v.stage!r}"
            break
        if pipeline.advance_from(v.stage) is None:  # released, halted, cancelled: nothing more to judge
            break
        recorded.append(_recorded(v))
        if stopped:
            continue
        new = _replayed(pipeline, release.id, v, history, cursor)
        replayed.append(new)
        if new.verdict in ("hold", "halt"):
            stopped = True
        replayed_time += (new.at - v.entered) if new.verdict == "advance" and new.at else (v.left - v.entered)
    reached = next((v.entered for v in visits if v.stage in final), None)
    recorded_h = (reached - started).total_seconds() / 3600 if reached else None
    replayed_h = None if stopped or reached is None or note else replayed_time.total_seconds() / 3600
    tz = ZoneInfo(pipeline.timezone)
    return ReleaseReplay(key, started, tuple(recorded), tuple(replayed), _difference(recorded, replayed, tz), recorded_h, replayed_h, note)


def _difference(recorded: list[VisitOutcome], replayed: list[VisitOutcome], tz: ZoneInfo) -> str | None:
    """The first visit where the two differ, as "would have halted at rollout_1 at Tue 01 Dec 03:10
    CET instead of asking at Tue 01 Dec 09:40" (times in the pipeline's time zone)."""
    for old, new in zip(recorded, replayed, strict=False):
        close = old.at is not None and new.at is not None and abs(old.at - new.at) <= SAME_TIME
        if old.verdict == new.verdict and (close or old.at is None and new.at is None):
            continue
        when = f" at {_local(new.at, tz)}" if new.at else ""
        old_when = f" at {_local(old.at, tz, zone=False)}" if old.at and not close else ""
        if old.verdict == new.verdict:
            return f"would have {_WOULD[new.verdict]} at {new.stage}{when} instead of{old_when or ' then'}"
        return f"would have {_WOULD[new.verdict]} at {new.stage}{when} instead of {_INSTEAD[old.verdict]}{old_when}"
    return None


def _local(at: datetime, tz: ZoneInfo, zone: bool = True) -> str:
    return at.astimezone(tz).strftime("%a %d %b %H:%M %Z" if zone else "%a %d %b %H:%M")


def _totals(done: list[ReleaseReplay], *, recorded: bool) -> Totals:
    visits = [o for r in done for o in (r.recorded if recorded else r.replayed)]
    hours = [h for r in done if (h := (r.recorded_hours if recorded else r.replayed_hours)) is not None]
    return Totals(
        releases=len(done),
        asks=sum(o.verdict == "ask" for o in visits),
        holds=sum(o.verdict == "hold" for o in visits),
        halts=sum(o.verdict == "halt" for o in visits),
        released=len(hours),
        median_hours_to_release=round(statistics.median(hours), 1) if hours else None,
    )
