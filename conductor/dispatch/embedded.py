"""Embedded mode: an in-process worker and scheduler for `conductor serve` (no broker, SQLite is fine).

Why not Celery's own in-process worker with a memory broker: Celery's memory transport and a
worker started inside a web server are test aids, not a supported deployment, and beat would be
a third thing to host in the same process. What has to be the same in both modes is the work,
not the transport: the runner executes the very job functions the Celery tasks call
(conductor.service.jobs.JOBS, looked up by the same task names), with the same failure policy
(RETRYABLE errors retried with backoff and jitter, anything else recorded by `gave_up`), and
schedules tick and the two sweepers like beat does. Its queue is in memory: if the process dies,
the sweepers find the pending events and actions in the database when it starts again.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import random
import threading
import time
from typing import Any

import structlog

from conductor.service.jobs import RETRYABLE, Runtime, gave_up, run_job
from conductor.service.ports import (
    PERIODIC_TASKS,
    TASK_POLL_SOURCES,
    TASK_PROCESS_EVENTS,
    TASK_RELAY_OUTBOX,
    TASK_SEAL_AUDIT,
    TASK_SEND_DIGESTS,
    TASK_SWEEP_EVENTS,
    TASK_SYNC_STORES,
    TASK_TICK,
)

log = structlog.get_logger("conductor.runner")

MAX_RETRIES = 5
RETRY_BACKOFF_MAX_S = 30.0
PERIODIC = PERIODIC_TASKS


class QueueDispatcher:
    """The Dispatcher of embedded mode: jobs go onto the runner's in-memory queue."""

    def __init__(self, runner: EmbeddedRunner):
        self.runner = runner

    def submit(self, task: str, *args: Any) -> None:
        self.runner.put(task, args)

    def event_stored(self, event_id: int) -> None:
        self.submit(TASK_PROCESS_EVENTS, [event_id])


class EmbeddedRunner:
    """Worker threads taking jobs from a queue, and a scheduler thread for periodic and retried jobs."""

    def __init__(
        self,
        *,
        tick_interval_s: float,
        sweep_interval_s: float,
        store_sync_interval_s: float = 300.0,
        source_poll_tick_s: float = 30.0,
        audit_seal_interval_s: float = 30.0,
        threads: int = 1,
        rng: random.Random | None = None,
    ):
        self.dispatcher = QueueDispatcher(self)
        self.runtime: Runtime | None = None  # set by conductor.bootstrap (the runtime needs the dispatcher)
        self.threads = max(1, threads)
        self._queue: queue.Queue[tuple[str, tuple, int] | None] = queue.Queue()
        self._later: list[tuple[float, int, str, tuple, int]] = []  # (due, seq, task, args, attempt)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._busy = 0
        self._queued_periodic: set[str] = set()
        self._rng = rng or random.Random()
        self._workers: list[threading.Thread] = []
        self._scheduler: threading.Thread | None = None
        self.intervals = {
            TASK_TICK: tick_interval_s,
            TASK_SWEEP_EVENTS: sweep_interval_s,
            TASK_RELAY_OUTBOX: sweep_interval_s,
            TASK_SYNC_STORES: store_sync_interval_s,
            TASK_POLL_SOURCES: source_poll_tick_s,
            TASK_SEND_DIGESTS: 300.0,
            TASK_SEAL_AUDIT: audit_seal_interval_s,
        }

    # ------------------------------------------------------------------ queue

    def put(self, task: str, args: tuple = (), attempt: int = 0) -> None:
        with self._lock:
            if task in PERIODIC:
                if task in self._queued_periodic:
                    return  # one run of it is waiting already; it will do the same work
                self._queued_periodic.add(task)
        self._queue.put((task, tuple(args), attempt))

    def _later_put(self, delay: float, task: str, args: tuple, attempt: int) -> None:
        with self._lock:
            heapq.heappush(self._later, (time.monotonic() + delay, next(self._seq), task, args, attempt))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmbeddedRunner:
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"conductor-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self._scheduler = threading.Thread(target=self._schedule, name="conductor-scheduler", daemon=True)
        self._scheduler.start()
        # Whatever a previous run left behind is picked up at once, not after the first interval.
        for task in PERIODIC:
            self.put(task)
        log.info("embedded_runner_started", threads=self.threads, **{k.rsplit(".", 1)[-1] + "_s": v for k, v in self.intervals.items()})
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; a job that is running finishes (its work is one transaction anyway)."""
        self._stop.set()
        for _ in self._workers:
            self._queue.put(None)
        for t in [*self._workers, *([self._scheduler] if self._scheduler else [])]:
            t.join(timeout)
        log.info("embedded_runner_stopped", left_in_queue=self._queue.qsize())

    def idle(self) -> bool:
        with self._lock:
            return self._queue.empty() and self._busy == 0 and not self._later

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued, running or waiting for a retry (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ threads

    def _schedule(self) -> None:
        next_run = {task: time.monotonic() + every for task, every in self.intervals.items()}
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for task, due in next_run.items():
                if now >= due:
                    self.put(task)
                    next_run[task] = now + self.intervals[task]
            with self._lock:
                ready = []
                while self._later and self._later[0][0] <= now:
                    ready.append(heapq.heappop(self._later))
            for _, _, task, args, attempt in ready:
                self._queue.put((task, args, attempt))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            task, args, attempt = item
            with self._lock:
                self._queued_periodic.discard(task)
                self._busy += 1
            try:
                self._run(task, args, attempt)
            finally:
                with self._lock:
                    self._busy -= 1

    def _run(self, task: str, args: tuple, attempt: int) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(task=task, **({"args": list(args)} if args else {}))
        assert self.runtime is not None, "EmbeddedRunner started before bootstrap gave it a runtime"
        try:
            run_job(self.runtime, task, *args)
        except RETRYABLE as exc:
            if task in PERIODIC:
                log.warning("periodic_job_failed", error=str(exc).splitlines()[0][:300])
            elif attempt < MAX_RETRIES:
                delay = min(2.0**attempt, RETRY_BACKOFF_MAX_S) * self._rng.uniform(0.5, 1.0)
                log.warning("job_retry_scheduled", attempt=attempt + 1, delay_s=round(delay, 2), error=str(exc).splitlines()[0][:300])
                self._later_put(delay, task, args, attempt + 1)
            else:
                log.warning("job_retries_exhausted", error=str(exc).splitlines()[0][:300])  # the sweeper resends it
        except Exception as exc:
            log.error("job_failed", error=f"{exc.__class__.__name__}: {exc}")
            try:
                gave_up(self.runtime, task, args, f"{exc.__class__.__name__}: {exc}")
            except Exception as inner:
                log.error("job_failure_not_recorded", error=str(inner))
        finally:
            structlog.contextvars.clear_contextvars()
