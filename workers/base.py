"""The base of every Conductor task: late acks, capped redelivery, a dead-letter queue, failure recording.

A message whose worker died is delivered again (acks_late + reject_on_worker_lost); Redis marks
it `redelivered`. Redelivered messages are counted per task id in Redis: past
CONDUCTOR_TASK_MAX_REDELIVERIES the message is not run again but published to the dead-letter
queue `conductor.dead` (JSON: task, id, args, reason) and the event or action it names is marked
failed where people look (inbox note, release audit). A message that keeps killing its worker
therefore costs a bounded number of crashes, and nothing is dropped silently.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from celery import Task

from conductor.dispatch.celery import DEAD_LETTER_QUEUE
from conductor.service.jobs import RETRYABLE, gave_up
from conductor.service.ports import TASK_PROCESS_EVENTS

log = structlog.get_logger("workers")

DELIVERY_KEY = "conductor:deliveries:{task_id}"
DELIVERY_TTL_S = 86400

_redis_clients: dict[str, Any] = {}


def _redelivered(request) -> bool:
    info = getattr(request, "delivery_info", None) or {}
    return bool(info.get("redelivered"))


def count_delivery(broker_url: str, task_id: str) -> int | None:
    """How many times this task id has now been delivered (first = 1); None when the broker is not Redis."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None  # RabbitMQ: use a quorum queue's delivery-limit instead
    import redis

    client = _redis_clients.get(broker_url)
    if client is None:
        client = _redis_clients[broker_url] = redis.Redis.from_url(broker_url)
    key = DELIVERY_KEY.format(task_id=task_id)
    with client.pipeline() as pipe:
        # No counter yet means the first delivery was never counted (only redeliveries pay for one).
        # One command a line: redis-py types a pipeline's commands as the client's results, not as
        # the pipeline that chaining them returns.
        pipe.setnx(key, 1)
        pipe.incr(key)
        pipe.expire(key, DELIVERY_TTL_S)
        _, n, _ = pipe.execute()
    return int(n)


class ConductorTask(Task):
    """Thin task: ids in, one conductor.service.jobs call; safe to run twice."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    autoretry_for = RETRYABLE
    max_retries = 5
    retry_backoff = 1
    retry_backoff_max = 30  # well under a minute: longer waits live in the database
    retry_jitter = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _redelivered(self.request) and self.request.id:
            from conductor.config import get_settings

            settings = get_settings()
            n = count_delivery(self.app.conf.broker_url or "", self.request.id)
            if n is not None and n > settings.task_max_redeliveries:
                self.dead_letter(args, kwargs, f"delivered {n} times without completing (its worker was lost each time)")
                return None
        return super().__call__(*args, **kwargs)

    def dead_letter(self, args: tuple, kwargs: dict, reason: str) -> None:
        """Park the message in the dead-letter queue and record the failure on what it names."""
        from kombu import Exchange, Queue

        body = {
            "task": self.name,
            "id": self.request.id,
            "args": list(args),
            "kwargs": kwargs,
            "reason": reason,
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        }
        queue = Queue(DEAD_LETTER_QUEUE, Exchange("", type="direct"), routing_key=DEAD_LETTER_QUEUE)
        with self.app.producer_or_acquire() as producer:
            producer.publish(body, exchange="", routing_key=DEAD_LETTER_QUEUE, serializer="json", declare=[queue], retry=True)
        log.error("task_dead_lettered", task=self.name, task_id=self.request.id, args=list(args), reason=reason)
        from workers.runtime import runtime

        gave_up(runtime(), self.name, args, f"dead-lettered: {reason}")

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Retries are over (or the error was not retryable): record it, unless a sweeper will retry it."""
        if isinstance(exc, RETRYABLE):
            # Transient (database away, contention): the row stays pending and a sweeper resends it.
            log.warning("task_retries_exhausted", task=self.name, task_id=task_id, args=list(args), error=str(exc))
            if self.name == TASK_PROCESS_EVENTS and args and len(args[0]) > 1:
                # One event may be what keeps failing: split the batch (gave_up sends each alone,
                # marking nothing failed), so the others do not wait behind it at every sweep.
                from workers.runtime import runtime

                try:
                    gave_up(runtime(), self.name, tuple(args), f"{exc.__class__.__name__}: {exc}")
                except Exception as inner:
                    log.error("task_batch_not_split", task=self.name, task_id=task_id, error=str(inner))
            return
        log.error("task_failed", task=self.name, task_id=task_id, args=list(args), error=f"{exc.__class__.__name__}: {exc}")
        from workers.runtime import runtime

        try:
            gave_up(runtime(), self.name, tuple(args), f"{exc.__class__.__name__}: {exc}")
        except Exception as inner:  # the database may be what failed; the sweeper retries later
            log.error("task_failure_not_recorded", task=self.name, task_id=task_id, error=str(inner))


class PeriodicTask(ConductorTask):
    """tick and the sweepers: run again on the next beat, so a lost or failed run is not retried."""

    reject_on_worker_lost = False
    autoretry_for = ()

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        log.error("periodic_task_failed", task=self.name, task_id=task_id, error=f"{exc.__class__.__name__}: {exc}")
