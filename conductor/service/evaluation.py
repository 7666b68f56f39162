"""Evaluation: judge a release's outgoing transition and act on the verdict, inside one step.

`judge` is what every use case calls after it changed something a gate reads (a signal, a
sign-off, an approval, a timer): the domain's `decide()` turns the latest signals into a
verdict, the verdict is stored with its evidence (a new row only when the evidence changed), and
the step acts on it: advance (and follow a chain of zero-soak passes), wait (arm a timer), ask a
release manager, hold, or halt the rollout.
"""

from __future__ import annotations

from typing import Any

import structlog

from conductor.context import Context
from conductor.domain.actions import PERCENT_ACTIONS
from conductor.domain.decisions import Decision, Verdict, decide, unapproved_change_result
from conductor.domain.gates import GateResult
from conductor.domain.kinds import ROBOT, AuditKind, TimerKind
from conductor.domain.policy import Policy, parse_night
from conductor.service.step import Actor, EvaluationRef, ReleaseStep, open_step
from conductor.store.freezes import active

log = structlog.get_logger("conductor.service")

# A chain of passing transitions with zero soak is followed within one step, up to this many.
MAX_STEPS_PER_EVALUATION = 20
BRANCH_CUT_FINGERPRINT = "branch-cut"


def evaluate(ctx: Context, ref: int | str, trigger: str = "manual", *, expected_version: int | None = None) -> Decision | None:
    """Use case: judge the release now and act on the verdict (pull sources, an operator's request)."""
    with open_step(ctx, ref, expected_version=expected_version) as step:
        return judge(step, trigger)


def current_decision(step: ReleaseStep) -> Decision | None:
    """What the domain decides on the step's release right now (nothing stored)."""
    return decide(step.pipeline, step.release.stage, step.gate_context(), extra_results(step), policy_of(step))


def policy_of(step: ReleaseStep) -> Policy | None:
    """The track's night policy (Track.settings["night"], validated when it was set; one that no
    longer validates is logged and left out)."""
    settings = step.release.track_settings or {}
    # The freezes table is read only when the release row said some are open (usually none).
    freezes = (
        active(step.conn, step.release.track_id, step.now(), settings) if (step.release.open_freezes or settings.get("blackouts")) else ()
    )
    night = None
    if raw := settings.get("night"):
        try:
            night = parse_night(raw)
        except ValueError as exc:
            log.error("night_policy_invalid", track=step.release.track_id, error=str(exc))
    return Policy(night=night, freezes=freezes) if (night or freezes) else None


def extra_results(step: ReleaseStep) -> tuple[GateResult, ...]:
    """Pseudo-gates that come from the release rather than the definition (the critical-fix rule)."""
    r = step.release
    if not r.unreviewed_commits:
        return ()
    return (unapproved_change_result(list(r.unreviewed_commits), r.critical_fix_marker),)


def judge(step: ReleaseStep, trigger: str) -> Decision | None:
    """Decide and act until the release stops moving; returns the last decision (None: nothing to judge).

    One pause is one question: while the question a pending decision puts (its fingerprint: the
    outcomes and reasons) is unchanged, new evidence refreshes the pending card instead of
    withdrawing it and asking again, and the approval deadline keeps counting from the first ask."""
    r = step.release
    last: Decision | None = None
    for _ in range(MAX_STEPS_PER_EVALUATION):
        if step.pipeline.stages[r.stage].kind in ("final", "cancelled", "halted"):
            return last
        if r.paused:
            return _halt_while_paused(step, trigger)
        d = current_decision(step)
        if d is None:
            return last
        last = d
        prev = step.last_evaluation()
        new_question = prev is None or prev.stage != r.stage or prev.fingerprint != d.fingerprint
        ev = _stored(step, d, trigger)
        if d.verdict is Verdict.ADVANCE:
            advance(step, ev, ROBOT, "all gates pass")
            continue
        if r.pending_evaluation_id is not None:
            if new_question:
                step.audit(AuditKind.DECISION_WITHDRAWN, ROBOT, "the question changed", evaluation_id=r.pending_evaluation_id)
                r.pending_evaluation_id = None
                step.touch()
            elif r.pending_evaluation_id != ev.id:
                r.pending_evaluation_id = ev.id  # the same question on fresher evidence: the card shows it
        _act(step, d, ev, new_question)
        return d
    return last


def _stored(step: ReleaseStep, d: Decision, trigger: str) -> EvaluationRef:
    """The stored evaluation for this evidence: the last one if nothing judged changed, else a new row."""
    last = step.last_evaluation()
    digest = d.evidence_digest
    if last is not None and last.stage == step.release.stage and last.fingerprint == d.fingerprint and last.digest == digest:
        return last
    ev = step.add_evaluation(d.transition, d.verdict.value, d.fingerprint, d.evidence(), trigger, digest)
    log.info("gates_evaluated", release_id=step.release.id, stage=step.release.stage, verdict=d.verdict.value,
             fingerprint=d.fingerprint, summary=d.summary)  # fmt: skip
    return ev


def _act(step: ReleaseStep, d: Decision, ev: EvaluationRef, new_question: bool) -> None:
    r = step.release
    if d.verdict is Verdict.WAIT:
        if d.wait_until is not None:
            step.arm_timer(TimerKind.WAIT, d.wait_until, {"evaluation_id": ev.id})
    elif d.verdict is Verdict.ASK:
        if r.rejected_fingerprint == ev.fingerprint or r.pending_evaluation_id is not None:
            return  # already answered no to exactly this question, or it is open
        r.pending_evaluation_id = ev.id
        step.touch()
        step.audit(AuditKind.APPROVAL_REQUESTED, ROBOT, d.summary, evaluation_id=ev.id, from_stage=r.stage, to_stage=d.target)
        step.queue_action(f"ask:{ev.id}", "notify", {"event": "approval_requested", "summary": d.summary, "evaluation_id": ev.id})
        deadline = step.now() + step.pipeline.approval.deadline
        step.arm_timer(TimerKind.APPROVAL_DEADLINE, deadline, {"evaluation_id": ev.id, "fingerprint": ev.fingerprint}, tag=str(ev.id))
    elif d.verdict is Verdict.HOLD:
        if new_question:
            step.audit(AuditKind.HELD, ROBOT, d.summary, evaluation_id=ev.id, from_stage=r.stage)
            step.queue_action(f"hold:{ev.id}", "notify", {"event": "held", "summary": d.summary})
    elif d.verdict is Verdict.HALT:
        if r.rejected_fingerprint in (ev.digest, ev.fingerprint):
            # A human resumed over exactly this evidence (or rejected exactly this question in a
            # rollout stage); only new data halts again.
            return
        halt(step, ROBOT, d.summary, ev.id)


def _halt_while_paused(step: ReleaseStep, trigger: str) -> Decision | None:
    """A paused release (by a person, or for store drift) takes no step forward, but a failed gate
    in a rollout stage still halts it: stopping a bad rollout never waits for a resume."""
    d = current_decision(step)
    if d is None or d.verdict is not Verdict.HALT:
        return None
    ev = _stored(step, d, trigger)
    r = step.release
    if r.rejected_fingerprint in (ev.digest, ev.fingerprint):
        return d
    was = r.pause_reason
    r.paused, r.pause_reason = False, None  # the halt supersedes the pause: one resume brings it back
    halt(step, ROBOT, f"{d.summary} (while paused: {was})", ev.id)
    return d


def advance(step: ReleaseStep, ev: EvaluationRef, actor: str, reason: str) -> None:
    """Take the outgoing transition and queue the actions the definition declares on entering it."""
    r, pipeline = step.release, step.pipeline
    transition = pipeline.advance_from(r.stage)
    assert transition is not None
    before, after = step.move("advance")
    r.pending_evaluation_id = None
    r.rejected_fingerprint = None
    step.audit(AuditKind.TRANSITIONED, actor, reason, from_stage=before, to_stage=after, evaluation_id=ev.id)
    final_event = "released" if after != pipeline.cancel_stage else "cancelled"
    declared_notify = False
    percent = pipeline.stages[after].percent
    for i, action in enumerate(transition.actions):
        params: dict[str, Any] = {"stage": after, **action.params}
        if action.action in PERCENT_ACTIONS and params.get("percent") is None and percent is not None:
            params["percent"] = percent  # the target stage's share of users
        if action.action == "notify" and pipeline.is_terminal(after):
            params.setdefault("event", final_event)  # the definition's own notify is the release notice
            declared_notify = True
        step.queue_action(f"{before}->{after}:{ev.id}:{i}", action.action, params)
    if pipeline.is_terminal(after) and not declared_notify:
        step.queue_action(f"done:{after}", "notify", {"event": final_event})


def halt(step: ReleaseStep, actor: str, reason: str, evaluation_id: int | None) -> None:
    """Stop the rollout: the halted stage, the store-side halt and a notification, in one step."""
    r = step.release
    stage = r.stage
    r.halted_from = stage
    before, after = step.move("halt")
    r.pending_evaluation_id = None
    step.audit(AuditKind.HALTED, actor, reason, from_stage=before, to_stage=after, evaluation_id=evaluation_id)
    key = f"halt:{evaluation_id}:{r.updated_at.isoformat()}"
    step.queue_action(key, "halt_rollout", {"stage": stage})
    step.queue_action(key, "kill_switch", {"stage": stage, "enabled": False})  # in the same batch as the store halt
    step.queue_action(key, "notify", {"event": "halted", "summary": reason})


def branch_cut(step: ReleaseStep, actor: Actor, reason: str) -> None:
    """The release branch exists (CI saw it created): leave the initial stage whatever the schedule."""
    r = step.release
    transition = step.pipeline.advance_from(r.stage)
    assert transition is not None
    ev = step.add_evaluation(
        transition.name,
        Verdict.ADVANCE.value,
        BRANCH_CUT_FINGERPRINT,
        {
            "transition": transition.name,
            "stage": r.stage,
            "target": transition.target,
            "verdict": Verdict.ADVANCE.value,
            "summary": reason,
            "gates": [],
        },
        "branch_created",
    )
    advance(step, ev, actor.name, reason)
