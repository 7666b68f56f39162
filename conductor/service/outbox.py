"""The outbox relay: actions leave only after the transition that queued them committed.

An outbox row moves pending -> sending -> done | skipped | failed. `next_attempt_at` says when
the relay should (re)send it: at creation it is due at once (or leased to the job that queued
it); while a send is queued it holds a lease (so the periodic relay does not queue it twice);
while an adapter runs it holds a longer lease; after a failed attempt it holds the backoff.
Whatever is due and not finished is sent again, so a lost broker message or a killed worker
delays an action but never drops it.

A failed attempt is retried with exponential backoff and jitter up to `max_attempts`; then the
row is marked failed, an `action_failed` audit entry is written and a notification is queued.
Nothing configured to perform an action marks it skipped, with the reason, never done.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, select

from conductor.actions.base import ActionFailed, ActionOutcome, ActionRequest, ReleaseRef
from conductor.actions.registry import ActionAdapters
from conductor.context import Context
from conductor.domain.actions import STORE_ACTIONS
from conductor.domain.kinds import FINISHED_ACTIONS, ROBOT, ActionStatus, AuditKind
from conductor.service import store_state
from conductor.service.step import ReleaseStep, lock_one
from conductor.store.statements import OUTBOX, RELEASES, TRACKS

log = structlog.get_logger("conductor.outbox")

BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0
# How often a store action that waits behind another release's (of the same app) looks again.
STORE_QUEUE_RECHECK = timedelta(seconds=30)


def backoff(attempt: int, rng: random.Random | None = None) -> timedelta:
    """Wait before attempt `attempt + 1`: 30 s doubling per attempt, capped at 1 h, +-20 % jitter."""
    base = min(BACKOFF_BASE_S * 2 ** max(attempt - 1, 0), BACKOFF_MAX_S)
    return timedelta(seconds=base * (rng or random).uniform(0.8, 1.2))


def claim_due(ctx: Context, *, lease: timedelta, release_id: int | None = None, limit: int = 500) -> list[int]:
    """Ids of rows due to be sent (new, backed off, or abandoned by a dead worker), leased for `lease`.

    Scoped to one release when given. (A job that queued actions itself hands their ids over
    directly: ReleaseStep.lease.) On PostgreSQL concurrent relays skip each other's rows (SKIP
    LOCKED); SQLite has one writer."""
    now = ctx.now()
    with ctx.db.begin() as conn:
        q = select(OUTBOX.c.id).where(
            OUTBOX.c.status.in_((ActionStatus.PENDING.value, ActionStatus.SENDING.value)), OUTBOX.c.next_attempt_at <= now
        )
        if release_id is not None:
            q = q.where(OUTBOX.c.release_id == release_id)
        q = q.order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id).limit(limit).with_for_update(skip_locked=True)
        ids = list(conn.scalars(q))
        if ids:
            # A row still "sending" past its lease lost its worker: it is pending again.
            conn.execute(OUTBOX.update().where(OUTBOX.c.id.in_(ids)).values(status=ActionStatus.PENDING.value, next_attempt_at=now + lease))
    return ids


@dataclass
class ActionRun:
    """What one run_action call did: the row's status afterwards, and whether it queued a follow-up."""

    status: str | None
    release_id: int | None = None
    queued_follow_up: bool = False


def _locked_row(conn: Connection, action_id: int):  # noqa: ANN202 (a Row)
    return conn.execute(select(OUTBOX).where(OUTBOX.c.id == action_id).with_for_update()).one_or_none()


def run_action(
    ctx: Context,
    adapters: ActionAdapters,
    action_id: int,
    *,
    max_attempts: int,
    run_lease: timedelta,
    rng: random.Random | None = None,
) -> ActionRun:
    """One attempt at one outbox row: claim it, call its adapter outside any transaction, record the result.

    A row that is finished, or being run by another worker, is left alone (a duplicate message).
    """
    now = ctx.now()
    with ctx.db.begin() as conn:
        row = _locked_row(conn, action_id)
        if row is None:
            log.warning("action_unknown", action_id=action_id)
            return ActionRun(None)
        if row.status != ActionStatus.PENDING and not (row.status == ActionStatus.SENDING and row.next_attempt_at <= now):
            return ActionRun(row.status, row.release_id)
        newer = _newer_store_action(conn, row)
        release = lock_one(conn, row.release_id, lock=False)  # read only: the action is about it
        ahead = _store_action_ahead(conn, row, release.track_id) if newer is None else None
        if ahead is not None:
            return _wait_behind(conn, row, ahead, now)
        settings = conn.execute(select(TRACKS.c.settings).where(TRACKS.c.id == release.track_id)).scalar()
        attempt = row.attempts + 1
        conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.id == action_id)
            .values(status=ActionStatus.SENDING.value, attempts=attempt, next_attempt_at=now + run_lease)
        )
        request = ActionRequest(
            action=row.action,
            params=dict(row.params or {}),
            idempotency_key=row.idempotency_key,
            attempt=attempt,
            release=ReleaseRef(
                release.id, release.track_id, release.version, release.stage, release.branch, release.head_sha, release.build
            ),
            delivered=tuple((row.result or {}).get("delivered", [])),
        )
    structlog.contextvars.bind_contextvars(release_id=release.id, action_id=action_id)
    error: ActionFailed | None = None
    outcome: ActionOutcome | None = None
    if newer is not None:
        detail = f"superseded by {newer.action} (action {newer.id}), queued after it: the newest store action says what the store should be"
        return _record(ctx, action_id, attempt, ActionOutcome("skipped", detail), None, max_attempts=max_attempts, rng=rng)
    try:
        outcome = adapters.run(request, release.track_id, dict(settings or {}))
    except ActionFailed as exc:
        error = exc
    except Exception as exc:  # an adapter bug: record it like any failure, never lose the action
        error = ActionFailed(f"{request.action}: {exc.__class__.__name__}: {exc}")
    return _record(ctx, action_id, attempt, outcome, error, max_attempts=max_attempts, rng=rng)


def _newer_store_action(conn: Connection, row: Any) -> Any:
    """For a production store action (rollout, halt, resume), the release's newest store action
    queued after it, if any. Each sets the whole production state, so once a newer one exists
    this one is stale: a set_rollout delayed by a store outage and retried after the halt that
    followed it would roll the halted build out again (and a late submit would lower a rollout
    already raised). Skipped, with the reason, instead of performed."""
    if row.action not in STORE_ACTIONS:
        return None
    return conn.execute(
        select(OUTBOX.c.id, OUTBOX.c.action)
        .where(OUTBOX.c.release_id == row.release_id, OUTBOX.c.action.in_(STORE_ACTIONS), OUTBOX.c.id > row.id)
        .order_by(OUTBOX.c.id.desc())
        .limit(1)
    ).first()


def _store_action_ahead(conn: Connection, row: Any, track_id: str) -> Any:
    """An unfinished production store action of another release of the same app (track) queued
    before this one, if any: one app's store actions go in the order they were queued, so a
    rollout retried through a store outage cannot land after the next release's submit and
    replace it on the production track. A halt never waits: it goes at once."""
    if row.action not in STORE_ACTIONS or row.action == "halt_rollout":
        return None
    return conn.execute(
        select(OUTBOX.c.id, OUTBOX.c.action, OUTBOX.c.next_attempt_at, RELEASES.c.track_id, RELEASES.c.version)
        .join(RELEASES, RELEASES.c.id == OUTBOX.c.release_id)
        .where(RELEASES.c.track_id == track_id, OUTBOX.c.release_id != row.release_id, OUTBOX.c.id < row.id,
               OUTBOX.c.action.in_(STORE_ACTIONS), OUTBOX.c.status.in_((ActionStatus.PENDING.value, ActionStatus.SENDING.value)))
        .order_by(OUTBOX.c.id)
        .limit(1)
    ).first()  # fmt: skip


def _wait_behind(conn: Connection, row: Any, ahead: Any, now: Any) -> ActionRun:
    """Leave the row pending (no attempt spent) until the action ahead of it is finished."""
    due = max(now + STORE_QUEUE_RECHECK, ahead.next_attempt_at or now)
    why = f"waits for {ahead.action} of {ahead.track_id}/{ahead.version} (action {ahead.id}): one app's store actions go in order"
    conn.execute(
        OUTBOX.update().where(OUTBOX.c.id == row.id).values(status=ActionStatus.PENDING.value, next_attempt_at=due, last_error=why)
    )
    log.info("action_waits", action_id=row.id, action=row.action, release_id=row.release_id, behind=ahead.id, until=due.isoformat())
    return ActionRun(ActionStatus.PENDING.value, row.release_id)


def _record(
    ctx: Context,
    action_id: int,
    attempt: int,
    outcome: ActionOutcome | None,
    error: ActionFailed | None,
    *,
    max_attempts: int,
    rng: random.Random | None,
) -> ActionRun:
    with ctx.db.begin() as conn:
        row = _locked_row(conn, action_id)
        assert row is not None
        if row.attempts != attempt or row.status not in (ActionStatus.SENDING, ActionStatus.PENDING):
            # Our lease ran out and another worker took the row over: its result counts, not ours.
            log.warning("action_result_discarded", action_id=action_id, attempt=attempt, status=row.status)
            return ActionRun(row.status, row.release_id)
        release = lock_one(conn, row.release_id)
        step = ReleaseStep(conn, release, ctx.pinned(conn, release.definition_hash), ctx.clock)
        run = _outcome(step, row, attempt, outcome, error, max_attempts=max_attempts, rng=rng)
        step.save()  # a store action may have told the release its build
        step.buffer.commit()
        return run


def _outcome(
    step: ReleaseStep,
    row: Any,
    attempt: int,
    outcome: ActionOutcome | None,
    error: ActionFailed | None,
    *,
    max_attempts: int,
    rng: random.Random | None,
) -> ActionRun:
    """Write what one attempt came to: done or skipped, backed off for another try, or failed for good."""
    now = step.now()
    release = step.release
    update = OUTBOX.update().where(OUTBOX.c.id == row.id)
    if outcome is not None:
        status = ActionStatus(outcome.status)
        step.buffer.add(
            update.values(
                status=status.value,
                done_at=now,
                result={**outcome.result, "detail": outcome.detail},
                last_error=outcome.detail if status is ActionStatus.SKIPPED else None,
            ),
            {},
        )
        if status is ActionStatus.DONE and "store" in outcome.result:
            store_state.record_action(step, row.action, outcome.result)
        if status is ActionStatus.SKIPPED:
            step.audit(
                AuditKind.ACTION_SKIPPED, ROBOT, f"{row.action} skipped: {outcome.detail}", data={"action_id": row.id, "action": row.action}
            )
        log.info("action_" + status.value, action=row.action, action_id=row.id, attempt=attempt, detail=outcome.detail)
        return ActionRun(status.value, release.id)
    assert error is not None
    result = {**(row.result or {}), "delivered": list(error.delivered)}
    # A halt is retried until the store confirms it: stopping a bad rollout has no attempt budget.
    if error.retryable and (attempt < max_attempts or row.action == "halt_rollout"):
        # The other side's Retry-After, when it sent one, is a floor under our own backoff.
        next_at = now + max(backoff(attempt, rng), timedelta(seconds=error.retry_after or 0))
        step.buffer.add(update.values(status=ActionStatus.PENDING.value, next_attempt_at=next_at, last_error=str(error), result=result), {})
        log.warning(
            "action_retry_scheduled",
            action=row.action,
            action_id=row.id,
            attempt=attempt,
            next_attempt_at=next_at.isoformat(),
            error=str(error),
        )
        return ActionRun(ActionStatus.PENDING.value, release.id)
    step.buffer.add(update.values(status=ActionStatus.FAILED.value, done_at=now, last_error=str(error), result=result), {})
    why = f"{row.action} failed after {attempt} attempt(s): {error}"
    step.audit(
        AuditKind.ACTION_FAILED, ROBOT, why, data={"action_id": row.id, "action": row.action, "idempotency_key": row.idempotency_key}
    )
    log.error("action_failed", action=row.action, action_id=row.id, attempts=attempt, error=str(error))
    queued = False
    if row.action != "notify":  # a failed notification is not announced by another notification
        step.queue_action(
            f"action_failed:{row.id}",
            "notify",
            {"event": "action_failed", "action": row.action, "attempts": attempt, "error": str(error), "stage": release.stage},
        )
        queued = True
    return ActionRun(ActionStatus.FAILED.value, release.id, queued)


def fail_action(ctx: Context, action_id: int, reason: str) -> ActionRun:
    """Mark an unfinished action failed for good (its task was dead-lettered); audited and announced."""
    with ctx.db.begin() as conn:
        row = _locked_row(conn, action_id)
        if row is None or row.status in FINISHED_ACTIONS:
            return ActionRun(row.status if row else None)
        attempt = row.attempts
        conn.execute(OUTBOX.update().where(OUTBOX.c.id == action_id).values(status=ActionStatus.SENDING.value))
    return _record(ctx, action_id, attempt, None, ActionFailed(reason, retryable=False), max_attempts=0, rng=None)
