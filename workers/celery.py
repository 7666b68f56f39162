"""The Celery app: shared broker settings, reliability settings, and the beat schedule.

Reliability, in one place:
- JSON only; acks_late + reject_on_worker_lost, so a task whose worker died is delivered again;
  a delivery counter caps that (workers.base), after which the message goes to the dead-letter
  queue `conductor.dead` and the event or action is marked failed, so a poison message cannot loop.
- prefetch multiplier 1: a worker holds one message beyond the one it runs, so a killed worker
  strands at most that, and a slow task does not hold up others.
- Redis visibility timeout set explicitly (CONDUCTOR_BROKER_VISIBILITY_TIMEOUT_S, default 300 s).
- Retries with exponential backoff and jitter, never more than 30 s apart: longer waits are rows
  in the database (timers, outbox next_attempt_at), fired by tick and the relay, not Celery ETAs.
- The beat schedule runs tick and both sweepers; a periodic task that waited longer than its
  interval is dropped (expires), the next one does the same work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from celery import Celery

from conductor.dispatch.celery import celery_config
from conductor.service.ports import (
    TASK_POLL_SOURCES,
    TASK_RELAY_OUTBOX,
    TASK_SEAL_AUDIT,
    TASK_SEND_DIGESTS,
    TASK_SWEEP_EVENTS,
    TASK_SYNC_STORES,
    TASK_TICK,
)

NO_BROKER = (
    "CONDUCTOR_BROKER_URL is not set: workers and beat need a broker (e.g. redis://localhost:6379/0); "
    "without one, run `conductor serve` (embedded worker and scheduler)"
)


def require_broker() -> None:
    """SystemExit with one clear line unless a broker is configured (worker and beat start-up)."""
    from conductor.config import get_settings

    if not get_settings().broker_url:
        raise SystemExit(f"error: {NO_BROKER}")


def beat_schedule_path() -> Path:
    """Where beat keeps its schedule state (also what `python -m workers.health beat` looks at)."""
    return Path(tempfile.gettempdir()) / "conductor-celerybeat-schedule"


def build_config() -> dict[str, Any]:
    """Celery settings from CONDUCTOR_* environment variables (read on first use, not at import)."""
    from conductor.config import get_settings

    settings = get_settings()
    # Without a broker the app still loads (tools may list its tasks); worker and beat refuse to
    # start (require_broker), instead of silently trying Celery's default amqp://localhost.
    conf = celery_config(settings.broker_url or "", visibility_timeout_s=settings.broker_visibility_timeout_s)
    if not settings.broker_url:
        conf.pop("broker_url")
    conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Far below the visibility timeout, so a running task is never handed out twice.
        task_soft_time_limit=min(120, settings.broker_visibility_timeout_s // 3),
        task_time_limit=min(150, settings.broker_visibility_timeout_s // 2),
        worker_hijack_root_logger=False,
        beat_schedule_filename=str(beat_schedule_path()),
        beat_sync_every=1,
        beat_schedule={
            "tick": {"task": TASK_TICK, "schedule": settings.tick_interval_s, "options": {"expires": settings.tick_interval_s}},
            "sweep-events": {
                "task": TASK_SWEEP_EVENTS,
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s},
            },
            "relay-outbox": {
                "task": TASK_RELAY_OUTBOX,
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s},
            },
            "poll-sources": {
                "task": TASK_POLL_SOURCES,
                "schedule": settings.source_poll_tick_s,
                "options": {"expires": settings.source_poll_tick_s},
            },
            "send-digests": {"task": TASK_SEND_DIGESTS, "schedule": 300.0, "options": {"expires": 300.0}},
            "seal-audit": {
                "task": TASK_SEAL_AUDIT,
                "schedule": settings.audit_seal_interval_s,
                "options": {"expires": settings.audit_seal_interval_s},
            },
            "sync-stores": {
                "task": TASK_SYNC_STORES,
                "schedule": settings.store_sync_interval_s,
                "options": {"expires": settings.store_sync_interval_s},
            },
        },
    )
    return conf


app = Celery("conductor", include=["workers.tasks"])
app.add_defaults(build_config)  # a callable: evaluated when the configuration is first read
