"""Use case for time: fire the timers that are due (soak ends, branch day, approval deadlines).

Every long wait is a timer row with a due time; `tick` (beat, or the embedded scheduler) fires
the due ones. One tick is one transaction for all of them: the due rows come from a partial
index, their releases are locked in one statement, and each timer is fired on its release's
step. A release another worker holds is skipped (its timers stay due for the next tick); if one
timer cannot be fired (bad data), the batch is retried one release per transaction so only that
release's timers wait.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import structlog
from sqlalchemy import Connection

from conductor.context import Context
from conductor.domain.errors import ConcurrentUpdate, ConductorError
from conductor.domain.kinds import AuditKind, TimerKind
from conductor.service.evaluation import judge
from conductor.service.step import ROBOT, ReleaseStep
from conductor.store.releases import RELEASES, lock_releases, records
from conductor.store.statements import DUE_TIMERS, EVALUATIONS, FIRE_TIMER

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
        due = conn.execute(DUE_TIMERS, {"now": now, "limit": limit}).all()
        by_release: dict[int, list[Any]] = defaultdict(list)
        for timer in due:
            if release_ids is None or timer.release_id in release_ids:
                by_release[timer.release_id].append(timer)
        if not by_release:
            return 0
        skip = not ctx.db.is_sqlite  # a release another worker holds keeps its timers for the next tick
        fired = 0
        for release in records(conn, lock_releases(RELEASES.c.id.in_(sorted(by_release)), skip_locked=skip)):
            step = ReleaseStep(conn, release, ctx.pinned(conn, release.definition_hash), ctx.clock)
            for timer in by_release[release.id]:
                fired += fire(step, timer)
            step.save()
        return fired


def fire(step: ReleaseStep, timer: Any) -> int:
    """Fire one due timer on its release's step; 0 if another tick fired it first."""
    if step.conn.execute(FIRE_TIMER, {"timer_id": timer.id, "now": step.now()}).rowcount != 1:
        return 0
    r = step.release
    log.info("timer_fired", release_id=r.id, timer=timer.kind, due_at=timer.due_at.isoformat())
    if timer.kind == TimerKind.APPROVAL_DEADLINE:
        _deadline_passed(step, (timer.payload or {}).get("evaluation_id"))
    else:
        judge(step, trigger=f"timer:{timer.kind}")
    return 1


def _deadline_passed(step: ReleaseStep, evaluation_id: int | None) -> None:
    """Nobody answered the question in time: escalate, then hold (or cancel, as the pipeline says)."""
    r, pipeline = step.release, step.pipeline
    if r.pending_evaluation_id != evaluation_id or evaluation_id is None:
        return  # answered, withdrawn or superseded meanwhile
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
