"""The Celery tasks: each takes ids and makes one conductor.service.jobs call (see there for what it does)."""

from __future__ import annotations

from conductor.service import jobs
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
)
from workers.base import ConductorTask, PeriodicTask
from workers.celery import app
from workers.runtime import runtime


@app.task(name=TASK_PROCESS_EVENTS, base=ConductorTask)
def process_events(event_ids: list[int], wait: bool = False) -> dict[str, int]:
    """Apply stored events (one or a batch) in one transaction, then send the actions they queued."""
    return jobs.handle_events(runtime(), event_ids, wait)


@app.task(name=TASK_EVALUATE, base=ConductorTask)
def evaluate_release(release_id: int) -> str | None:
    """Evaluate one release's gates now."""
    return jobs.evaluate_release(runtime(), release_id)


@app.task(name=TASK_RUN_ACTION, base=ConductorTask)
def run_action(action_id: int) -> str | None:
    """One attempt at one outbox action (its own backoff lives in the outbox row)."""
    return jobs.run_action(runtime(), action_id)


@app.task(name=TASK_RELAY_OUTBOX, base=PeriodicTask)
def relay_outbox() -> int:
    """Send every due outbox action (new, backed off, or lost by the broker)."""
    return jobs.relay_outbox(runtime())


@app.task(name=TASK_TICK, base=PeriodicTask)
def tick() -> int:
    """Fire due timers: soak ends, branch day, approval deadlines."""
    return jobs.tick(runtime())


@app.task(name=TASK_POLL_SOURCES, base=PeriodicTask)
def poll_sources() -> int:
    """Poll the due pulled sources (Sentry, Play vitals, trackers, Prometheus, JSON) and record them."""
    return jobs.poll_sources(runtime())


@app.task(name=TASK_SEND_DIGESTS, base=PeriodicTask)
def send_digests() -> int:
    """Each track's morning digest, at the start of its working day."""
    return jobs.send_digests(runtime())


@app.task(name=TASK_SYNC_STORES, base=PeriodicTask)
def sync_stores() -> int:
    """Read the stores' rollout states; mark drift where someone changed one in the console."""
    return jobs.sync_stores(runtime())


@app.task(name=TASK_SEAL_AUDIT, base=PeriodicTask)
def seal_audit() -> int:
    """Hash-chain the audit rows committed since the last seal."""
    return jobs.seal_audit(runtime())


@app.task(name=TASK_SWEEP_EVENTS, base=PeriodicTask)
def sweep_events() -> int:
    """Enqueue again the events still pending after the grace period."""
    return jobs.sweep_events(runtime())
