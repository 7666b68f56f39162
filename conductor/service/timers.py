"""Use case for time: fire the timers that are due (soak ends, branch day, approval deadlines).

Every long wait is a timer row with a due time; `tick` (beat, or the embedded scheduler) fires
the due ones. One tick is one transaction for all of them: the releases with due timers come
from a partial index, they are locked in one statement, their due timers read again under the
lock (what another tick fired meanwhile is gone) and their latest signals in one more; each timer
is fired on its release's step, and everything is written with the commit. A release another
worker holds is skipped (its timers stay due for the next tick); if one timer cannot be fired
(bad data), the tick is retried one release per transaction so only that release's timers wait.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import Connection

from conductor.context import Context
from conductor.domain.errors import ConcurrentUpdate, ConductorError
from conductor.domain.kinds import ROBOT, AuditKind, TimerKind
from conductor.service.evaluation import judge
from conductor.service.step import ReleaseStep, preload_signals
from conductor.store.releases import lock_releases, records
from conductor.store.statements import DUE_TIMERS, DUE_TIMERS_OF, EVALUATIONS, FIRE_TIMERS
from conductor.store.writes import Writes

log = structlog.get_logger("conductor.service")

TICK_LIMIT = 500


def tick(ctx: Context, limit: int = TICK_LIMIT) -> int:
    """Fire every timer that is due; returns how many fired."""
    try:
        return _fire_due(ctx, limit, release_ids=None)
    except ConcurrentUpdate:
        raise
    except ConductorError as exc:
        log.warning("timer_batch_split", error=str(exc))
    fired = 0
    for release_id in _due_release_ids(ctx, limit):
        try:
            fired += _fire_due(ctx, limit, release_ids=[release_id])
        except ConductorError as exc:
            log.error("timer_failed", release_id=release_id, error=str(exc))
    return fired


def _due_release_ids(ctx: Context, limit: int) -> list[int]:
    with ctx.db.reading() as conn:
        return sorted({row.release_id for row in conn.execute(DUE_TIMERS, {"now": ctx.now(), "limit": limit})})


def _fire_due(ctx: Context, limit: int, *, release_ids: list[int] | None) -> int:
    now = ctx.now()
    with ctx.db.begin() as conn:
        candidates = sorted({row.release_id for row in conn.execute(DUE_TIMERS, {"now": now, "limit": limit})})
        if release_ids is not None:
            candidates = [r for r in candidates if r in release_ids]
        if not candidates:
            return 0
        skip = not ctx.db.is_sqlite  # a release another worker holds keeps its timers for the next tick
        writes = Writes(conn)
        steps = {
            release.id: ReleaseStep(conn, release, ctx.pinned(conn, release.definition_hash), ctx.clock, writes=writes)
            for release in records(conn, lock_releases("ids", skip_locked=skip), {"ids": candidates}, locked=True)
        }
        due = conn.execute(DUE_TIMERS_OF, {"release_ids": list(steps), "now": now}).all() if steps else []
        if due:
            writes.add(FIRE_TIMERS, {"timer_ids": [t.id for t in due], "now": now})
        preload_signals(conn, [steps[t.release_id] for t in due])
        fired = sum(fire(steps[t.release_id], t) for t in due)
        for step in steps.values():
            step.save()
        writes.commit()
        return fired


def fire(step: ReleaseStep, timer: Any) -> int:
    """Fire one due timer on its (locked) release's step; 0 if the stage it waited in was left in
    this same tick (its timers are retired, never run)."""
    r = step.release
    if any(timer.key.startswith(f"{r.id}:{stage}:") for stage in step.left):
        return 0
    log.info("timer_fired", release_id=r.id, timer=timer.kind, due_at=timer.due_at.isoformat())
    if timer.kind == TimerKind.APPROVAL_DEADLINE:
        _deadline_passed(step, timer.payload or {})
    else:
        judge(step, trigger=f"timer:{timer.kind}")
    return 1


def _deadline_passed(step: ReleaseStep, asked: dict[str, Any]) -> None:
    """Nobody answered the question in time (counted from when it was first asked, however often
    fresher evidence refreshed its card): escalate, then hold (or cancel, as the pipeline says)."""
    r, pipeline = step.release, step.pipeline
    if r.pending_evaluation_id is None:
        return  # answered or withdrawn meanwhile
    pending = step.last_evaluation()  # a pending decision is the release's last evaluation
    same = pending is not None and pending.fingerprint == asked.get("fingerprint") if "fingerprint" in asked else None
    if not (same if same is not None else r.pending_evaluation_id == asked.get("evaluation_id")):
        return  # another question is open now (it has a deadline of its own)
    evaluation_id = r.pending_evaluation_id
    policy = pipeline.approval.on_timeout
    step.audit(AuditKind.APPROVAL_ESCALATED, ROBOT, f"no answer within {pipeline.approval.deadline}; {policy}", evaluation_id=evaluation_id)
    step.queue_action(f"escalate:{evaluation_id}", "notify", {"event": "approval_escalated", "evaluation_id": evaluation_id})
    r.pending_evaluation_id = None
    r.rejected_fingerprint = _fingerprint(step.conn, evaluation_id)
    if policy == "cancel":
        before, after = step.move("cancel")
        step.audit(AuditKind.CANCELLED, ROBOT, "approval deadline passed", from_stage=before, to_stage=after)
    else:
        step.audit(AuditKind.HELD, ROBOT, "approval deadline passed", from_stage=r.stage, evaluation_id=evaluation_id)


def _fingerprint(conn: Connection, evaluation_id: int) -> str | None:
    return conn.execute(EVALUATIONS.select().with_only_columns(EVALUATIONS.c.fingerprint).where(EVALUATIONS.c.id == evaluation_id)).scalar()
