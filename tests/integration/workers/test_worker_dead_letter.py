"""A message that keeps killing its worker is delivered a bounded number of times, then parked in
the dead-letter queue, and the event it carried is marked failed (never looped, never dropped)."""

from __future__ import annotations

import base64
import json

import pytest
from event_flow import TRACK, branch_created

from conductor.dispatch.celery import DEAD_LETTER_QUEUE
from conductor.read.tracks import get_event
from conductor.service.inbox import store_event
from conductor.service.ports import TASK_PROCESS_EVENTS

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def worker_app(stack, monkeypatch):
    """The workers' Celery app in this process, pointed at the test's database and Redis."""
    import workers
    from conductor.config import get_settings
    from workers import runtime

    stack.reset()
    stack.conductor.ensure_track(TRACK, "mobile_weekly", repository="acme/music-android")
    for key, value in stack.env.items():
        if key.startswith("CONDUCTOR_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONDUCTOR_TASK_MAX_REDELIVERIES", "3")
    get_settings.cache_clear()
    runtime._state.clear()
    monkeypatch.setattr(workers.app.conf, "broker_url", stack.redis.url)
    yield workers.app
    rt = runtime._state.get("rt")
    if rt is not None:
        rt.context.db.dispose()
    runtime._state.clear()
    get_settings.cache_clear()


def deliver(task, task_id: str, *args):
    """Run the task as the worker would for a message Redis marked redelivered."""
    task.push_request(id=task_id, delivery_info={"redelivered": True}, args=list(args), kwargs={})
    try:
        return task(*args)
    finally:
        task.pop_request()


def test_redelivery_cap_sends_a_poison_message_to_the_dead_letter_queue(stack, worker_app):
    c = stack.conductor
    c.start_release(TRACK, "7.0.0")
    c.start_release(TRACK, "7.1.0")
    poison = store_event(c, branch_created("7.0.0", "abc", delivery="poison")).event_id
    healthy = store_event(c, branch_created("7.1.0", "abc", delivery="healthy")).event_id
    task = worker_app.tasks[TASK_PROCESS_EVENTS]
    r = stack.redis.client()
    r.set("conductor:deliveries:poison-task", 3)  # three deliveries already died with their worker

    assert deliver(task, "poison-task", [poison]) is None
    status = get_event(c, poison)
    assert status.status == "failed" and "dead-lettered" in status.note
    parked = r.lrange(DEAD_LETTER_QUEUE, 0, -1)
    assert len(parked) == 1
    body = json.loads(base64.b64decode(json.loads(parked[0])["body"]))
    assert body["task"] == TASK_PROCESS_EVENTS and body["args"] == [[poison]] and body["id"] == "poison-task"
    assert c.snapshot("music-android/7.0.0").release.stage == "trunk"  # never applied

    # A redelivery under the cap runs normally (it is the second delivery of that task id).
    assert deliver(task, "healthy-task", [healthy]) == {"processed": 1}
    assert int(r.get("conductor:deliveries:healthy-task")) == 2
    assert c.snapshot("music-android/7.1.0").release.stage == "branch"
