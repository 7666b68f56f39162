"""Celery signal handlers: structlog context per task, per-process state after fork, logging setup."""

from __future__ import annotations

import structlog
from celery.signals import beat_init, celeryd_init, task_postrun, task_prerun, worker_init, worker_process_init

from conductor.service.ports import TASK_EVALUATE, TASK_PROCESS_EVENTS, TASK_RUN_ACTION

# Which id a task's first argument is, so every log line of the task names it.
_ARG_NAMES = {TASK_PROCESS_EVENTS: "event_ids", TASK_EVALUATE: "release_id", TASK_RUN_ACTION: "action_id"}


@task_prerun.connect
def bind_task_context(task_id=None, task=None, args=None, **_):
    structlog.contextvars.clear_contextvars()
    ctx = {"task_id": task_id, "task": getattr(task, "name", None)}
    key = _ARG_NAMES.get(ctx["task"])
    if key and args:
        ctx[key] = args[0]
    structlog.contextvars.bind_contextvars(**ctx)


@task_postrun.connect
def clear_task_context(**_):
    structlog.contextvars.clear_contextvars()


@worker_process_init.connect
def fresh_process_state(**_):
    from workers.runtime import forget

    forget()  # a forked child builds its own engine and clients


@worker_init.connect
@beat_init.connect
def setup_logging(**_):
    from conductor.config import get_settings
    from conductor.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


@celeryd_init.connect
@beat_init.connect
def refuse_without_broker(**_):
    from workers.celery import require_broker

    require_broker()
