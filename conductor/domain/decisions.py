"""From gate results to a decision on a release's outgoing transition, with its evidence.

A decision has two hashes. Its `fingerprint` names the question it puts: the verdict and each
gate's outcome and reason (and, for unreviewed commits, which commits). It stays the same while
only the numbers move within their bands, so one pause is one question: new samples refresh the
evidence on the card without withdrawing it, and an approval stays valid until an outcome
changes. Its `evidence_digest` covers every judged input (values, samples, thresholds): when it
changes, the new evidence is worth storing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from conductor.domain.definition import Pipeline, Transition
from conductor.domain.gates import WAITING_REASONS, GateContext, GateResult, Outcome, Reason, evaluate_gate
from conductor.domain.kinds import WaitKind
from conductor.domain.policy import Policy
from conductor.domain.schedules import next_schedule_time


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
    # Shadow gates: judged beside the live ones, never acted on; what the verdict would have been with them.
    shadow: tuple[GateResult, ...] = ()
    shadow_verdict: Verdict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The question this decision puts: verdict, each gate's outcome and reason, and the commits
        behind an unreviewed change. The same while values only move within their bands.

        A question to a human (ASK) is about the gates in doubt for a reason more data will not
        settle (a grey zone, stale data, no baseline, an unreviewed change) and, for the rest,
        only whether the robot stopped waiting for data: a gate it still waits for and a gate that
        passed read the same. So a gate that settles while the question is open (the rerun passed,
        the comparison cleared the tolerance) narrows the question without changing it: the card
        stays, its approval still holds, and a rejection of "go on without that data" is not asked
        again while the robot only waits for data. A gate falling into a new doubt changes it."""
        body = {
            "transition": self.transition,
            "verdict": self.verdict.value,
            "gates": [self._question_of(r) for r in self.results],
        }
        return _digest(body)

    def _question_of(self, r: GateResult) -> dict[str, Any]:
        if self.verdict is Verdict.ASK and (r.outcome is Outcome.PASS or r.reason in WAITING_REASONS):
            return {"gate": r.gate, "outcome": "pass_or_waiting"}
        question: dict[str, Any] = {"gate": r.gate, "outcome": r.outcome.value, "reason": r.reason.value}
        if "commits" in r.inputs:
            question["commits"] = sorted(c.get("sha", "") for c in r.inputs["commits"])
        return question

    @property
    def evidence_digest(self) -> str:
        """A hash of everything judged (values, samples, thresholds, outcomes), not of when: a
        re-report of the same value (new row, new timestamp) is not new evidence; a new value is."""
        body: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "inputs": [{k: v for k, v in r.inputs.items() if k != "observed_at"} for r in self.results],
        }
        if self.wait in (WaitKind.SCHEDULE, WaitKind.FREEZE, WaitKind.NIGHT) and self.not_before is not None:
            # When it may go is part of what was decided when a calendar says it (a skipped branch
            # cut, a freeze's end, the morning window): a new time is a new card.
            body["not_before"] = self.not_before.isoformat()
        return _digest(body)

    def evidence(self) -> dict[str, Any]:
        out = {
            "transition": self.transition,
            "stage": self.stage,
            "target": self.target,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "wait": self.wait.value if self.wait else None,
            "gates": [r.as_evidence() for r in self.results],
            "digest": self.evidence_digest,
            **self.extra,
        }
        if self.shadow:
            out["shadow"] = [r.as_evidence() for r in self.shadow]
            out["shadow_verdict"] = self.shadow_verdict.value if self.shadow_verdict else None
        return out


def _digest(body: dict[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def not_before(pipeline: Pipeline, transition: Transition, entered_at: datetime) -> datetime:
    """Earliest moment the transition may be taken: end of soak and the scheduled time, whichever is later."""
    t = entered_at + transition.min_soak
    if transition.schedule:
        t = max(t, next_schedule_time(pipeline, transition.schedule, entered_at))
    return t


@dataclass(frozen=True)
class _Verdict:
    verdict: Verdict
    summary: str
    wait_until: datetime | None = None
    wait: WaitKind | None = None


def _judge(transition: Transition, results: tuple[GateResult, ...], earliest: datetime, ctx: GateContext) -> _Verdict:
    """The verdict on a set of gate results.

    Order matters: a failed gate is acted on even during soak (a bad crash rate at 1% halts now);
    then the soak/schedule is honoured; then, while any gate still waits for data (up to
    max_wait), the robot waits, even if another gate is grey: asking before the data is in asks
    too early, and the data often settles the grey gate too. Only then does an inconclusive gate
    ask a human."""
    failed = [r for r in results if r.outcome is Outcome.FAIL]
    unclear = [r for r in results if r.outcome is Outcome.INCONCLUSIVE]
    if failed:
        names = ", ".join(f"{r.gate} ({r.detail})" for r in failed)
        return _Verdict(Verdict.HALT if transition.on_fail == "halt" else Verdict.HOLD, f"failed: {names}")
    if ctx.now < earliest:
        why = WaitKind.SCHEDULE if transition.schedule and earliest > ctx.stage_entered_at + transition.min_soak else WaitKind.SOAK
        return _Verdict(Verdict.WAIT, f"{why.value} until {earliest.isoformat()}", earliest, why)
    if not unclear:
        return _Verdict(Verdict.ADVANCE, "all gates pass")
    waiting = [r for r in unclear if r.reason in WAITING_REASONS]
    asking = [r for r in unclear if r.reason not in WAITING_REASONS]
    if waiting and (transition.max_wait is None or ctx.now < earliest + transition.max_wait):
        names = ", ".join(f"{r.gate} ({r.detail})" for r in waiting)
        until = earliest + transition.max_wait if transition.max_wait else None
        return _Verdict(Verdict.WAIT, f"waiting for {names}", until, WaitKind.DATA)
    if asking:
        return _Verdict(Verdict.ASK, "inconclusive: " + ", ".join(f"{r.gate} ({r.detail})" for r in asking + waiting))
    return _Verdict(Verdict.ASK, f"still waiting after {transition.max_wait} for " + ", ".join(f"{r.gate} ({r.detail})" for r in waiting))


def decide(
    pipeline: Pipeline,
    stage: str,
    ctx: GateContext,
    extra_results: tuple[GateResult, ...] = (),
    policy: Policy | None = None,
) -> Decision | None:
    """Judge the outgoing transition of `stage`; None when the stage has none (final, halted, cancelled).

    Shadow gates are judged too, and what the verdict would have been with them is recorded
    (never acted on). A `policy` (conductor.domain.policy: freezes, quiet hours) turns an advance
    that would raise user exposure into a wait; it never holds back a halt or a hold."""
    transition = pipeline.advance_from(stage)
    if transition is None:
        return None
    live: list[GateResult] = []
    shadow: list[GateResult] = []
    for name in transition.gates:
        gate = pipeline.gates[name]
        result = evaluate_gate(name, gate, ctx, pipeline.scale_of(gate))
        (shadow if gate.mode == "shadow" else live).append(result)
    results = tuple(live) + extra_results
    earliest = not_before(pipeline, transition, ctx.stage_entered_at)
    if policy is not None and transition.schedule:
        earliest = policy.skip_cuts(pipeline, transition.schedule, earliest)
    v = _judge(transition, results, earliest, ctx)
    if v.verdict is Verdict.ADVANCE and policy is not None and (held := policy.holds(pipeline, transition, ctx.now)) is not None:
        why, until, kind = held
        v = _Verdict(Verdict.WAIT, why, until, WaitKind.FREEZE if kind == "freeze" else WaitKind.NIGHT)
    # Each shadow gate's own "would have": the verdict had it been live beside the live ones.
    judged_shadow = tuple(
        replace(r, inputs={**r.inputs, "would": _judge(transition, (*results, r), earliest, ctx).verdict.value}) for r in shadow
    )
    would = _judge(transition, results + tuple(shadow), earliest, ctx).verdict if shadow else None
    return Decision(v.verdict, transition.name, stage, transition.target, results, v.summary, earliest, v.wait_until, v.wait,
                    judged_shadow, would)  # fmt: skip


def unapproved_change_result(commits: list[dict[str, Any]], marker: str) -> GateResult:
    """An INCONCLUSIVE pseudo-gate for pushes to the release branch without the critical-fix marker."""
    return GateResult(
        "critical_fixes_only",
        Outcome.INCONCLUSIVE,
        Reason.UNAPPROVED_CHANGE,
        f"{len(commits)} commit(s) on the release branch without {marker!r}",
        {"commits": commits, "marker": marker},
    )
