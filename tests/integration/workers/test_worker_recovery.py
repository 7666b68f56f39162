"""Nothing is lost when workers die or Redis forgets: kill -9 mid-run, FLUSHALL mid-run.

The database is the source of truth; the sweepers (run by a real `celery -A workers beat`)
enqueue again whatever is still pending, and idempotent processing makes the replays harmless.
"""

from __future__ import annotations

import os
import signal

import pytest
from event_flow import TRACK, check_invariants, ci_events, inbox_counts, stages, wait_until
from sqlalchemy import func, select

from conductor.service.inbox import store_event
from conductor.store.models import InboxEvent

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

N = 60  # releases; 3 events each


@pytest.fixture
def fresh(stack):
    stack.reset()
    stack.conductor.ensure_track(TRACK, "mobile_weekly", repository="acme/music-android")
    yield stack
    stack.stop_all()


def start_and_send(stack, n: int) -> None:
    c = stack.conductor
    for i in range(n):
        c.start_release(TRACK, f"5.{i}.0")
    for i in range(n):
        for e in ci_events(f"5.{i}.0", sha=f"{i:07x}"):
            stack.dispatcher.event_stored(store_event(c, e).event_id)


def processed(stack) -> int:
    return inbox_counts(stack.db).get("processed", 0)


def assert_all_arrived(stack, n: int) -> None:
    wait_until(
        lambda: stages(stack.db).get("nightly", 0) == n and inbox_counts(stack.db).get("pending", 0) == 0,
        180,
        f"{n} releases at nightly, no event pending",
        lambda: f"{stages(stack.db)} {inbox_counts(stack.db)}\n{stack.logs()}",
    )
    assert inbox_counts(stack.db) == {"processed": 3 * n}
    moves = check_invariants(stack.conductor)
    assert all(m == [("trunk", "branch"), ("branch", "nightly")] for m in moves.values())


def test_kill_minus_nine_mid_run_loses_nothing_and_applies_nothing_twice(fresh):
    start_and_send(fresh, N)
    doomed = fresh.worker("doomed", concurrency=2)
    wait_until(lambda: processed(fresh) >= 30, 60, "the first worker to get going", fresh.logs)
    # First a pool process dies mid-task (the main process requeues its message: redelivered),
    # then the whole worker, main process included, without a word to the broker.
    for child in doomed.children()[:1]:
        os.kill(child, signal.SIGKILL)
    wait_until(lambda: processed(fresh) >= 60, 60, "the first worker to carry on", fresh.logs)
    doomed.kill9()
    assert processed(fresh) < 3 * N, "the run finished before the kill; raise N"
    fresh.worker("survivor", concurrency=2)
    fresh.beat()  # the sweepers find what the dead worker had taken off the queue
    assert_all_arrived(fresh, N)


def test_flushall_mid_run_the_sweepers_recover_every_event(fresh):
    start_and_send(fresh, N)
    fresh.worker("w", concurrency=2)
    fresh.beat()
    wait_until(lambda: processed(fresh) >= 40, 60, "processing to start", fresh.logs)
    fresh.redis.flushall()  # every queued message and every unacked one is gone
    assert processed(fresh) < 3 * N, "the run finished before the flush; raise N"
    assert_all_arrived(fresh, N)
    with fresh.db.read() as s:
        swept = s.scalar(select(func.count()).select_from(InboxEvent).where(InboxEvent.enqueued_at.is_not(None)))
    assert swept > 0  # recovered by the sweeper, not by luck
