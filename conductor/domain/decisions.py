"""From gate results to a decision on a release's outgoing transition, with a fingerprinted evidence record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from conductor.domain.definition import Pipeline, Transition
from conductor.domain.gates import WAITING_REASONS, GateContext, GateResult, Outcome, Reason, evaluate_gate
from conductor.domain.kinds import WaitKind


class Verdict(StrEnum):
    ADVANCE = "advance"
    WAIT = "wait"  # soak or schedule not reached, or signals not in yet
    ASK = "ask"  # some gate inconclusive: pause for a release manager
    HOLD = "hold"  # some gate failed before the store: stay
    HALT = "halt"  # some gate failed in a rollout stage: stop the rollout


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    transition: str
    stage: str
    target: str
    results: tuple[GateResult, ...]
    summary: str
    not_before: datetime | None = None  # when soak/schedule allows the transition
    wait_until: datetime | None = None  # when to look again (timer)
    wait: WaitKind | None = None  # with WAIT: soak, schedule or data (stored, so nobody parses the summary)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A hash of what was judged (values, thresholds, outcomes), not of when: ages are left out."""
        body = {
            "transition": self.transition,
            "verdict": self.verdict.value,
            "gates": [
                {"gate": r.gate, "outcome": r.outcome.value, "reason": r.reason.value, "inputs": _judged(r.inputs)} for r in self.results
            ],
        }
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def evidence(self) -> dict[str, Any]:
        return {
            "transition": self.transition,
            "stage": self.stage,
            "target": self.target,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "wait": self.wait.value if self.wait else None,
            "gates": [r.as_evidence() for r in self.results],
            **self.extra,
        }


def _judged(inputs: dict[str, Any]) -> dict[str, Any]:
    # A re-report of the same value (new row id, new timestamp) is not new evidence; a new value is.
    return {k: v for k, v in inputs.items() if k != "observed_at"}


def next_schedule_time(pipeline: Pipeline, schedule: str, after: datetime) -> datetime:
    """The first cron occurrence strictly after `after`, in the pipeline's time zone, as UTC."""
    tz = ZoneInfo(pipeline.timezone)
    it = croniter(pipeline.schedules[schedule], after.astimezone(tz))
    nxt: datetime = it.get_next(datetime)  # croniter returns an instance of the type it is asked for
    return nxt.astimezone(UTC)


def not_before(pipeline: Pipeline, transition: Transition, entered_at: datetime) -> datetime:
    """Earliest moment the transition may be taken: end of soak and the scheduled time, whichever is later."""
    t = entered_at + transition.min_soak
    if transition.schedule:
        t = max(t, next_schedule_time(pipeline, transition.schedule, entered_at))
    return t


def decide(
    pipeline: Pipeline,
    stage: str,
    ctx: GateContext,
    extra_results: tuple[GateResult, ...] = (),
) -> Decision | None:
    """Judge the outgoing transition of `stage`; None when the stage has none (final, halted, cancelled).

    Order matters: a failed gate is acted on even during soak (a bad crash rate at 1% halts now),
    then the soak/schedule is honoured, then missing data is waited for (until max_wait) and any
    other inconclusive gate asks a human.
    """
    transition = pipeline.advance_from(stage)
    if transition is None:
        return None
    results = tuple(evaluate_gate(g, pipeline.gates[g], ctx) for g in transition.gates) + extra_results
    earliest = not_before(pipeline, transition, ctx.stage_entered_at)
    failed = [r for r in results if r.outcome is Outcome.FAIL]
    unclear = [r for r in results if r.outcome is Outcome.INCONCLUSIVE]

    def make(verdict: Verdict, summary: str, wait_until: datetime | None = None, wait: WaitKind | None = None) -> Decision:
        return Decision(verdict, transition.name, stage, transition.target, results, summary, earliest, wait_until, wait)

    if failed:
        names = ", ".join(f"{r.gate} ({r.detail})" for r in failed)
        verdict = Verdict.HALT if transition.on_fail == "halt" else Verdict.HOLD
        return make(verdict, f"failed: {names}")
    if ctx.now < earliest:
        why = WaitKind.SCHEDULE if transition.schedule and earliest > ctx.stage_entered_at + transition.min_soak else WaitKind.SOAK
        return make(Verdict.WAIT, f"{why.value} until {earliest.isoformat()}", earliest, why)
    if unclear:
        waiting = [r for r in unclear if r.reason in WAITING_REASONS]
        asking = [r for r in unclear if r.reason not in WAITING_REASONS]
        if not asking:
            names = ", ".join(f"{r.gate} ({r.detail})" for r in waiting)
            if transition.max_wait is None or ctx.now < earliest + transition.max_wait:
                until = earliest + transition.max_wait if transition.max_wait else None
                return make(Verdict.WAIT, f"waiting for {names}", until, WaitKind.DATA)
            return make(Verdict.ASK, f"still waiting after {transition.max_wait} for {names}")
        names = ", ".join(f"{r.gate} ({r.detail})" for r in asking)
        return make(Verdict.ASK, f"inconclusive: {names}")
    return make(Verdict.ADVANCE, "all gates pass")


def unapproved_change_result(commits: list[dict[str, Any]], marker: str) -> GateResult:
    """An INCONCLUSIVE pseudo-gate for pushes to the release branch without the critical-fix marker."""
    return GateResult(
        "critical_fixes_only",
        Outcome.INCONCLUSIVE,
        Reason.UNAPPROVED_CHANGE,
        f"{len(commits)} commit(s) on the release branch without {marker!r}",
        {"commits": commits, "marker": marker},
    )
