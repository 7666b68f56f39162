"""How the service hands work to whatever runs it: one interface, two implementations.

conductor never imports workers: the Celery dispatcher sends tasks by name, so the API can
enqueue work without loading the worker code, and the embedded runner calls the service inline.
"""

from __future__ import annotations

from typing import Protocol

import structlog

log = structlog.get_logger("conductor.dispatch")

TASK_PROCESS_EVENT = "workers.tasks.process_event"
TASK_EVALUATE = "workers.tasks.evaluate_release"
TASK_RELAY_OUTBOX = "workers.tasks.relay_outbox"


class Dispatcher(Protocol):
    def event_stored(self, event_id: int) -> None:
        """Called after the inbox row committed; must not raise for a broker outage (sweepers recover)."""


class InlineDispatcher:
    """Embedded mode and tests: process the event right away in this process."""

    def __init__(self, conductor):
        self.conductor = conductor

    def event_stored(self, event_id: int) -> None:
        from conductor.service.inbox import process_event

        process_event(self.conductor, event_id)


class CeleryDispatcher:
    """Distributed mode: enqueue by task name on the broker; a lost message is re-sent by the sweeper."""

    def __init__(self, broker_url: str):
        from celery import Celery

        self.app = Celery("conductor-dispatch", broker=broker_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=False)

    def event_stored(self, event_id: int) -> None:
        try:
            self.app.send_task(TASK_PROCESS_EVENT, args=[event_id])
        except Exception as exc:  # the row is durable; the pending-event sweeper will enqueue it again
            log.warning("enqueue_failed", event_id=event_id, error=str(exc))
