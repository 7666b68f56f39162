"""Numbers about the fleet of releases, read from the database (the API turns them into metrics).

Computed from stored rows rather than counted in memory, so every API replica reports the same
values whichever process (API, worker, tick) made the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from conductor.context import Context
from conductor.domain.kinds import MOVES, ROBOT, AuditKind
from conductor.read.records import EvaluationInfo, build
from conductor.read.release import EVALUATION_COLUMNS, evaluation
from conductor.store.statements import APPROVALS, AUDIT, EVALUATIONS, INBOX, RELEASES, SOURCE_POLLS

# Audit kinds that move a started release to another stage.
TRANSITION_KINDS = sorted(MOVES - {AuditKind.RELEASE_STARTED})


def transitions_by_stage(ctx: Context) -> dict[str, int]:
    """How many times releases entered each stage (robot, human and CI moves alike)."""
    with ctx.db.reading() as conn:
        q = (
            select(AUDIT.c.to_stage, func.count())
            .where(AUDIT.c.kind.in_(TRANSITION_KINDS), AUDIT.c.to_stage.is_not(None))
            .group_by(AUDIT.c.to_stage)
        )
        return {stage: n for stage, n in conn.execute(q)}


def decisions_by_outcome(ctx: Context) -> dict[str, int]:
    """Stored decisions by verdict (advance, wait, ask, hold, halt)."""
    with ctx.db.reading() as conn:
        return {v: n for v, n in conn.execute(select(EVALUATIONS.c.verdict, func.count()).group_by(EVALUATIONS.c.verdict))}


def human_answers_by_verdict(ctx: Context) -> dict[str, int]:
    """Release managers' answers by verdict (approve, reject, resume)."""
    with ctx.db.reading() as conn:
        return {v: n for v, n in conn.execute(select(APPROVALS.c.verdict, func.count()).group_by(APPROVALS.c.verdict))}


def inbox_by_status(ctx: Context) -> dict[str, int]:
    with ctx.db.reading() as conn:
        return {v: n for v, n in conn.execute(select(INBOX.c.status, func.count()).group_by(INBOX.c.status))}


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One pulled source of one track, over its releases' polls."""

    track: str
    source: str
    kind: str
    last_success_at: datetime | None
    polls: int
    errors: int
    latency_ms: float | None  # the latest poll's


def source_health(ctx: Context) -> list[SourceHealth]:
    """Per track and source: the newest success, polls, errors and the latest latency."""
    p = SOURCE_POLLS.c
    with ctx.db.reading() as conn:
        rows = conn.execute(
            select(p.track_id, p.source, p.kind, func.max(p.last_success_at), func.sum(p.polls), func.sum(p.errors),
                   func.max(p.last_latency_ms))
            .group_by(p.track_id, p.source, p.kind).order_by(p.track_id, p.source)
        ).all()  # fmt: skip
    return [SourceHealth(t, s, k, last, int(polls or 0), int(errors or 0), lat) for t, s, k, last, polls, errors, lat in rows]


def pending_approvals(ctx: Context) -> list[tuple[str, datetime]]:
    """(track, asked at) for every release waiting for a release manager."""
    with ctx.db.reading() as conn:
        q = select(RELEASES.c.track_id, EVALUATIONS.c.created_at).join(EVALUATIONS, EVALUATIONS.c.id == RELEASES.c.pending_evaluation_id)
        return [(t, at) for t, at in conn.execute(q)]


@dataclass(frozen=True)
class TransitionDelay:
    audit_id: int
    via: str  # "robot" (gates passed), "approval" (a human said yes), "event" (CI cut the branch)
    seconds: float


def transition_delays(ctx: Context, after_audit_id: int = 0, limit: int = 5000) -> tuple[list[TransitionDelay], int]:
    """Seconds from "the release could move" to the stage transition, for transitions after an audit id.

    Robot moves: from the later of (the first of the unbroken run of all-gates-pass evaluations in
    that stage visit, the end of soak/schedule) to the transition. Approved moves: from the
    question being asked to the transition (the wait for a human). Branch cuts reported by CI: 0.
    Returns the delays and the last audit id looked at (pass it back as `after_audit_id`).
    """
    out: list[TransitionDelay] = []
    with ctx.db.reading() as conn:
        rows = conn.execute(
            select(AUDIT.c.id, AUDIT.c.release_id, AUDIT.c.at, AUDIT.c.actor, AUDIT.c.from_stage, AUDIT.c.evaluation_id)
            .where(AUDIT.c.kind == AuditKind.TRANSITIONED, AUDIT.c.id > after_audit_id, AUDIT.c.evaluation_id.is_not(None))
            .order_by(AUDIT.c.id)
            .limit(limit)
        ).all()
        for audit_id, release_id, at, actor, from_stage, ev_id in rows:
            ev = evaluation(conn, ev_id)
            if ev is None:
                continue
            if ev.trigger == "branch_created":
                out.append(TransitionDelay(audit_id, "event", 0.0))
                continue
            if actor != ROBOT or ev.verdict == "ask":
                out.append(TransitionDelay(audit_id, "approval", max(0.0, (at - ev.created_at).total_seconds())))
                continue
            # The stage visit starts when the release last entered from_stage before this move.
            entered = conn.scalar(
                select(func.max(AUDIT.c.at)).where(
                    AUDIT.c.release_id == release_id,
                    AUDIT.c.to_stage == from_stage,
                    AUDIT.c.id < audit_id,
                    AUDIT.c.kind.in_(sorted(MOVES)),
                )
            )
            q = select(*EVALUATION_COLUMNS).where(
                EVALUATIONS.c.release_id == release_id, EVALUATIONS.c.stage == from_stage, EVALUATIONS.c.id <= ev_id
            )
            if entered is not None:
                q = q.where(EVALUATIONS.c.created_at >= entered)
            first_pass = ev.created_at
            for e in (build(EvaluationInfo, r) for r in conn.execute(q.order_by(EVALUATIONS.c.id.desc()).limit(200))):
                if not all(g.get("outcome") == "pass" for g in e.evidence.get("gates", [])):
                    break
                first_pass = e.created_at
            start = first_pass
            if nb := ev.evidence.get("not_before"):
                start = max(start, datetime.fromisoformat(nb))
            out.append(TransitionDelay(audit_id, "robot", max(0.0, (at - start).total_seconds())))
    return out, (rows[-1][0] if rows else after_audit_id)
