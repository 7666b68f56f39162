"""The outbox relay: actions leave only after the transition that queued them committed.

An outbox row moves pending -> sending -> done | skipped | failed. `next_attempt_at` says when
the relay should (re)send it: at creation it is due at once; while a send is queued it holds a
lease (so the periodic relay does not queue it twice); while an adapter runs it holds a longer
lease; after a failed attempt it holds the backoff. Whatever is due and not finished is sent
again, so a lost broker message or a killed worker delays an action but never drops it.

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
from sqlalchemy import or_, select, update

from conductor.actions.base import ActionFailed, ActionOutcome, ActionRequest, ReleaseRef
from conductor.actions.registry import ActionAdapters
from conductor.service.engine import ROBOT, Conductor
from conductor.store.models import OutboxAction, Release, Track

log = structlog.get_logger("conductor.outbox")

PENDING, SENDING, DONE, SKIPPED, FAILED = "pending", "sending", "done", "skipped", "failed"
FINISHED = (DONE, SKIPPED, FAILED)

BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0


def backoff(attempt: int, rng: random.Random | None = None) -> timedelta:
    """Wait before attempt `attempt + 1`: 30 s doubling per attempt, capped at 1 h, +-20 % jitter."""
    base = min(BACKOFF_BASE_S * 2 ** max(attempt - 1, 0), BACKOFF_MAX_S)
    return timedelta(seconds=base * (rng or random).uniform(0.8, 1.2))


def claim_due(
    c: Conductor, *, lease: timedelta, release_id: int | None = None, limit: int = 500
) -> list[int]:
    """Ids of rows due to be sent (new, backed off, or abandoned by a dead worker), leased for `lease`.

    Scoped to one release when given. (A job that queued actions itself hands their ids over
    directly: engine.ActionHandOff.)
    On PostgreSQL concurrent relays skip each other's rows (SKIP LOCKED); SQLite has one writer.
    """
    now = c.now()
    with c.db.transaction() as s:
        q = select(OutboxAction.id).where(
            OutboxAction.status.in_((PENDING, SENDING)), OutboxAction.next_attempt_at <= now
        )
        if release_id is not None:
            q = q.where(OutboxAction.release_id == release_id)
        q = q.order_by(OutboxAction.next_attempt_at, OutboxAction.id).limit(limit)
        if not c.db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        ids = list(s.scalars(q))
        if ids:
            # A row still "sending" past its lease lost its worker: it is pending again.
            s.execute(update(OutboxAction).where(OutboxAction.id.in_(ids)).values(status=PENDING, next_attempt_at=now + lease))
    return ids


@dataclass
class ActionRun:
    """What one run_action call did: the row's status afterwards, and whether it queued a follow-up."""

    status: str | None
    release_id: int | None = None
    queued_follow_up: bool = False


def run_action(
    c: Conductor,
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
    now = c.now()
    with c.db.transaction() as s:
        row = s.scalars(select(OutboxAction).where(OutboxAction.id == action_id).with_for_update()).one_or_none()
        if row is None:
            log.warning("action_unknown", action_id=action_id)
            return ActionRun(None)
        if row.status != PENDING and not (row.status == SENDING and row.next_attempt_at <= now):
            return ActionRun(row.status, row.release_id)
        release = s.get(Release, row.release_id)
        track = s.get(Track, release.track_id)
        row.status, row.attempts, row.next_attempt_at = SENDING, row.attempts + 1, now + run_lease
        attempt = row.attempts
        request = ActionRequest(
            action=row.action,
            params=dict(row.params or {}),
            idempotency_key=row.idempotency_key,
            attempt=attempt,
            release=ReleaseRef(release.id, release.track_id, release.version, release.stage, release.branch, release.head_sha),
            delivered=tuple((row.result or {}).get("delivered", [])),
        )
        track_id, settings, release_id = track.id, dict(track.settings or {}), release.id
    structlog.contextvars.bind_contextvars(release_id=release_id, action_id=action_id)
    error: ActionFailed | None = None
    outcome: ActionOutcome | None = None
    try:
        outcome = adapters.run(request, track_id, settings)
    except ActionFailed as exc:
        error = exc
    except Exception as exc:  # an adapter bug: record it like any failure, never lose the action
        error = ActionFailed(f"{request.action}: {exc.__class__.__name__}: {exc}")
    return _record(c, action_id, attempt, outcome, error, max_attempts=max_attempts, rng=rng)


def _record(
    c: Conductor,
    action_id: int,
    attempt: int,
    outcome: ActionOutcome | None,
    error: ActionFailed | None,
    *,
    max_attempts: int,
    rng: random.Random | None,
) -> ActionRun:
    now = c.now()
    with c.db.transaction() as s:
        row = s.scalars(select(OutboxAction).where(OutboxAction.id == action_id).with_for_update()).one()
        if row.attempts != attempt or row.status not in (SENDING, PENDING):
            # Our lease ran out and another worker took the row over: its result counts, not ours.
            log.warning("action_result_discarded", action_id=action_id, attempt=attempt, status=row.status)
            return ActionRun(row.status, row.release_id)
        release = s.get(Release, row.release_id)
        if outcome is not None:
            row.status, row.done_at = outcome.status, now
            row.result = {**outcome.result, "detail": outcome.detail}
            row.last_error = outcome.detail if outcome.status == SKIPPED else None
            if outcome.status == SKIPPED:
                c._audit(s, release, "action_skipped", ROBOT, f"{row.action} skipped: {outcome.detail}", data={"action_id": row.id, "action": row.action})
            log.info("action_" + outcome.status, action=row.action, action_id=row.id, attempt=attempt, detail=outcome.detail)
            return ActionRun(row.status, release.id)
        assert error is not None
        row.last_error = str(error)
        row.result = {**(row.result or {}), "delivered": list(error.delivered)}
        if error.retryable and attempt < max_attempts:
            row.status, row.next_attempt_at = PENDING, now + backoff(attempt, rng)
            log.warning("action_retry_scheduled", action=row.action, action_id=row.id, attempt=attempt,
                        next_attempt_at=row.next_attempt_at.isoformat(), error=str(error))
            return ActionRun(PENDING, release.id)
        row.status, row.done_at = FAILED, now
        why = f"{row.action} failed after {attempt} attempt(s): {error}"
        c._audit(s, release, "action_failed", ROBOT, why, data={"action_id": row.id, "action": row.action, "idempotency_key": row.idempotency_key})
        log.error("action_failed", action=row.action, action_id=row.id, attempts=attempt, error=str(error))
        queued = False
        if row.action != "notify":  # a failed notification is not announced by another notification
            c._outbox(s, release, f"action_failed:{row.id}", "notify",
                      {"event": "action_failed", "action": row.action, "attempts": attempt, "error": str(error), "stage": release.stage})
            queued = True
        return ActionRun(FAILED, release.id, queued)


def fail_action(c: Conductor, action_id: int, reason: str) -> ActionRun:
    """Mark an unfinished action failed for good (its task was dead-lettered); audited and announced."""
    with c.db.transaction() as s:
        row = s.scalars(select(OutboxAction).where(OutboxAction.id == action_id).with_for_update()).one_or_none()
        if row is None or row.status in FINISHED:
            return ActionRun(row.status if row else None)
        attempt = row.attempts
        row.status = SENDING
    return _record(c, action_id, attempt, None, ActionFailed(reason, retryable=False), max_attempts=0, rng=None)


def action_status(c: Conductor, action_id: int) -> dict[str, Any]:
    """One outbox row as plain data (for the CLI, the API and tests)."""
    with c.db.read() as s:
        row = s.get(OutboxAction, action_id)
        if row is None:
            return {}
        return {"id": row.id, "action": row.action, "status": row.status, "attempts": row.attempts,
                "last_error": row.last_error, "result": row.result, "idempotency_key": row.idempotency_key}


def stale_actions(c: Conductor, older_than: timedelta) -> int:
    """How many unfinished actions have waited longer than `older_than` past their due time (health)."""
    from sqlalchemy import func

    with c.db.read() as s:
        return s.scalar(
            select(func.count()).select_from(OutboxAction).where(
                or_(OutboxAction.status == PENDING, OutboxAction.status == SENDING),
                OutboxAction.next_attempt_at <= c.now() - older_than,
            )
        ) or 0


NOTIFY_FIELDS = ("slack_url", "webhook_url", "webhook_secret", "events")
TOP_FIELDS = ("actions_url", "actions_secret")


def configure_actions(c: Conductor, track_id: str, actor, changes: dict[str, Any]) -> dict[str, Any]:
    """Set where a track's notifications and actions go; a value of None or "" removes the key.

    `changes` keys: slack_url, webhook_url, webhook_secret, events (notify.*), actions_url,
    actions_secret. Returns the action settings with secrets masked. ConductorError names a bad
    field; NotFound an unknown track.
    """
    from conductor.actions.settings import parse_action_settings
    from conductor.errors import ConductorError, NotFound

    unknown = set(changes) - set(NOTIFY_FIELDS) - set(TOP_FIELDS)
    if unknown:
        raise ConductorError(f"unknown action setting(s) {', '.join(sorted(unknown))}; use {', '.join(NOTIFY_FIELDS + TOP_FIELDS)}")
    with c.db.transaction() as s:
        track = s.get(Track, track_id)
        if track is None:
            raise NotFound(f"unknown track {track_id!r}")
        settings = dict(track.settings or {})
        notify = dict(settings.get("notify") or {})
        for key, value in changes.items():
            target = notify if key in NOTIFY_FIELDS else settings
            if value is None or value == "" or value == []:
                target.pop(key, None)
            else:
                target[key] = value
        if notify:
            settings["notify"] = notify
        else:
            settings.pop("notify", None)
        cfg = parse_action_settings(track_id, settings)
        if cfg.notify.webhook_url and not cfg.notify.webhook_secret:
            raise ConductorError(f"track {track_id}: a webhook_url needs a webhook_secret (whsec_...); outgoing webhooks are always signed")
        track.settings = settings
    log.info("track_actions_configured", track=track_id, fields=sorted(changes), actor=getattr(actor, "name", str(actor)))
    shown = cfg.model_dump(exclude_none=True)
    for part in (shown, shown.get("notify", {})):
        for key in ("webhook_secret", "actions_secret"):
            if part.get(key):
                part[key] = "whsec_…"
    return shown
