"""Where a release is and what it waits for, as pure functions of its stored state.

One set of rules for every surface: the API's `status`, `gates` and `waiting_for`, the CLI's
table and the dashboard's cards are all computed here, from a release row, its pinned pipeline,
its latest stored evaluation and the pending one (if a question is open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conductor.domain.definition import Pipeline, SignoffGate
from conductor.domain.gates import WAITING_REASONS
from conductor.domain.kinds import ReleaseStatus, WaitKind
from conductor.read.records import EvaluationInfo, ReleaseInfo

_BY_VERDICT = {
    "wait": ReleaseStatus.WAITING,
    "hold": ReleaseStatus.HELD,
    "ask": ReleaseStatus.HELD,  # asked, and answered no (or timed out): held until the evidence changes
    "halt": ReleaseStatus.HELD,  # a human resumed over this evidence: held until it changes
    "advance": ReleaseStatus.ADVANCING,
}


@dataclass(frozen=True, slots=True)
class GateLight:
    """One gate of the outgoing transition with its last outcome (no_data: not judged in this stage)."""

    gate: str
    outcome: str  # pass | fail | inconclusive | no_data
    reason: str | None = None
    detail: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    ages_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Waiting:
    """What the robot waits for before the release can move: a kind and a line of text."""

    kind: WaitKind
    text: str  # surfaces that show `until` add it: "the soak to end at Mon 30 Nov 07:39 CET"
    until: datetime | None = None  # soak end or scheduled time
    since: datetime | None = None  # when the wait for a human began


def status_of(pipeline: Pipeline, release: ReleaseInfo, latest: EvaluationInfo | None, pending: EvaluationInfo | None) -> ReleaseStatus:
    kind = pipeline.stages[release.stage].kind
    if kind == "final":
        return ReleaseStatus.RELEASED
    if kind == "cancelled":
        return ReleaseStatus.CANCELLED
    if kind == "halted":
        return ReleaseStatus.HALTED
    if release.paused:
        return ReleaseStatus.PAUSED
    if pending is not None:
        return ReleaseStatus.AWAITING_APPROVAL
    if latest is not None and latest.stage == release.stage:
        return _BY_VERDICT.get(latest.verdict, ReleaseStatus.WAITING)
    return ReleaseStatus.WAITING


def _light(g: dict[str, Any]) -> GateLight:
    return GateLight(g["gate"], g["outcome"], g.get("reason"), g.get("detail", ""), g.get("inputs") or {}, g.get("ages_s") or {})


def lights_of(pipeline: Pipeline, release: ReleaseInfo, latest: EvaluationInfo | None) -> tuple[GateLight, ...]:
    """Each gate of the outgoing transition with its last outcome; a halted release shows what halted it."""
    kind = pipeline.stages[release.stage].kind
    if kind == "halted":
        if latest is not None and latest.stage == release.halted_from:
            return tuple(_light(g) for g in latest.gates)
        return ()
    if kind in ("final", "cancelled"):
        return ()
    if latest is None or latest.stage != release.stage:
        t = pipeline.advance_from(release.stage)
        return tuple(GateLight(g, "no_data", None, "not evaluated in this stage yet") for g in (t.gates if t else []))
    return tuple(_light(g) for g in latest.gates)


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
    pipeline: Pipeline,
    release: ReleaseInfo,
    latest: EvaluationInfo | None,
    pending: EvaluationInfo | None,
    now: datetime,
    late: bool = False,
) -> Waiting:
    """What the release waits for: a soak end, the schedule, an approval, a signal, a sign-off, a fix, a human.
    `late`: the question on its latest evidence went unanswered by its deadline and can still be answered."""
    kind = pipeline.stages[release.stage].kind
    if kind == "final":
        return Waiting(WaitKind.DONE, "nothing (released)")
    if kind == "cancelled":
        return Waiting(WaitKind.DONE, "nothing (cancelled)")
    if kind == "halted":
        return Waiting(WaitKind.HUMAN, "a release manager to resume or cancel", since=release.entered_stage_at)
    if release.paused:
        return Waiting(WaitKind.RESUME, f"resume (paused: {release.pause_reason or 'no reason given'})", since=release.updated_at)
    if pending is not None:
        return Waiting(WaitKind.APPROVAL, f"approval to move to {pending.target or ''}", since=pending.created_at)
    if latest is None or latest.stage != release.stage:
        return Waiting(WaitKind.EVALUATION, "its first evaluation in this stage")
    ev = latest.evidence
    if latest.verdict == "wait":
        not_before = datetime.fromisoformat(ev["not_before"]) if ev.get("not_before") else None
        if not_before is not None and not_before > now:
            # The domain says why it waits (evidence["wait"]); older rows without it waited on a soak.
            if ev.get("wait") == WaitKind.SCHEDULE:
                return Waiting(WaitKind.SCHEDULE, "its scheduled move", until=not_before)
            return Waiting(WaitKind.SOAK, "the soak to end", until=not_before)
        signals, teams = _waiting_gates(pipeline, ev.get("gates", []))
        if teams and not signals:
            return Waiting(WaitKind.SIGNOFF, "sign-off from " + ", ".join(teams))
        parts = signals + ([f"sign-off from {', '.join(teams)}"] if teams else [])
        return Waiting(WaitKind.DATA, "signal: " + "; ".join(parts) if parts else latest.summary)
    if latest.verdict in ("hold", "halt"):
        failed = [g["gate"] for g in ev.get("gates", []) if g.get("outcome") == "fail"]
        return Waiting(WaitKind.FIX, "a fix for " + ", ".join(failed) if failed else latest.summary)
    if latest.verdict == "ask" and late:
        return Waiting(
            WaitKind.APPROVAL, "a late answer: the question was unanswered by its deadline (approve or reject it), or new evidence"
        )
    if latest.verdict == "ask":
        return Waiting(WaitKind.DATA, "new evidence (the question on this evidence was answered no)")
    return Waiting(WaitKind.ADVANCING, "nothing (advancing)")


def _gate_lines(ev: EvaluationInfo, outcome: str, word: str) -> str:
    return "; ".join(f"{g['gate']} {word}: {g.get('detail') or outcome}" for g in ev.gates if g.get("outcome") == outcome)


def reason_of(
    pipeline: Pipeline, release: ReleaseInfo, latest: EvaluationInfo | None, status: ReleaseStatus, late: bool = False
) -> str | None:
    """Why a halted or held release stopped, in one line, from the evaluation that stopped it: its
    failed gates with value and threshold ('crash_free failed: 98.2 ≤ 99'). None for any other status."""
    if status == ReleaseStatus.HALTED:
        failed = _gate_lines(latest, "fail", "failed") if latest is not None and latest.stage == release.halted_from else ""
        return failed or f"halted in {release.halted_from or 'a rollout stage'} (no failed gate recorded)"
    if status != ReleaseStatus.HELD or latest is None or latest.stage != release.stage:
        return None
    if latest.verdict == "ask":
        unclear = _gate_lines(latest, "inconclusive", "unclear") or latest.summary
        return f"{'unanswered by its deadline' if late else 'not approved'}: {unclear}"
    failed = _gate_lines(latest, "fail", "failed") or latest.summary
    if latest.verdict == "halt":  # resumed by a human over this evidence: held until it changes
        return f"{failed} (resumed over it; held until the evidence changes)"
    return failed


def view_of(pipeline: Pipeline, release: ReleaseInfo, latest_final_id: int | None) -> str:
    """Production (rolling out, halted, or the latest released), current (on the branch), upcoming (not cut yet)."""
    kind = pipeline.stages[release.stage].kind
    if kind in ("rollout", "halted"):
        return "production"
    if kind == "final":
        return "production" if release.id == latest_final_id else "finished"
    if kind == "cancelled":
        return "finished"
    return "upcoming" if release.stage == pipeline.initial_stage else "current"


def stage_index(order: list[str], pipeline: Pipeline, release: ReleaseInfo) -> int:
    """Position on the stage bar (the stage a halted release halted in); -1 when off the main line."""
    stage = release.halted_from if pipeline.stages[release.stage].kind == "halted" and release.halted_from else release.stage
    return order.index(stage) if stage in order else -1
