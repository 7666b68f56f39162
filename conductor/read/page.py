"""One release in depth, as the dashboard's release page shows it: the snapshot plus its decision
card (each gate's value, thresholds, samples, source and age), the signal histories with the
bands the gates judge them by, and when the release entered each stage."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from conductor.context import Context
from conductor.domain.definition import CompareGate, CountGate, Pipeline, SignoffGate, ThresholdGate
from conductor.domain.kinds import MOVES, AuditKind, ReleaseStatus
from conductor.read.board import ReleaseCard, card_of, reading_time
from conductor.read.records import AuditInfo, EvaluationInfo
from conductor.read.release import ReleaseSnapshot, snapshot
from conductor.store.statements import SIGNALS, SOURCE_POLLS

MAX_POINTS_PER_SIGNAL = 200
# Audit kinds that come in runs (every intake of signals, each action a track's settings skip):
# consecutive rows of one of these kinds are one line of the timeline, opened on demand.
FOLDED = frozenset({AuditKind.SIGNALS_RECORDED, AuditKind.ACTION_SKIPPED})


@dataclass(frozen=True, slots=True)
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
    would: str | None = None  # a shadow gate: the verdict it would have given ("halt"), never acted on


@dataclass(frozen=True, slots=True)
class DecisionCard:
    evaluation: EvaluationInfo
    pending: bool
    rows: tuple[GateRow, ...]
    summary: str
    target: str | None
    shadow: tuple[GateRow, ...] = ()  # shadow gates, each with what it would have done
    # pending: asks a release manager; late: asked, unanswered by its deadline, still answerable;
    # halted / held: the evaluation that stopped the release; latest: the last judgement
    kind: str = "latest"


@dataclass(frozen=True, slots=True)
class SignalPoint:
    at: datetime
    value: float | None
    samples: int | None
    source: str
    error: str | None


@dataclass(frozen=True, slots=True)
class SignalSeries:
    name: str
    type: str
    description: str
    points: tuple[SignalPoint, ...]
    # (label, value, kind): the bands the gates reading this signal judge it by
    thresholds: tuple[tuple[str, float, str], ...]


@dataclass(frozen=True, slots=True)
class TimelineItem:
    """One line of the timeline: an audit row, or a run of consecutive rows of a FOLDED kind."""

    kind: str
    entries: tuple[AuditInfo, ...]  # newest first

    @property
    def latest(self) -> AuditInfo:
        return self.entries[0]

    @property
    def folded(self) -> bool:
        return len(self.entries) > 1


def timeline(audit: tuple[AuditInfo, ...]) -> tuple[TimelineItem, ...]:
    """The audit log newest first, each run of consecutive FOLDED rows of one kind as one item."""
    items: list[TimelineItem] = []
    for a in reversed(audit):
        if items and a.kind in FOLDED and items[-1].kind == a.kind:
            items[-1] = TimelineItem(a.kind, (*items[-1].entries, a))
        else:
            items.append(TimelineItem(a.kind, (a,)))
    return tuple(items)


@dataclass(frozen=True, slots=True)
class SourceRow:
    """A pulled source as the release page shows it."""

    source: str
    kind: str
    last_polled_at: datetime | None
    last_success_at: datetime | None
    polls: int
    errors: int
    last_error: str | None
    due_at: datetime


@dataclass(frozen=True, slots=True)
class ReleaseView:
    snapshot: ReleaseSnapshot
    card: ReleaseCard
    decision: DecisionCard | None
    signals: tuple[SignalSeries, ...]
    stage_marks: tuple[tuple[datetime, str], ...]  # when the release entered each stage
    now: datetime
    timeline: tuple[TimelineItem, ...] = ()
    sources: tuple[SourceRow, ...] = ()


def thresholds_text(spec: Any) -> str:
    """A gate's bands in words: 'passes ≥ 99.5, fails ≤ 99', 'fails > 0, needs ≥ 5000'."""
    if isinstance(spec, CompareGate):
        unit = " pp" if spec.tolerance and spec.signal else ""
        floor = f", fails {'<' if spec.better == 'higher' else '>'} {spec.floor:g}" if spec.floor is not None else ""
        return f"regression under {spec.tolerance:g}{unit} vs the {spec.baseline} release{floor}"
    if isinstance(spec, ThresholdGate):
        op_pass, op_fail = ("≥", "≤") if spec.better == "higher" else ("≤", "≥")
        return f"passes {op_pass} {spec.pass_at:g}, fails {op_fail} {spec.fail_at:g}"
    if isinstance(spec, CountGate):
        parts = []
        if spec.max is not None:
            parts.append(f"fails > {spec.max}")
        if spec.min is not None:
            parts.append(f"needs ≥ {spec.min}")  # below it the gate waits for more
        return ", ".join(parts)
    if isinstance(spec, SignoffGate):
        return "every team: " + ", ".join(spec.teams)
    return ""


def decision_card(pipeline: Pipeline, ev: EvaluationInfo, pending: bool, now: datetime, kind: str = "") -> DecisionCard:
    """Each gate of an evaluation with its value, thresholds, sample size, source and age (as of
    now), and its shadow gates with what each would have done."""
    rows = tuple(_row(pipeline, g, now) for g in ev.gates)
    shadow = tuple(_row(pipeline, g, now) for g in ev.evidence.get("shadow", []))
    return DecisionCard(ev, pending, rows, ev.summary, ev.target, shadow, kind or ("pending" if pending else "latest"))


def deciding_card(pipeline: Pipeline, rc: ReleaseCard, ev: EvaluationInfo | None, pending: bool, now: datetime) -> DecisionCard | None:
    """The evaluation the release page shows: the pending question; for a halted release the one
    that halted it (judged in the stage it halted from); else the latest judgement in this stage."""
    if ev is None or not ev.gates:
        return None
    if rc.status == ReleaseStatus.HALTED:
        return decision_card(pipeline, ev, pending, now, "halted") if ev.stage == rc.halted_from else None
    if ev.stage != rc.stage:
        return None
    return decision_card(pipeline, ev, pending, now, "held" if rc.status == ReleaseStatus.HELD and not pending else "")


def _row(pipeline: Pipeline, g: dict[str, Any], now: datetime) -> GateRow:
    spec = pipeline.gates.get(g["gate"])
    inputs = g.get("inputs") or {}
    observed = datetime.fromisoformat(inputs["observed_at"]) if inputs.get("observed_at") else None
    return GateRow(
        gate=g["gate"],
        outcome=g["outcome"],
        reason=g.get("reason", ""),
        detail=g.get("detail", ""),
        signal=inputs.get("signal") or getattr(spec, "signal", None),
        value=inputs.get("value"),
        thresholds=thresholds_text(spec) if spec is not None else (f"needs {inputs.get('marker')!r}" if "marker" in inputs else ""),
        samples=inputs.get("samples"),
        min_samples=getattr(spec, "min_samples", None) or None,
        source=inputs.get("source"),
        observed_at=observed,
        age=(now - observed) if observed else None,
        max_age=getattr(spec, "max_age", None),
        teams=inputs.get("teams"),
        commits=inputs.get("commits"),
        would=inputs.get("would"),
    )


def _bands(pipeline: Pipeline, signal: str) -> tuple[tuple[str, float, str], ...]:
    bands: list[tuple[str, float, str]] = []
    for gname, g in pipeline.gates.items():
        if isinstance(g, ThresholdGate) and g.signal == signal:
            bands += [(f"{gname} pass", g.pass_at, "pass"), (f"{gname} fail", g.fail_at, "fail")]
        elif isinstance(g, CountGate) and g.signal == signal:
            bands += [(f"{gname} max", float(g.max), "fail")] if g.max is not None else []
            bands += [(f"{gname} min", float(g.min), "pass")] if g.min is not None else []
    return tuple(sorted(set(bands)))


def release_view(ctx: Context, ref: int | str) -> ReleaseView:
    """One release with its decision card, signal histories and stage entry times; NotFound if unknown."""
    snap = snapshot(ctx, ref)
    r, p = snap.release, snap.pipeline
    with ctx.db.reading() as conn:
        now = max(snap.read_at or ctx.now(), reading_time(ctx, conn))  # as the board's: no negative ages
        rows = conn.execute(
            select(SIGNALS.c.name, SIGNALS.c.observed_at, SIGNALS.c.value, SIGNALS.c.samples, SIGNALS.c.source, SIGNALS.c.error)
            .where(SIGNALS.c.release_id == r.id, ~SIGNALS.c.name.like("signoff.%"))
            .order_by(SIGNALS.c.observed_at, SIGNALS.c.id)
        ).all()
        p_ = SOURCE_POLLS.c
        sources = tuple(
            SourceRow(s.source, s.kind, s.last_polled_at, s.last_success_at, s.polls, s.errors, s.last_error, s.due_at)
            for s in conn.execute(select(SOURCE_POLLS).where(p_.release_id == r.id).order_by(p_.source))
        )
    by_name: dict[str, list[SignalPoint]] = defaultdict(list)
    for row in rows:
        by_name[row.name].append(SignalPoint(row.observed_at, row.value, row.samples, row.source, row.error))
    series = tuple(
        SignalSeries(name, spec.type, spec.description, tuple(by_name[name][-MAX_POINTS_PER_SIGNAL:]), _bands(p, name))
        for name, spec in p.signals.items()
        if name in by_name
    )
    latest_final = r.id if p.stages[r.stage].kind == "final" else None
    rc = card_of(p, tuple(p.stage_order()), r, snap.latest, snap.pending, latest_final, now, snap.late is not None)
    if snap.late is not None:  # unanswered by its deadline: still answerable, on its freshest card
        card: DecisionCard | None = decision_card(p, snap.late, True, now, "late")
    else:
        card = deciding_card(p, rc, snap.pending or snap.latest, snap.pending is not None, now)
    marks = tuple((a.at, a.to_stage) for a in snap.audit if a.kind in MOVES and a.to_stage)
    return ReleaseView(snap, rc, card, series, marks, now, timeline(snap.audit), sources)
