"""Real `celery -A workers worker` processes, real Redis and PostgreSQL: exactly-once effects under
duplicate deliveries, concurrency across two workers, and events that arrive out of order."""

from __future__ import annotations

import random
import threading

import pytest
from event_flow import TRACK, branch_created, check_invariants, ci_events, inbox_counts, stages, wait_until
from sqlalchemy import func, select

from conductor.service.inbox import store_event
from conductor.store.models import AuditEntry, InboxEvent

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def workers(stack):
    """Two worker processes (prefork, 2 and 1 pool processes) shared by the tests of this module."""
    stack.worker("w1", concurrency=2)
    stack.worker("w2", concurrency=1)
    yield stack
    stack.stop_all()


@pytest.fixture
def fresh(workers):
    workers.reset()
    workers.conductor.ensure_track(TRACK, "mobile_weekly", repository="acme/music-android")
    return workers


def send(stack, event) -> int:
    stored = store_event(stack.conductor, event)
    stack.dispatcher.event_stored(stored.event_id)
    return stored.event_id


def test_same_delivery_sent_ten_times_concurrently_applies_once(fresh):
    c = fresh.conductor
    rid = c.start_release(TRACK, "1.0.0")
    event = branch_created("1.0.0", "abc1234", delivery="delivery-42")
    barrier = threading.Barrier(10)
    ids: list[int] = []

    def deliver():
        barrier.wait()
        ids.append(send(fresh, event))  # every copy is enqueued: ten tasks race for one inbox row

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    wait_until(lambda: inbox_counts(fresh.db).get("pending", 0) == 0, 30, "the event to be processed", fresh.logs)
    with fresh.db.read() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent)) == 1
        row = s.get(InboxEvent, ids[0])
        assert row.status == "processed" and row.attempts == 1
        moves = s.scalars(select(AuditEntry).where(AuditEntry.kind == "transitioned")).all()
    assert [(a.from_stage, a.to_stage, a.event_id) for a in moves] == [("trunk", "branch", ids[0])]
    assert c.snapshot(rid).release.stage == "branch"
    check_invariants(c)


def test_two_workers_two_hundred_releases_interleaved(fresh):
    c = fresh.conductor
    n = 200
    for i in range(n):
        c.start_release(TRACK, f"2.{i}.0")
    rng = random.Random(11)
    # Per release the order is random too (a test result may come before its build, or before the cut).
    queues = [rng.sample(ci_events(f"2.{i}.0", sha=f"{i:07x}"), 3) for i in range(n)]
    while any(queues):
        q = rng.choice([q for q in queues if q])
        send(fresh, q.pop())
    wait_until(
        lambda: stages(fresh.db).get("nightly", 0) == n,
        180,
        f"{n} releases to reach nightly",
        lambda: f"{stages(fresh.db)} {inbox_counts(fresh.db)}\n{fresh.logs()}",
    )
    assert inbox_counts(fresh.db) == {"processed": 3 * n}
    moves = check_invariants(c)
    assert all(m == [("trunk", "branch"), ("branch", "nightly")] for m in moves.values())
    # Both workers did part of the work.
    with fresh.db.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "transitioned")) == 2 * n


def test_out_of_order_events_reach_the_same_state(fresh):
    c = fresh.conductor
    in_order = c.start_release(TRACK, "3.0.0")
    reversed_ = c.start_release(TRACK, "3.1.0")
    for e in ci_events("3.0.0", sha="aaaaaaa"):
        send(fresh, e)
    cut, build, tests = ci_events("3.1.0", sha="aaaaaaa")
    for e in (tests, build, cut):  # the test result before its build finished, both before the cut
        send(fresh, e)
    wait_until(lambda: inbox_counts(fresh.db).get("pending", 0) == 0, 30, "all events processed", fresh.logs)
    a, b = c.snapshot(in_order), c.snapshot(reversed_)
    assert a.release.stage == b.release.stage == "nightly"
    assert a.release.head_sha == b.release.head_sha
    assert [(g.gate, g.outcome) for g in a.lights] == [(g.gate, g.outcome) for g in b.lights]
    assert [(x.kind, x.from_stage, x.to_stage) for x in a.audit if x.kind == "transitioned"] == [
        (x.kind, x.from_stage, x.to_stage) for x in b.audit if x.kind == "transitioned"
    ]
    check_invariants(c)
