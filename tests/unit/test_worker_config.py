"""The Celery side's reliability settings and log context, without a broker."""

from __future__ import annotations

import pytest
import structlog


@pytest.fixture
def settings_env(monkeypatch):
    from conductor.config import get_settings

    monkeypatch.setenv("CONDUCTOR_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CONDUCTOR_TICK_INTERVAL_S", "7")
    monkeypatch.setenv("CONDUCTOR_AUDIT_SEAL_INTERVAL_S", "11")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_reliability_settings(settings_env):
    from conductor.dispatch.celery import QUEUE
    from conductor.service.ports import TASK_RELAY_OUTBOX, TASK_SWEEP_EVENTS, TASK_TICK
    from workers.celery import build_config

    conf = build_config()
    assert conf["task_serializer"] == "json" and conf["accept_content"] == ["json"] and conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 300
    assert conf["task_time_limit"] < conf["broker_transport_options"]["visibility_timeout"]
    assert [q.name for q in conf["task_queues"]] == [QUEUE]
    schedule = {entry["task"]: entry["schedule"] for entry in conf["beat_schedule"].values()}
    assert schedule[TASK_TICK] == 7 and {TASK_SWEEP_EVENTS, TASK_RELAY_OUTBOX} <= set(schedule)


def test_every_periodic_job_is_scheduled_by_beat_and_the_embedded_runner(settings_env):
    from conductor.dispatch.embedded import EmbeddedRunner
    from conductor.service.jobs import JOBS
    from conductor.service.ports import PERIODIC_TASKS, TASK_SEAL_AUDIT
    from workers.celery import build_config

    schedule = {entry["task"]: entry["schedule"] for entry in build_config()["beat_schedule"].values()}
    assert set(schedule) == set(PERIODIC_TASKS) <= set(JOBS)
    assert schedule[TASK_SEAL_AUDIT] == 11  # CONDUCTOR_AUDIT_SEAL_INTERVAL_S
    runner = EmbeddedRunner(tick_interval_s=1, sweep_interval_s=1, audit_seal_interval_s=13)
    assert set(runner.intervals) == set(PERIODIC_TASKS) and runner.intervals[TASK_SEAL_AUDIT] == 13
    import workers

    assert all(workers.app.tasks[name].autoretry_for == () for name in PERIODIC_TASKS)  # Celery tasks, run again by the next beat


def test_no_broker_is_a_clear_error(monkeypatch):
    from conductor.config import get_settings
    from workers.celery import require_broker

    monkeypatch.delenv("CONDUCTOR_BROKER_URL", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match="conductor serve"):
            require_broker()
    finally:
        get_settings.cache_clear()


def test_tasks_retry_with_capped_jittered_backoff_and_never_wait_long():
    import workers
    from conductor.domain.errors import ConcurrentUpdate
    from conductor.service.ports import TASK_PROCESS_EVENTS, TASK_RUN_ACTION, TASK_TICK

    for name in (TASK_PROCESS_EVENTS, TASK_RUN_ACTION):
        task = workers.app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost and ConcurrentUpdate in task.autoretry_for
        assert task.retry_backoff and task.retry_jitter and task.retry_backoff_max <= 60 and task.max_retries
    tick = workers.app.tasks[TASK_TICK]
    assert tick.autoretry_for == () and not tick.reject_on_worker_lost  # the next beat runs it again


def test_log_context_is_bound_before_a_task_and_cleared_after():
    import workers
    from conductor.service.ports import TASK_PROCESS_EVENTS, TASK_RUN_ACTION
    from workers.signals import bind_task_context, clear_task_context

    structlog.contextvars.bind_contextvars(leftover="from another task")
    bind_task_context(task_id="t-1", task=workers.app.tasks[TASK_PROCESS_EVENTS], args=([42],))
    assert structlog.contextvars.get_contextvars() == {"task_id": "t-1", "task": TASK_PROCESS_EVENTS, "event_ids": [42]}
    clear_task_context()
    assert structlog.contextvars.get_contextvars() == {}
    bind_task_context(task_id="t-2", task=workers.app.tasks[TASK_RUN_ACTION], args=(7,))
    assert structlog.contextvars.get_contextvars()["action_id"] == 7
    clear_task_context()


def test_a_batch_that_keeps_failing_with_a_retryable_error_is_split_for_the_sweeper(monkeypatch):
    """Retries over on a transient error: a multi-event batch is sent again one event per task
    (nothing marked failed), so one event that keeps failing does not hold back the others."""
    from types import SimpleNamespace

    from sqlalchemy.exc import OperationalError

    import workers
    import workers.runtime
    from conductor.service.ports import TASK_PROCESS_EVENTS

    sent = []
    fake = SimpleNamespace(context=None, dispatcher=SimpleNamespace(submit=lambda task, *args: sent.append((task, args))))
    monkeypatch.setattr(workers.runtime, "runtime", lambda: fake)
    task = workers.app.tasks[TASK_PROCESS_EVENTS]
    error = OperationalError("UPDATE inbox", {}, Exception("canceling statement due to statement timeout"))
    task.on_failure(error, "t-1", ([7, 8, 9], False), {}, None)
    assert sent == [(TASK_PROCESS_EVENTS, ([7],)), (TASK_PROCESS_EVENTS, ([8],)), (TASK_PROCESS_EVENTS, ([9],))]
    sent.clear()
    task.on_failure(error, "t-2", ([7],), {}, None)  # a single event just stays pending for the sweeper
    assert sent == []
