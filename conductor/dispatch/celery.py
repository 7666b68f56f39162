"""Distributed mode's dispatcher: jobs go to the broker as Celery tasks, sent by name.

conductor never imports workers: the API publishes `workers.tasks.process_events` and friends by
name (conductor.service.ports), so it can enqueue work without loading the worker code. The
workers (workers/celery.py) and this publisher share `celery_config`.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from typing import Any

import structlog

from conductor.service.ports import TASK_PROCESS_EVENTS

log = structlog.get_logger("conductor.dispatch")

QUEUE = "conductor"
# After a failed publish, for this long, requests hand their ids to the publisher thread instead
# of publishing themselves (the broker is presumed away; they should not each wait for it).
INLINE_PAUSE_AFTER_FAILURE_S = 5.0
DEAD_LETTER_QUEUE = "conductor.dead"


def celery_config(broker_url: str, *, visibility_timeout_s: int = 300) -> dict[str, Any]:
    """The Celery settings both sides share: the API's dispatcher and the workers (workers.celery).

    - JSON only, so a message is data, never code.
    - One queue on the anonymous exchange: routing needs no binding table in Redis, so a
      flushed or restarted Redis keeps routing (the sweepers refill what it lost).
    - Visibility timeout: a message fetched by a worker that then vanished is handed out again
      after this long. Set explicitly and kept short because nothing here waits long inside
      Celery (no ETA/countdown beyond a minute); it must exceed the longest task plus countdown.
    - Publishing retries briefly, then gives up: the row is in the database and a sweeper resends.
    """
    from kombu import Exchange, Queue

    return {
        "broker_url": broker_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_queues": (Queue(QUEUE, Exchange("", type="direct"), routing_key=QUEUE),),
        "task_default_queue": QUEUE,
        "task_default_exchange": "",
        "task_default_routing_key": QUEUE,
        "task_ignore_result": True,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout_s,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 3,
        },
        "broker_connection_retry_on_startup": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5},
    }


class CeleryDispatcher:
    """Distributed mode: enqueue by task name on the broker; a lost message is re-sent by a sweeper.

    A stored event goes out as a process_events task. When nothing else is being published, the
    caller publishes its id at once, in its own thread: one event at a time pays no hand-over to
    another thread (measured on a 2-core machine, the hand-over cost about as much as the
    publish, and the two threads then contended for the GIL with the response). Otherwise the id
    goes to a publisher thread, which sends every id waiting at that moment as one task (up to
    `max_batch`): under a burst, the ids that arrived while the previous message was being
    published travel together, and the worker applies them in one transaction. Ids go to the
    broker in the order they were handed over.

    After a failed publish, callers hand their ids to the thread for a while instead of each
    waiting for an unreachable broker; socket timeouts bound a hung one. Like a failed publish,
    an id still in this process when it dies is not lost: its inbox row is pending, and the
    sweeper enqueues it again after the grace period.
    """

    def __init__(
        self,
        broker_url: str | None = None,
        *,
        app=None,
        visibility_timeout_s: int = 300,
        max_batch: int = 100,
        publish_timeout_s: float = 1.0,
    ):
        if app is None:
            from celery import Celery

            if not broker_url:
                raise ValueError("CeleryDispatcher needs a broker_url or a Celery app")
            app = Celery("conductor-dispatch", set_as_current=False)
            app.conf.update(celery_config(broker_url, visibility_timeout_s=visibility_timeout_s))
            # This app only publishes, often from a request's thread: a broker that accepts the
            # connection and never answers must not hold that request for good (a healthy one
            # answers in well under a millisecond; each publish is tried 3 times).
            app.conf.broker_transport_options = {
                **app.conf.broker_transport_options,
                "socket_timeout": publish_timeout_s,
                "socket_connect_timeout": publish_timeout_s,
            }
        self.app = app
        self.max_batch = max_batch
        self._out = _Outgoing()
        atexit.register(self._flush_at_exit)

    def _flush_at_exit(self) -> None:
        if self._out.pid == os.getpid() and self._out.publisher is not None:
            self.flush(2.0)

    def submit(self, task: str, *args: Any) -> bool:
        """Publish; False (logged) when the broker could not be reached."""
        try:
            self.app.send_task(task, args=list(args))
            return True
        except Exception as exc:  # the row is durable; a sweeper will enqueue it again
            log.warning("enqueue_failed", task=task, args=list(args), error=str(exc))
            return False

    def event_stored(self, event_id: int) -> None:
        out = self._current()
        inline = False
        try:
            with out.cond:
                # unsent == 0: no id is waiting or being published, so this one cannot overtake
                # another. Taking the publish lock here, before unsent rises, makes any id handed
                # over from now on wait for this publish (the publisher thread takes the same lock).
                # After a failed publish the broker is presumed away for a while: requests then
                # hand their ids over instead of each paying the connection attempts.
                inline = out.unsent == 0 and time.monotonic() >= out.inline_after and out.publishing.acquire(blocking=False)
                if not inline:
                    self._queue(out, [event_id])
                    return
                out.unsent += 1
            self._publish(out, [event_id])
        finally:
            if inline:
                out.publishing.release()

    def _current(self) -> _Outgoing:
        out = self._out
        if out.pid != os.getpid():
            # A forked child must not touch the parent's lock (it may have been held at the fork)
            # nor publish the parent's ids again: it starts with state of its own.
            out = self._out = _Outgoing()
        return out

    def _queue(self, out: _Outgoing, ids: list[int]) -> None:
        """For the publisher thread (the caller holds out.cond, so ids queue in hand-over order)."""
        if out.publisher is None or not out.publisher.is_alive():
            thread = threading.Thread(target=self._publish_loop, args=(out,), name="conductor-publisher", daemon=True)
            thread.start()  # first: if it cannot start, nothing is counted as waiting (the sweeper sends these)
            out.publisher = thread
        out.unsent += len(ids)
        for event_id in ids:
            out.events.put(event_id)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every id handed over so far went to the broker, or was given up on after the
        publish failed (logged; its inbox row stays pending and the sweeper sends it again).
        False on timeout."""
        out = self._current()
        with out.cond:
            return out.cond.wait_for(lambda: out.unsent == 0, timeout)

    def _publish_loop(self, out: _Outgoing) -> None:
        while True:
            ids = [out.events.get()]
            with out.publishing:  # after a publish in progress: what arrived meanwhile goes along
                while len(ids) < self.max_batch:
                    try:
                        ids.append(out.events.get_nowait())
                    except queue.Empty:
                        break
                self._publish(out, ids)

    def _publish(self, out: _Outgoing, ids: list[int]) -> None:
        published = False
        try:
            published = self.submit(TASK_PROCESS_EVENTS, ids)
        finally:
            if not published:
                out.inline_after = time.monotonic() + INLINE_PAUSE_AFTER_FAILURE_S
            with out.cond:
                out.unsent -= len(ids)
                out.cond.notify_all()


class _Outgoing:
    """The ids one process has handed over and not yet published, and the thread publishing them."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.unsent = 0
        self.cond = threading.Condition()
        self.publishing = threading.Lock()  # held while a message is being published
        self.inline_after = 0.0  # time.monotonic() before which callers do not publish themselves
        self.publisher: threading.Thread | None = None
        self.pid = os.getpid()
