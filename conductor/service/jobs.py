"""The units of background work: what a Celery task or the embedded runner runs, by task name.

workers.tasks wraps each job in a Celery task of the same name; the embedded runner
(conductor.dispatch.embedded) runs them from an in-process queue; the inline dispatcher runs them
at once. All three go through `run_job`/`JOBS`: one code path for the work, three transports.
Every job takes ids, is safe to run twice, and hands follow-up work to the dispatcher only after
its own transaction committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from conductor.actions.registry import ActionAdapters
from conductor.context import Context
from conductor.domain.errors import ConcurrentUpdate
from conductor.domain.kinds import DEFERRED, InboxStatus
from conductor.service import audit, evaluation, outbox, store_state, timers
from conductor.service.inbox import process_events
from conductor.service.ports import (
    TASK_EVALUATE,
    TASK_POLL_SOURCES,
    TASK_PROCESS_EVENTS,
    TASK_RELAY_OUTBOX,
    TASK_RUN_ACTION,
    TASK_SEAL_AUDIT,
    TASK_SEND_DIGESTS,
    TASK_SWEEP_EVENTS,
    TASK_SYNC_STORES,
    TASK_TICK,
    Dispatcher,
)
from conductor.store.statements import FAIL_PENDING_EVENT, INBOX

log = structlog.get_logger("conductor.jobs")

# Worth another try soon (a concurrent writer, a dropped or busy database connection). Anything
# else is a bug or bad data: retrying the same input cannot help, so it is recorded instead.
RETRYABLE: tuple[type[BaseException], ...] = (ConcurrentUpdate, OperationalError, InterfaceError)
SWEEP_BATCH = 100  # events per re-enqueued process_events task


@dataclass
class Runtime:
    """What the jobs need: the context, where follow-up work goes, the action adapters, the timing."""

    context: Context
    dispatcher: Dispatcher
    adapters: ActionAdapters
    sweep_grace: timedelta = timedelta(seconds=60)
    action_max_attempts: int = 8
    action_run_lease: timedelta = timedelta(minutes=5)
    poll_workers: int = 8


def _relay(rt: Runtime, **scope: Any) -> int:
    ids = outbox.claim_due(rt.context, lease=rt.sweep_grace, **scope)
    for action_id in ids:
        rt.dispatcher.submit(TASK_RUN_ACTION, action_id)
    return len(ids)


def handle_events(rt: Runtime, event_ids: list[int], wait: bool = False) -> dict[str, int]:
    """Apply stored events (one transaction, see inbox.process_events) and send the actions they
    queued. Events whose release another worker held (DEFERRED) are applied right after, by this
    job, waiting for that release: they are not sent to the back of the queue, where later events
    of the same release could overtake them. Returns how many ended in each status."""
    ids = [int(i) for i in event_ids]
    statuses = _apply(rt, ids, wait=bool(wait))
    deferred = sorted(i for i, status in statuses.items() if status == DEFERRED)
    if deferred:
        statuses.update(_apply(rt, deferred, wait=True))
    counts = dict(Counter(statuses.values()))
    log.info("event_batch_done", events=len(statuses), statuses=counts, deferred=len(deferred), waited=bool(wait))
    return counts


def _apply(rt: Runtime, ids: list[int], *, wait: bool) -> dict[int, str]:
    batch = process_events(rt.context, ids, wait=wait, lease=rt.sweep_grace)
    for action_id in batch.actions:  # committed: send them now (the relay would, after the lease)
        rt.dispatcher.submit(TASK_RUN_ACTION, action_id)
    return batch.statuses


def evaluate_release(rt: Runtime, release_id: int) -> str | None:
    """Judge a release now (pull sources, an operator's request), then send what it queued."""
    d = evaluation.evaluate(rt.context, release_id, trigger="task")
    _relay(rt, release_id=release_id)
    return d.verdict.value if d else None


def run_action(rt: Runtime, action_id: int) -> str | None:
    """One attempt at one outbox row; a final failure queues a notification, sent at once."""
    run = outbox.run_action(rt.context, rt.adapters, action_id, max_attempts=rt.action_max_attempts, run_lease=rt.action_run_lease)
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
    """Fire due timers (soak ends, branch day, approval deadlines), then relay what they queued."""
    fired = timers.tick(rt.context)
    if fired:
        _relay(rt)
    return fired


def sync_stores(rt: Runtime) -> int:
    """Read the store's state of every release with a production rollout under way; mark drift.
    Returns how many releases drifted."""
    report = store_state.sync_stores(rt.context, rt.adapters)
    if report.read or report.failed:
        log.info("stores_synced", read=report.read, drifted=report.drifted, failed=report.failed)
    if report.drifted:
        _relay(rt)  # the drift notifications
    return report.drifted


def poll_sources(rt: Runtime) -> int:
    """Poll the due pulled sources and record what they answer; returns how many polls ran."""
    from conductor.service import sources

    report = sources.poll_sources(rt.context, rt.adapters.client, workers=rt.poll_workers)
    if report.polled or report.scheduled:
        log.info("sources_polled", scheduled=report.scheduled, polled=report.polled, recorded=report.recorded,
                 unchanged=report.unchanged, errors=report.errors)  # fmt: skip
    if report.recorded:
        _relay(rt)  # what the new readings moved
    return report.polled


def send_digests(rt: Runtime) -> int:
    """The morning digest of each track whose working day has started since its last one."""
    from conductor.service import digest

    run = digest.send_due(rt.context, rt.adapters)
    if run.sent or run.failed:
        log.info("digests_sent", sent=run.sent, failed=run.failed)
    return len(run.sent)


def seal_audit(rt: Runtime) -> int:
    """Hash-chain the audit rows committed since the last seal (conductor.service.audit); returns how many."""
    return audit.seal(rt.context).rows


def sweep_events(rt: Runtime, limit: int = 1000) -> int:
    """The inbox sweeper: enqueue again every event still pending after the grace period.

    An event is re-enqueued at most once per grace period (inbox.enqueued_at), so a long backlog
    is not multiplied by every sweep.
    """
    ctx = rt.context
    now = ctx.now()
    with ctx.db.begin() as conn:
        q = (
            select(INBOX.c.id)
            .where(
                INBOX.c.status == InboxStatus.PENDING.value, func.coalesce(INBOX.c.enqueued_at, INBOX.c.received_at) <= now - rt.sweep_grace
            )
            .order_by(INBOX.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(conn.scalars(q))
        if ids:
            conn.execute(INBOX.update().where(INBOX.c.id.in_(ids)).values(enqueued_at=now))
    for i in range(0, len(ids), SWEEP_BATCH):
        rt.dispatcher.submit(TASK_PROCESS_EVENTS, ids[i : i + SWEEP_BATCH])
    if ids:
        log.warning("events_reenqueued", count=len(ids), first=ids[0], last=ids[-1])
    return len(ids)


def gave_up(rt: Runtime, task: str, args: tuple, reason: str) -> None:
    """A job failed for good (not retryable, retries exhausted, or dead-lettered): record it where people look.

    A batch of events is split (each sent on its own, so only an event that fails by itself is
    marked failed); a single event is marked failed with the reason; an action is marked failed,
    audited and announced. Other jobs are periodic and simply run again.
    """
    ctx = rt.context
    if task == TASK_PROCESS_EVENTS and args:
        ids = [int(i) for i in args[0]]
        if len(ids) > 1:
            for event_id in ids:
                rt.dispatcher.submit(TASK_PROCESS_EVENTS, [event_id])
            log.warning("event_batch_split", events=len(ids), reason=reason)
            return
        with ctx.db.begin() as conn:
            conn.execute(FAIL_PENDING_EVENT, {"event_id": ids[0], "note": reason[:2000], "processed_at": ctx.now()})
        log.error("event_gave_up", event_id=ids[0], reason=reason)
    elif task == TASK_RUN_ACTION and args:
        run = outbox.fail_action(ctx, int(args[0]), reason)
        if run.queued_follow_up and run.release_id is not None:
            _relay(rt, release_id=run.release_id)
    else:
        log.error("job_gave_up", task=task, args=list(args), reason=reason)


JOBS: dict[str, Callable[..., Any]] = {
    TASK_PROCESS_EVENTS: handle_events,
    TASK_EVALUATE: evaluate_release,
    TASK_RUN_ACTION: run_action,
    TASK_RELAY_OUTBOX: relay_outbox,
    TASK_TICK: tick,
    TASK_SWEEP_EVENTS: sweep_events,
    TASK_SYNC_STORES: sync_stores,
    TASK_POLL_SOURCES: poll_sources,
    TASK_SEND_DIGESTS: send_digests,
    TASK_SEAL_AUDIT: seal_audit,
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
