"""The outbox relay and the sweepers on both backends, time moved by the clock: actions leave only
after their commit, each is performed once, failures back off and are shown, lost work is resent."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from conductor.actions import ActionAdapters, ActionFailed, ActionOutcome
from conductor.domain.errors import ConductorError
from conductor.service import Actor
from conductor.service.inbox import store_event
from conductor.service.jobs import Runtime, handle_events, relay_outbox, run_job, sweep_events
from conductor.service.ports import TASK_PROCESS_EVENTS, TASK_RUN_ACTION
from conductor.service.tracks import configure_actions
from conductor.sources.events import InboundEvent
from conductor.store.models import AuditEntry, InboxEvent, OutboxAction
from tests.conftest import inline

RM = Actor("rita")


class Recorder:
    """A dispatcher that only writes down what it was asked to run; `drain()` runs it, like a worker."""

    def __init__(self):
        self.sent: list[tuple[str, tuple]] = []
        self.runtime: Runtime | None = None

    def submit(self, task, *args):
        self.sent.append((task, args))

    def event_stored(self, event_id):
        self.submit(TASK_PROCESS_EVENTS, [event_id])

    def drain(self) -> list[tuple[str, tuple]]:
        done = []
        while self.sent:
            task, args = self.sent.pop(0)
            run_job(self.runtime, task, *args)
            done.append((task, args))
        return done


class Flaky:
    """An adapter that fails `failures` times (retryable unless told), then succeeds; counts calls."""

    def __init__(self, failures=0, retryable=True, retry_after=None):
        self.failures, self.retryable, self.retry_after, self.calls = failures, retryable, retry_after, []

    def run(self, req):
        self.calls.append(req)
        if len(self.calls) <= self.failures:
            raise ActionFailed(f"{req.action}: HTTP 503: store busy", retryable=self.retryable, retry_after=self.retry_after)
        return ActionOutcome("done", "ok", {"n": len(self.calls)})


@pytest.fixture
def world(conductor):
    adapters = {"cut_branch": Flaky(), "notify": Flaky()}
    rec = Recorder()
    rec.runtime = Runtime(
        conductor,
        rec,
        ActionAdapters(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))), adapters),
        action_max_attempts=3,
    )
    rec.adapters = adapters
    return rec


def cut_event(version="9.0.0", delivery="d1"):
    return InboundEvent(
        source="generic",
        delivery_id=delivery,
        kind="branch_created",
        raw_type="create",
        repository="acme/music-android",
        branch=f"release/{version}",
        sha="abc",
    )


def rows(db):
    with db.read() as s:
        return {o.action: o for o in s.scalars(select(OutboxAction))}


def audit_kinds(db):
    with db.read() as s:
        return [a.kind for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_actions_are_sent_after_the_commit_and_performed_once(conductor, world):
    conductor.start_release("music-android", "9.0.0", RM)
    eid = store_event(conductor, cut_event()).event_id
    world.event_stored(eid)
    world.event_stored(eid)  # a redelivered task
    ran = world.drain()
    assert [t for t, _ in ran].count(TASK_RUN_ACTION) == 1
    cut = rows(conductor.db)["cut_branch"]
    assert cut.status == "done" and cut.attempts == 1 and cut.result["n"] == 1
    # A duplicate run_action message and a relay pass later change nothing.
    handle_events(world.runtime, [eid])
    run_job(world.runtime, TASK_RUN_ACTION, cut.id)
    assert relay_outbox(world.runtime) == 0
    assert len(world.adapters["cut_branch"].calls) == 1


def test_failed_attempts_back_off_then_fail_visibly_and_notify(conductor, world, clock):
    world.adapters["cut_branch"].failures = 99
    conductor.start_release("music-android", "9.0.0", RM)
    world.event_stored(store_event(conductor, cut_event()).event_id)
    world.drain()
    cut = rows(conductor.db)["cut_branch"]
    assert (cut.status, cut.attempts) == ("pending", 1) and "store busy" in cut.last_error
    assert cut.next_attempt_at - clock.now >= timedelta(seconds=24)  # backed off, not hammered
    assert relay_outbox(world.runtime) == 0  # not due yet
    for attempt in (2, 3):
        clock.advance(timedelta(hours=1))
        assert relay_outbox(world.runtime) == 1
        world.drain()
        assert rows(conductor.db)["cut_branch"].attempts == attempt
    cut = rows(conductor.db)["cut_branch"]
    assert cut.status == "failed" and cut.done_at is not None
    assert "action_failed" in audit_kinds(conductor.db)
    notify = world.adapters["notify"].calls
    assert [c.params["event"] for c in notify] == ["action_failed"] and notify[0].params["action"] == "cut_branch"
    snap = conductor.snapshot("music-android/9.0.0")
    assert any(o.action == "cut_branch" and o.status == "failed" and "store busy" in o.last_error for o in snap.outbox)


def test_a_retry_after_longer_than_the_backoff_is_honoured(conductor, world, clock):
    world.adapters["cut_branch"].failures, world.adapters["cut_branch"].retry_after = 1, 1800
    conductor.start_release("music-android", "9.0.0", RM)
    world.event_stored(store_event(conductor, cut_event()).event_id)
    world.drain()
    cut = rows(conductor.db)["cut_branch"]
    assert cut.status == "pending" and cut.next_attempt_at - clock.now == timedelta(seconds=1800)
    clock.advance(timedelta(seconds=1799))
    assert relay_outbox(world.runtime) == 0  # asked to wait half an hour: not before
    clock.advance(timedelta(seconds=1))
    assert relay_outbox(world.runtime) == 1


def test_unconfigured_action_is_skipped_with_its_reason_on_the_release(conductor, clock):
    disp = inline(conductor, adapters=ActionAdapters(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))))).dispatcher
    conductor.start_release("music-android", "9.0.0", RM)
    disp.event_stored(store_event(conductor, cut_event()).event_id)
    snap = conductor.snapshot("music-android/9.0.0")
    cut = next(o for o in snap.outbox if o.action == "cut_branch")
    assert cut.status == "skipped" and "no actions_url" in cut.last_error
    skipped = [a for a in snap.audit if a.kind == "action_skipped"]
    assert skipped and "no actions_url" in skipped[0].reason


def test_a_lost_message_is_resent_after_the_grace_period(conductor, world, clock):
    conductor.start_release("music-android", "9.0.0", RM)
    world.event_stored(store_event(conductor, cut_event()).event_id)
    task, args = world.sent.pop(0)
    run_job(world.runtime, task, *args)  # the event is processed; its run_action message is then lost
    world.sent.clear()
    assert rows(conductor.db)["cut_branch"].status == "pending"
    assert relay_outbox(world.runtime) == 0  # leased: the message may still be in flight
    clock.advance(world.runtime.sweep_grace + timedelta(seconds=1))
    assert relay_outbox(world.runtime) == 1
    world.drain()
    assert rows(conductor.db)["cut_branch"].status == "done"


def test_an_action_abandoned_by_a_dead_worker_is_taken_over_and_the_late_result_ignored(conductor, world, clock):
    from conductor.service import outbox

    conductor.start_release("music-android", "9.0.0", RM)
    world.event_stored(store_event(conductor, cut_event()).event_id)
    task, args = world.sent.pop(0)
    run_job(world.runtime, task, *args)
    world.sent.clear()
    cut_id = rows(conductor.db)["cut_branch"].id
    # A worker claims the row and dies while the adapter runs: the row stays "sending".
    with conductor.db.transaction() as s:
        row = s.get(OutboxAction, cut_id)
        row.status, row.attempts, row.next_attempt_at = "sending", 1, clock.now + world.runtime.action_run_lease
    clock.advance(world.runtime.action_run_lease + timedelta(seconds=1))
    assert relay_outbox(world.runtime) == 1
    world.drain()
    assert rows(conductor.db)["cut_branch"].status == "done" and rows(conductor.db)["cut_branch"].attempts == 2
    # The dead worker's attempt 1 reports late: discarded.
    late = outbox._record(conductor, cut_id, 1, None, ActionFailed("late"), max_attempts=3, rng=None)
    assert late.status == "done"


def test_sweeper_resends_pending_events_once_per_grace_period(conductor, world, clock):
    conductor.start_release("music-android", "9.0.0", RM)
    eid = store_event(conductor, cut_event()).event_id  # stored, but its message never reached a worker
    assert sweep_events(world.runtime) == 0
    clock.advance(world.runtime.sweep_grace)
    assert sweep_events(world.runtime) == 1
    assert sweep_events(world.runtime) == 0  # not again until another grace period passed
    clock.advance(world.runtime.sweep_grace)
    assert sweep_events(world.runtime) == 1
    world.drain()
    with conductor.db.read() as s:
        assert s.get(InboxEvent, eid).status == "processed"
    assert conductor.snapshot("music-android/9.0.0").release.stage == "branch"
    clock.advance(world.runtime.sweep_grace * 2)
    assert sweep_events(world.runtime) == 0


def test_release_is_announced_once(conductor, database):
    from conductor.service.evaluation import advance
    from conductor.service.step import open_step
    from conductor.store.models import Release

    rid = conductor.start_release("music-android", "9.0.0", RM)
    with conductor.db.transaction() as s:
        s.get(Release, rid).stage = "rollout_100"
    with open_step(conductor, rid) as step:
        ev = step.add_evaluation("rollout_100->released", "advance", "x", {}, "test")
        advance(step, ev, "conductor", "all gates pass")
    notes = [o for o in conductor.snapshot(rid).outbox if o.action == "notify"]
    assert len(notes) == 1 and notes[0].params["event"] == "released"


def test_configure_actions_validates_and_masks_secrets(conductor):
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    shown = configure_actions(
        conductor,
        "music-android",
        RM,
        {"slack_url": "https://hooks.slack.test/x", "actions_url": "https://d.test/a", "actions_secret": secret},
    )
    assert shown["actions_secret"] == "whsec_…" and shown["notify"]["slack_url"] == "https://hooks.slack.test/x"
    with pytest.raises(ConductorError, match="webhook_secret"):
        configure_actions(conductor, "music-android", RM, {"webhook_url": "https://ops.test/h"})
    with pytest.raises(ConductorError, match="settings.actions_url"):
        configure_actions(conductor, "music-android", RM, {"actions_url": "nope"})
    shown = configure_actions(conductor, "music-android", RM, {"slack_url": ""})
    assert "notify" not in shown or "slack_url" not in shown.get("notify", {})
