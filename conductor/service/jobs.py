"""The units of background work, each one service call: what a Celery task or the embedded runner runs.

workers.tasks wraps each of these in a Celery task of the same name; conductor.runner runs them
from an in-process queue. Both go through `run_job`/`JOBS`, so there is one code path for the
work and two transports for it. Every job takes ids, is safe to run twice, and hands follow-up
work to the dispatcher only after its own transaction committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from conductor.errors import ConcurrentUpdate
from conductor.service import outbox
from conductor.service.dispatch import (
    TASK_EVALUATE,
    TASK_PROCESS_EVENT,
    TASK_PROCESS_EVENTS,
    TASK_RELAY_OUTBOX,
    TASK_RUN_ACTION,
    TASK_SWEEP_EVENTS,
    TASK_TICK,
    Dispatcher,
)
from conductor.service.engine import ActionHandOff, Conductor, queued_actions
from conductor.service.inbox import DEFERRED, FAILED, PENDING, process_event, process_events
from conductor.store.models import InboxEvent, OutboxAction

log = structlog.get_logger("conductor.jobs")

# Worth another try soon (a concurrent writer, a dropped or busy database connection). Anything
# else is a bug or bad data: retrying the same input cannot help, so it is recorded instead.
RETRYABLE: tuple[type[BaseException], ...] = (ConcurrentUpdate, OperationalError, InterfaceError)


@dataclass
class Runtime:
    """What the jobs need: the service, where follow-up work goes, the action adapters, the timing."""

    conductor: Conductor
    dispatcher: Dispatcher
    adapters: Any  # conductor.actions.ActionAdapters
    sweep_grace: timedelta = timedelta(seconds=60)
    action_max_attempts: int = 8
    action_run_lease: timedelta = timedelta(minutes=5)

    @classmethod
    def build(cls, conductor: Conductor, dispatcher: Dispatcher, *, settings=None, adapters=None) -> "Runtime":
        """A runtime from Settings (conductor.config); defaults when none are given."""
        from conductor.actions import ActionAdapters
        from conductor.actions.http import make_client

        timeout = settings.action_timeout_s if settings else 10.0
        rt = cls(conductor, dispatcher, adapters or ActionAdapters(make_client(timeout)))
        if settings is not None:
            rt.sweep_grace = timedelta(seconds=settings.sweep_grace_s)
            rt.action_max_attempts = settings.action_max_attempts
            # A running action holds its row well past the HTTP timeout before anyone assumes it died.
            rt.action_run_lease = timedelta(seconds=max(60.0, 6 * settings.action_timeout_s))
        return rt


def _relay(rt: Runtime, **scope: Any) -> int:
    ids = outbox.claim_due(rt.conductor, lease=rt.sweep_grace, **scope)
    for action_id in ids:
        rt.dispatcher.submit(TASK_RUN_ACTION, action_id)
    return len(ids)


def _send_actions(rt: Runtime, handoff: ActionHandOff) -> None:
    for action_id in handoff.ids:
        rt.dispatcher.submit(TASK_RUN_ACTION, action_id)


def handle_event(rt: Runtime, event_id: int) -> str:
    """Apply a stored event (one transaction), then send the actions it queued. Returns the event status."""
    handoff = ActionHandOff(rt.sweep_grace)
    token = queued_actions.set(handoff)
    try:
        return process_event(rt.conductor, event_id)
    finally:
        queued_actions.reset(token)
        _send_actions(rt, handoff)  # what committed is sent even if a later step raised; most events queue nothing


def handle_events(rt: Runtime, event_ids: list[int], wait: bool = False) -> dict[str, int]:
    """Apply a batch of stored events (one transaction, see inbox.process_events) and send the
    actions they queued. Events whose release another worker held (DEFERRED) are applied right
    after, by this job, waiting for that release: they are not sent to the back of the queue,
    where later events of the same release could overtake them. Returns how many ended in each status."""
    ids = [int(i) for i in event_ids]
    statuses = _apply_events(rt, ids, wait=bool(wait))
    deferred = sorted(i for i, status in statuses.items() if status == DEFERRED)
    if deferred:
        statuses.update(_apply_events(rt, deferred, wait=True))
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    log.info("event_batch_done", events=len(statuses), statuses=counts, deferred=len(deferred), waited=bool(wait))
    return counts


def _apply_events(rt: Runtime, ids: list[int], *, wait: bool) -> dict[int, str]:
    handoff = ActionHandOff(rt.sweep_grace)
    token = queued_actions.set(handoff)
    try:
        return process_events(rt.conductor, ids, wait=wait)
    finally:
        queued_actions.reset(token)
        _send_actions(rt, handoff)  # ids of rolled-back steps were dropped; what committed goes out


def evaluate_release(rt: Runtime, release_id: int) -> str | None:
    """Judge a release now (pull sources, an operator's request), then send what it queued."""
    d = rt.conductor.evaluate(release_id, trigger="task")
    _relay(rt, release_id=release_id)
    return d.verdict.value if d else None


def run_action(rt: Runtime, action_id: int) -> str | None:
    """One attempt at one outbox row; a final failure queues a notification, sent at once."""
    run = outbox.run_action(rt.conductor, rt.adapters, action_id, max_attempts=rt.action_max_attempts, run_lease=rt.action_run_lease)
    if run.queued_follow_up and run.release_id is not None:
        _relay(rt, release_id=run.release_id)
    return run.status


def relay_outbox(rt: Runtime) -> int:
    """The outbox sweeper: send every action that is due (new, backed off, or lost) and not yet sent."""
    n = _relay(rt)
    if n:
        log.info("outbox_relayed", actions=n)
    return n


def tick(rt: Runtime) -> int:
    """Fire due timers (soak ends, branch day, approval deadlines) through the event path, then relay."""
    fired = rt.conductor.tick()
    if fired:
        _relay(rt)
    return fired


SWEEP_BATCH = 100  # events per re-enqueued process_events task


def sweep_events(rt: Runtime, limit: int = 1000) -> int:
    """The inbox sweeper: enqueue again every event still pending after the grace period.

    An event is re-enqueued at most once per grace period (inbox.enqueued_at), so a long
    backlog is not multiplied by every sweep.
    """
    c = rt.conductor
    now = c.now()
    cutoff = now - rt.sweep_grace
    with c.db.transaction() as s:
        q = (
            select(InboxEvent.id)
            .where(InboxEvent.status == PENDING, func.coalesce(InboxEvent.enqueued_at, InboxEvent.received_at) <= cutoff)
            .order_by(InboxEvent.id)
            .limit(limit)
        )
        if not c.db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        ids = list(s.scalars(q))
        if ids:
            s.execute(update(InboxEvent).where(InboxEvent.id.in_(ids)).values(enqueued_at=now))
    for i in range(0, len(ids), SWEEP_BATCH):
        rt.dispatcher.submit(TASK_PROCESS_EVENTS, ids[i:i + SWEEP_BATCH])
    if ids:
        log.warning("events_reenqueued", count=len(ids), first=ids[0], last=ids[-1])
    return len(ids)


def gave_up(rt: Runtime, task: str, args: tuple, reason: str) -> None:
    """A job failed for good (not retryable, retries exhausted, or dead-lettered): record it where people look.

    An event is marked failed with the reason; an action is marked failed, audited and announced.
    Other jobs are periodic and simply run again.
    """
    c = rt.conductor
    if task == TASK_PROCESS_EVENTS and args:
        ids = [int(i) for i in args[0]]
        if len(ids) > 1:
            # Do not fail a whole batch for what may be one poison event: send each on its own,
            # so only an event that fails by itself is marked failed.
            for event_id in ids:
                rt.dispatcher.submit(TASK_PROCESS_EVENT, event_id)
            log.warning("event_batch_split", events=len(ids), reason=reason)
            return
        task, args = TASK_PROCESS_EVENT, tuple(ids)
    if task == TASK_PROCESS_EVENT and args:
        with c.db.transaction() as s:
            row = s.scalars(select(InboxEvent).where(InboxEvent.id == int(args[0])).with_for_update()).one_or_none()
            if row is not None and row.status == PENDING:
                row.status, row.note, row.processed_at = FAILED, reason[:2000], c.now()
        log.error("event_gave_up", event_id=args[0], reason=reason)
    elif task == TASK_RUN_ACTION and args:
        run = outbox.fail_action(c, int(args[0]), reason)
        if run.queued_follow_up and run.release_id is not None:
            _relay(rt, release_id=run.release_id)
    else:
        log.error("job_gave_up", task=task, args=list(args), reason=reason)


JOBS: dict[str, Callable[..., Any]] = {
    TASK_PROCESS_EVENT: handle_event,
    TASK_PROCESS_EVENTS: handle_events,
    TASK_EVALUATE: evaluate_release,
    TASK_RUN_ACTION: run_action,
    TASK_RELAY_OUTBOX: relay_outbox,
    TASK_TICK: tick,
    TASK_SWEEP_EVENTS: sweep_events,
}


def run_job(rt: Runtime, task: str, *args: Any) -> Any:
    """Run the job registered under `task` (a KeyError names an unknown task).

    The job's log context (event_id, release_id, ...) is dropped afterwards, as Celery's
    task_postrun does for a worker, so it never leaks into the caller's log lines.
    """
    saved = structlog.contextvars.get_contextvars()
    try:
        return JOBS[task](rt, *args)
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved)


def pending_counts(c: Conductor) -> dict[str, int]:
    """Events and actions not finished yet (for health checks and benchmarks)."""
    with c.db.read() as s:
        events = s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.status == PENDING)) or 0
        actions = s.scalar(
            select(func.count()).select_from(OutboxAction).where(OutboxAction.status.in_((outbox.PENDING, outbox.SENDING)))
        ) or 0
    return {"events": events, "actions": actions}
