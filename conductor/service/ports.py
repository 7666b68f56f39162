"""How the service hands work to whatever runs it: task names and the Dispatcher interface.

Work is a task name and ids (conductor.service.jobs says what each task does). Three transports
implement the interface, in conductor.dispatch: Celery (distributed mode; the API sends tasks by
name, so it never loads the worker code), the embedded runner (an in-process queue), and inline
(tests and scripts: run at once).

Every dispatcher is called only after the rows it names are committed, and must not raise for a
broker outage: the rows are durable and the sweepers enqueue them again.
"""

from __future__ import annotations

from typing import Any, Protocol

TASK_PROCESS_EVENTS = "workers.tasks.process_events"
TASK_EVALUATE = "workers.tasks.evaluate_release"
TASK_RELAY_OUTBOX = "workers.tasks.relay_outbox"
TASK_RUN_ACTION = "workers.tasks.run_action"
TASK_TICK = "workers.tasks.tick"
TASK_SWEEP_EVENTS = "workers.tasks.sweep_events"
TASK_SYNC_STORES = "workers.tasks.sync_stores"
TASK_POLL_SOURCES = "workers.tasks.poll_sources"
TASK_SEND_DIGESTS = "workers.tasks.send_digests"
TASK_SEAL_AUDIT = "workers.tasks.seal_audit"
PERIODIC_TASKS = (TASK_TICK, TASK_SWEEP_EVENTS, TASK_RELAY_OUTBOX, TASK_SYNC_STORES, TASK_POLL_SOURCES, TASK_SEND_DIGESTS, TASK_SEAL_AUDIT)


class Dispatcher(Protocol):
    def submit(self, task: str, *args: Any) -> Any:
        """Run `task` with `args` (ids) soon; never raises for an unreachable broker."""

    def event_stored(self, event_id: int) -> None:
        """Called after the inbox row committed: the event goes out as a process_events task."""
