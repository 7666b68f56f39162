"""Use cases for a release manager's answer to a paused decision: approve or reject, with four-eyes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conductor.context import Context
from conductor.domain.errors import ConductorError, Forbidden, IllegalTransition, NotPaused, StaleApproval
from conductor.domain.kinds import AnswerVerdict, AuditKind
from conductor.domain.policy import raises_exposure
from conductor.service.evaluation import advance, current_decision, evaluate, halt, judge
from conductor.service.step import Actor, EvaluationRef, ReleaseStep, open_step
from conductor.store.freezes import active
from conductor.store.questions import unanswered_escalation
from conductor.store.statements import EVALUATIONS

_EVALUATION = select(EVALUATIONS.c.id, EVALUATIONS.c.release_id, EVALUATIONS.c.stage, EVALUATIONS.c.fingerprint,
                     EVALUATIONS.c.evidence)  # fmt: skip


def _pending(step: ReleaseStep, evaluation_id: int | None) -> tuple[EvaluationRef, dict[str, Any]]:
    """The decision waiting for an answer (its ref and evidence); NotPaused or StaleApproval otherwise.

    An answer may name an earlier card of the same question (fresher evidence refreshed it since):
    it still answers it. A card of another question is stale. A question whose deadline passed
    unanswered (escalated, the release held on it) can still be answered late while it stands."""
    r = step.release
    row = (
        step.conn.execute(_EVALUATION.where(EVALUATIONS.c.id == r.pending_evaluation_id)).one()
        if r.pending_evaluation_id is not None
        else unanswered_escalation(step.conn, r.id, r.stage, r.rejected_fingerprint)
    )
    if row is None:
        raise NotPaused(f"release {r.key} is not waiting for approval (stage {r.stage})")
    if evaluation_id is not None and evaluation_id != row.id:
        named = step.conn.execute(_EVALUATION.where(EVALUATIONS.c.id == evaluation_id)).first()
        if named is None or named.release_id != r.id or named.fingerprint != row.fingerprint:
            raise StaleApproval(f"decision {evaluation_id} of {r.key} was superseded by decision {row.id}; review that one")
    return EvaluationRef(row.id, row.stage, row.fingerprint), row.evidence or {}


def _not_frozen(step: ReleaseStep) -> None:
    """A freeze holds every move that raises user exposure, an approved one too: lift it first."""
    transition = step.pipeline.advance_from(step.release.stage)
    if transition is None or not raises_exposure(step.pipeline, transition):
        return
    now = step.now()
    frozen = [f for f in active(step.conn, step.release.track_id, now, step.release.track_settings) if f.holds_at(now)]
    if frozen:
        why = "; ".join(f.reason for f in frozen)
        raise IllegalTransition(f"{step.release.key} is frozen ({why}): lift the freeze first (conductor unfreeze), then approve")


def check_four_eyes(step: ReleaseStep, evidence: dict[str, Any], actor: Actor, decision_id: int) -> None:
    """Forbidden when the track asks for four eyes and the actor authored a commit behind the
    decision: any commit pushed to the release branch since the last approval (marked as a
    critical fix or not), or one the decision's evidence names."""
    r = step.release
    if not r.four_eyes:
        return
    behind = [*r.commits_since_approval, *r.unreviewed_commits]
    behind += [c for g in evidence.get("gates", []) for c in (g.get("inputs", {}).get("commits") or [])]
    mine = [c for c in behind if actor.authored(c)]
    if mine:
        raise Forbidden(
            f"four-eyes: {actor.name} authored {mine[0].get('sha', '?')[:10]} on the release branch, behind decision "
            f"{decision_id}; another release manager must approve it"
        )


def approve(
    ctx: Context,
    ref: int | str,
    actor: Actor,
    reason: str,
    *,
    evaluation_id: int | None = None,
    fingerprint: str | None = None,
    expected_version: int | None = None,
) -> str:
    """Approve the pending decision and take its transition; returns the stage the release is in after.

    StaleApproval if its evidence changed since it was shown (the new decision is then judged and
    shown for review); Forbidden under four-eyes for the author of a change behind it."""
    if not reason.strip():
        raise ConductorError("an approval needs a reason")
    try:
        with open_step(ctx, ref, expected_version=expected_version) as step:
            r = step.release
            ev, evidence = _pending(step, evaluation_id)
            if fingerprint is not None and fingerprint != ev.fingerprint:
                raise StaleApproval(f"fingerprint {fingerprint[:12]} does not match decision {ev.id} ({ev.fingerprint[:12]})")
            check_four_eyes(step, evidence, actor, ev.id)
            _not_frozen(step)
            now = current_decision(step)
            if now is None or now.fingerprint != ev.fingerprint:
                raise StaleApproval(f"the question of decision {ev.id} for {r.key} changed since it was shown; review the new one")
            step.add_answer(AnswerVerdict.APPROVE, actor, reason, ev)
            step.audit(AuditKind.APPROVED, actor.name, reason, evaluation_id=ev.id, from_stage=r.stage, to_stage=now.target)
            r.unreviewed_commits = []  # the human has seen them in the evidence
            r.commits_since_approval = []  # four-eyes starts over from this approval
            advance(step, ev, actor.name, f"approved: {reason}")
            judge(step, trigger="approval")
            return r.stage
    except StaleApproval:
        evaluate(ctx, ref, trigger="stale_approval")  # surface the new decision for review
        raise


def reject(
    ctx: Context,
    ref: int | str,
    actor: Actor,
    reason: str,
    *,
    evaluation_id: int | None = None,
    expected_version: int | None = None,
) -> str:
    """Reject the pending decision: the transition's on_fail applies (hold, or halt in a rollout stage)."""
    if not reason.strip():
        raise ConductorError("a rejection needs a reason")
    with open_step(ctx, ref, expected_version=expected_version) as step:
        r = step.release
        ev, _ = _pending(step, evaluation_id)
        step.add_answer(AnswerVerdict.REJECT, actor, reason, ev)
        r.pending_evaluation_id = None
        r.rejected_fingerprint = ev.fingerprint
        step.touch()
        step.audit(AuditKind.REJECTED, actor.name, reason, evaluation_id=ev.id, from_stage=r.stage)
        transition = step.pipeline.advance_from(r.stage)
        if transition is not None and transition.on_fail == "halt":
            halt(step, actor.name, f"rejected: {reason}", ev.id)
        return r.stage
