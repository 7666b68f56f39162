"""Numbers about the fleet of releases, read from the database (the API turns them into metrics).

Computed from stored rows rather than counted in memory, so every API replica reports the same
values whichever process (API, worker, tick) made the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from conductor.service.engine import ROBOT, Conductor
from conductor.store.models import Approval, AuditEntry, Evaluation, InboxEvent, Release

# Audit kinds that move a release to another stage.
TRANSITION_KINDS = ("transitioned", "halted", "cancelled", "resumed")


def transitions_by_stage(c: Conductor) -> dict[str, int]:
    """How many times releases entered each stage (robot, human and CI moves alike)."""
    with c.db.read() as s:
        q = (
            select(AuditEntry.to_stage, func.count())
            .where(AuditEntry.kind.in_(TRANSITION_KINDS), AuditEntry.to_stage.is_not(None))
            .group_by(AuditEntry.to_stage)
        )
        return {stage: n for stage, n in s.execute(q)}


def decisions_by_outcome(c: Conductor) -> dict[str, int]:
    """Stored decisions by verdict (advance, wait, ask, hold, halt)."""
    with c.db.read() as s:
        return {v: n for v, n in s.execute(select(Evaluation.verdict, func.count()).group_by(Evaluation.verdict))}


def human_answers_by_verdict(c: Conductor) -> dict[str, int]:
    """Release managers' answers by verdict (approve, reject, resume)."""
    with c.db.read() as s:
        return {v: n for v, n in s.execute(select(Approval.verdict, func.count()).group_by(Approval.verdict))}


def inbox_by_status(c: Conductor) -> dict[str, int]:
    with c.db.read() as s:
        return {v: n for v, n in s.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status))}


def pending_approvals(c: Conductor) -> list[tuple[str, datetime]]:
    """(track, asked at) for every release waiting for a release manager."""
    with c.db.read() as s:
        q = select(Release.track_id, Evaluation.created_at).join(Evaluation, Evaluation.id == Release.pending_evaluation_id)
        return [(t, at) for t, at in s.execute(q)]


@dataclass(frozen=True)
class TransitionDelay:
    audit_id: int
    via: str  # "robot" (gates passed), "approval" (a human said yes), "event" (CI cut the branch)
    seconds: float


def transition_delays(c: Conductor, after_audit_id: int = 0, limit: int = 5000) -> tuple[list[TransitionDelay], int]:
    """Seconds from "the release could move" to the stage transition, for transitions after an audit id.

    Robot moves: from the later of (the first of the unbroken run of all-gates-pass evaluations in
    that stage visit, the end of soak/schedule) to the transition. Approved moves: from the
    question being asked to the transition (the wait for a human). Branch cuts reported by CI: 0.
    Returns the delays and the last audit id looked at (pass it back as `after_audit_id`).
    """
    out: list[TransitionDelay] = []
    with c.db.read() as s:
        rows = s.execute(
            select(AuditEntry.id, AuditEntry.release_id, AuditEntry.at, AuditEntry.actor, AuditEntry.from_stage, AuditEntry.evaluation_id)
            .where(AuditEntry.kind == "transitioned", AuditEntry.id > after_audit_id, AuditEntry.evaluation_id.is_not(None))
            .order_by(AuditEntry.id)
            .limit(limit)
        ).all()
        for audit_id, release_id, at, actor, from_stage, ev_id in rows:
            ev = s.get(Evaluation, ev_id)
            if ev is None:
                continue
            if ev.trigger == "branch_created":
                out.append(TransitionDelay(audit_id, "event", 0.0))
                continue
            if actor != ROBOT or ev.verdict == "ask":
                out.append(TransitionDelay(audit_id, "approval", max(0.0, (at - ev.created_at).total_seconds())))
                continue
            # The stage visit starts when the release last entered from_stage before this move.
            entered = s.scalar(
                select(func.max(AuditEntry.at)).where(
                    AuditEntry.release_id == release_id, AuditEntry.to_stage == from_stage, AuditEntry.id < audit_id,
                    AuditEntry.kind.in_(("release_started", *TRANSITION_KINDS)),
                )
            )
            q = select(Evaluation).where(Evaluation.release_id == release_id, Evaluation.stage == from_stage, Evaluation.id <= ev_id)
            if entered is not None:
                q = q.where(Evaluation.created_at >= entered)
            first_pass = ev.created_at
            for e in s.scalars(q.order_by(Evaluation.id.desc()).limit(200)):
                if not all(g.get("outcome") == "pass" for g in e.evidence.get("gates", [])):
                    break
                first_pass = e.created_at
            start = first_pass
            if nb := ev.evidence.get("not_before"):
                start = max(start, datetime.fromisoformat(nb))
            out.append(TransitionDelay(audit_id, "robot", max(0.0, (at - start).total_seconds())))
    return out, (rows[-1][0] if rows else after_audit_id)
