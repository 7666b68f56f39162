"""The inline dispatcher: every job runs at once in the caller's thread (tests, scripts)."""

from __future__ import annotations

from typing import Any

from conductor.service.jobs import Runtime, run_job
from conductor.service.ports import TASK_PROCESS_EVENTS


class InlineDispatcher:
    """Runs each job at once, through the same job functions the workers run."""

    # event_stored runs the event in place: a webhook calls it after its response, not before.
    before_response = False

    def __init__(self) -> None:
        self.runtime: Runtime | None = None  # set by conductor.bootstrap (the runtime needs its dispatcher)

    def submit(self, task: str, *args: Any) -> Any:
        assert self.runtime is not None, "InlineDispatcher used before bootstrap gave it a runtime"
        return run_job(self.runtime, task, *args)

    def event_stored(self, event_id: int) -> None:
        self.submit(TASK_PROCESS_EVENTS, [event_id])
