"""Embedded mode's runner: the Celery tasks' job functions from an in-process queue, with the same
retry policy, and tick and the sweepers on a schedule."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from conductor.actions import ActionAdapters, ActionOutcome
from conductor.bootstrap import build
from conductor.config import Settings
from conductor.domain.errors import ConcurrentUpdate
from conductor.read.tracks import get_event
from conductor.service import jobs
from conductor.service.inbox import store_event
from conductor.service.ports import TASK_PROCESS_EVENTS
from conductor.sources.events import InboundEvent, SignalIn


class Done:
    def __init__(self):
        self.keys = []

    def run(self, req):
        self.keys.append(req.idempotency_key)
        return ActionOutcome("done", "ok")


def event(kind, delivery, **kw):
    return InboundEvent(
        source="generic",
        delivery_id=delivery,
        kind=kind,
        raw_type=kind,
        repository="acme/music-android",
        branch="release/9.0.0",
        sha="abc",
        **kw,
    )


@pytest.fixture
def runner(conductor):
    done = Done()
    adapters = ActionAdapters(
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))), {"cut_branch": done, "distribute": done, "notify": done}
    )
    settings = Settings(database_url=conductor.db.url, broker_url=None, tick_interval_s=0.2, sweep_interval_s=0.2, sweep_grace_s=60)
    r = build(settings, mode="embedded", context=conductor, adapters=adapters).runner.start()
    r.done = done
    yield r
    r.stop()


def test_events_flow_through_the_same_jobs_as_the_workers(conductor, runner):
    rid = conductor.start_release("music-android", "9.0.0")
    for e in (
        event("branch_created", "cut"),
        event("build_finished", "b1", signals=[SignalIn(name="build_green", value=1)]),
        event("tests_finished", "t1", signals=[SignalIn(name="tests_pass_rate", value=1.0, samples=900)]),
    ):
        runner.dispatcher.event_stored(store_event(conductor, e).event_id)
    assert runner.wait_idle(20)
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "nightly"
    assert sorted(o.status for o in snap.outbox) == ["done", "done"]
    release_actions = [k for k in runner.done.keys if not k.startswith("digest:")]  # the runner also sends the morning digest
    assert len(release_actions) == 2


def test_retryable_errors_are_retried_with_backoff(conductor, runner, monkeypatch):
    rid = conductor.start_release("music-android", "9.0.0")
    real = jobs.JOBS[TASK_PROCESS_EVENTS]
    calls = []

    def contended(rt, event_ids):
        calls.append(event_ids)
        if len(calls) < 3:
            raise ConcurrentUpdate("another writer got there first")
        return real(rt, event_ids)

    monkeypatch.setitem(jobs.JOBS, TASK_PROCESS_EVENTS, contended)
    eid = store_event(conductor, event("branch_created", "cut")).event_id
    runner.dispatcher.event_stored(eid)
    assert runner.wait_idle(20)
    assert len(calls) == 3 and get_event(conductor, eid).status == "processed"
    assert conductor.snapshot(rid).release.stage == "branch"


def test_a_bug_is_recorded_on_the_event_not_retried_forever(conductor, runner, monkeypatch):
    conductor.start_release("music-android", "9.0.0")

    def broken(rt, event_ids):
        raise KeyError("bug")

    monkeypatch.setitem(jobs.JOBS, TASK_PROCESS_EVENTS, broken)
    eid = store_event(conductor, event("branch_created", "cut")).event_id
    runner.dispatcher.event_stored(eid)
    assert runner.wait_idle(20)
    status = get_event(conductor, eid)
    assert status.status == "failed" and "KeyError" in status.note


def test_the_schedule_runs_tick(conductor, clock, runner):
    rid = conductor.start_release("music-android", "9.0.0")
    clock.advance(timedelta(days=7))  # past branch day: the timer is due
    import time

    deadline = time.monotonic() + 10
    while conductor.snapshot(rid).release.stage != "branch" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert conductor.snapshot(rid).release.stage == "branch"
    assert runner.wait_idle(10)
    assert [o.status for o in conductor.snapshot(rid).outbox] == ["done"]  # the cut_branch action, relayed
