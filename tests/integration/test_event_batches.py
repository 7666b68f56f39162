"""Batched inbox processing (inbox.process_events, jobs.handle_events) on both backends: a batch
ends exactly where the same events processed one by one end, one bad event fails alone, nothing
is applied twice, and the actions a batch queued are relayed."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, text

from conductor.actions import ActionAdapters, ActionOutcome
from conductor.service import Actor, jobs
from conductor.service.inbox import process_events, store_event
from conductor.service.jobs import Runtime, gave_up, handle_events, run_job, sweep_events
from conductor.service.ports import TASK_PROCESS_EVENTS, TASK_RUN_ACTION
from conductor.sources.events import CommitInfo, InboundEvent, SignalIn
from conductor.store.models import AuditEntry, Evaluation, InboxEvent, OutboxAction, Release, SignalRow, Timer
from tests.conftest import apply_event
from tests.integration.test_service import BRANCH_DAY, RM, TEAMS, stage_of

REPO = "acme/music-android"
_n = iter(range(10**6))


def ev(version="9.0.0", kind="signal", signals=(), sha="s1", branch=None, repo=REPO, commits=(), labels=()):
    """A generic event for release `version` (its branch), each with a delivery id of its own."""
    return InboundEvent(
        source="generic",
        delivery_id=f"b-{next(_n)}",
        kind=kind,
        raw_type=kind,
        repository=repo,
        branch=branch or f"release/{version}",
        sha=sha,
        signals=list(signals),
        commits=list(commits),
        labels=list(labels),
    )


def sig(name, value, samples=None):
    return [SignalIn(name=name, value=value, samples=samples)]


def store(c, events) -> list[int]:
    return [store_event(c, e).event_id for e in events]


def inbox(db, ids):
    with db.read() as s:
        rows = {r.id: r for r in s.scalars(select(InboxEvent).where(InboxEvent.id.in_(ids)))}
        s.expunge_all()
    return [rows[i] for i in ids]


def signals_per_event(db):
    with db.read() as s:
        return dict(s.execute(select(SignalRow.event_id, func.count()).group_by(SignalRow.event_id)).all())


def table_counts(db):
    with db.read() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m))
            for m in (AuditEntry, Evaluation, OutboxAction, Timer, SignalRow, InboxEvent)
        }


def _trigger(trigger, pos):
    kind, _, ref = trigger.partition(":")
    return (kind, pos.get(int(ref), ref)) if kind == "event" and ref.isdigit() else trigger


def history(c, rid, version, ids):
    """What a release went through, with event ids replaced by their position in `ids` and the version
    by 'V', so two releases fed the same script compare equal."""
    pos = {eid: i for i, eid in enumerate(ids)}
    with c.db.read() as s:
        audit = [
            (a.kind, a.actor, a.from_stage, a.to_stage, a.reason.replace(version, "V"), pos.get(a.event_id, a.event_id))
            for a in s.scalars(select(AuditEntry).where(AuditEntry.release_id == rid).order_by(AuditEntry.id))
        ]
        signals = [
            (r.name, r.value, r.samples, r.sha, r.source, pos.get(r.event_id))
            for r in s.scalars(select(SignalRow).where(SignalRow.release_id == rid).order_by(SignalRow.id))
        ]
        evaluations = [
            (e.stage, e.transition, e.verdict, _trigger(e.trigger, pos))
            for e in s.scalars(select(Evaluation).where(Evaluation.release_id == rid).order_by(Evaluation.id))
        ]
        outbox = [
            (o.action, o.params.get("stage"), o.params.get("event"))
            for o in s.scalars(select(OutboxAction).where(OutboxAction.release_id == rid).order_by(OutboxAction.id))
        ]
        release = s.get(Release, rid)
        state = (release.stage, release.head_sha, release.halted_from, [cm["sha"] for cm in release.unreviewed_commits])
    return {"state": state, "audit": audit, "signals": signals, "evaluations": evaluations, "outbox": outbox}


def outcomes(db, ids):
    return [(r.status, r.note.replace("9.1.0", "9.0.0") if r.note else r.note) for r in inbox(db, ids)]


# ---------------------------------------------------------------------------------------------- batch == one by one


def script(version):
    """From trunk: cut, CI, a push with an unmarked commit, a failed and a fixed build, a ping."""
    fix = CommitInfo(sha="s2", message="Fix crash\n\nRelease-Fix: critical", author="dana")
    sneaky = CommitInfo(sha="s3", message="New onboarding", author="eve")
    return [
        ev(version, kind="branch_created", sha="s1"),
        ev(version, kind="build_finished", signals=sig("build_green", 1.0)),
        ev(version, kind="tests_finished", signals=[*sig("tests_pass_rate", 1.0, 900), *sig("tests_total", 900)]),
        ev(version, kind="branch_push", sha="s3", commits=[fix, sneaky]),
        ev(version, kind="ping"),
        ev(version, kind="build_finished", sha="s3", signals=sig("build_green", 0.0)),
        ev(version, kind="build_finished", sha="s3", signals=sig("build_green", 1.0)),
        ev(version, signals=sig("open_blockers", 0)),
    ]


def test_a_batch_ends_where_one_by_one_ends(conductor):
    one = conductor.start_release("music-android", "9.0.0", RM)
    batch = conductor.start_release("music-android", "9.1.0", RM)
    one_ids = store(conductor, script("9.0.0"))
    batch_ids = store(conductor, script("9.1.0"))

    one_statuses = [apply_event(conductor, i) for i in one_ids]
    batch_statuses = process_events(conductor, list(reversed(batch_ids))).statuses  # applied in id order whatever the order given

    assert sorted(batch_statuses) == batch_ids
    assert [batch_statuses[i] for i in batch_ids] == one_statuses
    assert one_statuses == ["processed"] * 4 + ["ignored"] + ["processed"] * 3
    assert outcomes(conductor.db, batch_ids) == outcomes(conductor.db, one_ids)
    a, b = history(conductor, one, "9.0.0", one_ids), history(conductor, batch, "9.1.0", batch_ids)
    assert b["state"] == a["state"] == ("nightly", "s3", None, ["s3"])
    assert b["audit"] == a["audit"]
    assert b["signals"] == a["signals"]
    assert b["evaluations"] == a["evaluations"]
    assert b["outbox"] == a["outbox"]
    # The script really went somewhere: a cut, a transition, a push needing a human, a failed build held.
    kinds = [k for k, *_ in b["audit"]]
    assert [k for k in kinds if k != "signals_recorded"][:3] == ["release_started", "transitioned", "transitioned"]
    assert kinds.count("signals_recorded") == 5  # one per event that carried a signal of the pipeline
    assert "unreviewed_change" in kinds and "held" in kinds
    held = next(x for x in b["audit"] if x[0] == "held")
    assert held[-1] == 5  # written while applying the failed build, the sixth event of the batch
    with conductor.db.read() as s:
        assert s.scalars(select(InboxEvent.release_id).where(InboxEvent.id == batch_ids[0])).one() == batch


# ---------------------------------------------------------------------------------------------- order inside a batch


def _feed_ci(c, rids):
    for rid in rids:
        c.record_signal(rid, "build_green", True, source="ci")
        c.record_signal(rid, "tests_pass_rate", 1.0, samples=900, source="junit")


def _feed_ring(c, rids, crash=99.8):
    for rid in rids:
        c.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)
        c.record_signal(rid, "crash_free_sessions", crash, samples=40000, source="crashlytics", evaluate=False)
        c.record_signal(rid, "anr_rate", 0.2, samples=40000, source="vitals", evaluate=False)
        c.record_signal(rid, "active_users", 9000, source="analytics", evaluate=False)
        c.evaluate(rid)


def to_rollout_1(c, clock, rids):
    """test_service.to_beta + beta_ready, for several releases in lockstep (they share the clock)."""
    clock.now = BRANCH_DAY
    c.tick()
    _feed_ci(c, rids)
    clock.advance(timedelta(hours=12))
    for rid in rids:
        c.record_signal(rid, "open_blockers", 0, source="jira")
    c.tick()
    assert {stage_of(c, r) for r in rids} == {"alpha"}
    clock.advance(timedelta(days=1))
    _feed_ci(c, rids)
    _feed_ring(c, rids)
    assert {stage_of(c, r) for r in rids} == {"beta"}
    for rid in rids:
        for t in TEAMS:
            c.sign_off(rid, t, Actor(f"{t}-lead", "team"))
    clock.advance(timedelta(days=2))
    _feed_ci(c, rids)
    _feed_ring(c, rids)
    assert {stage_of(c, r) for r in rids} == {"rollout_1"}


def test_a_bad_value_followed_by_a_good_one_in_one_batch_still_halts(conductor, clock):
    one = conductor.start_release("music-android", "9.0.0", RM)
    batch = conductor.start_release("music-android", "9.1.0", RM)
    to_rollout_1(conductor, clock, [one, batch])
    clock.advance(timedelta(hours=3))

    def crash_then_recovery(version):
        return [ev(version, signals=sig("crash_free_sessions", 98.1, 40000)), ev(version, signals=sig("crash_free_sessions", 99.9, 40000))]

    one_ids = store(conductor, crash_then_recovery("9.0.0"))
    batch_ids = store(conductor, crash_then_recovery("9.1.0"))
    assert [apply_event(conductor, i) for i in one_ids] == ["processed", "processed"]
    assert process_events(conductor, batch_ids).statuses == {batch_ids[0]: "processed", batch_ids[1]: "processed"}

    for rid, ids in ((one, one_ids), (batch, batch_ids)):
        snap = conductor.snapshot(rid)
        assert (snap.release.stage, snap.release.halted_from) == ("halted", "rollout_1")
        halted = [a for a in snap.audit if a.kind == "halted"]
        assert len(halted) == 1 and halted[0].event_id == ids[0] and "crash_free" in halted[0].reason
        assert [o.action for o in snap.outbox if o.action == "halt_rollout"] == ["halt_rollout"]
    # The recovery value was still recorded (after the halt), it just does not un-halt the release.
    assert signals_per_event(conductor.db)[batch_ids[1]] == 1
    a, b = history(conductor, one, "9.0.0", one_ids), history(conductor, batch, "9.1.0", batch_ids)
    assert b["audit"] == a["audit"] and b["evaluations"] == a["evaluations"] and b["outbox"] == a["outbox"]


# ---------------------------------------------------------------------------------------------- bad data, repeats


def test_one_bad_event_fails_alone_and_the_rest_is_applied_once(conductor, release):
    ids = store(
        conductor,
        [
            ev(kind="build_finished", signals=sig("build_green", 1.0)),
            ev(signals=sig("open_blockers", 0)),
            ev(signals=sig("crash_free_sessions", 150.0, 40000)),  # a percent above 100: bad data
            ev(kind="tests_finished", signals=sig("tests_pass_rate", 1.0, 900)),
            ev(signals=sig("anr_rate", 0.2, 40000)),
        ],
    )
    bad = ids[2]
    result = process_events(conductor, ids).statuses
    assert result == {i: ("failed" if i == bad else "processed") for i in ids}
    rows = inbox(conductor.db, ids)
    failed = rows[2]
    assert failed.status == "failed" and "crash_free_sessions" in failed.note and "outside 0..100" in failed.note
    assert failed.release_id is None and failed.attempts == 1
    assert [(r.status, r.release_id, r.attempts) for r in rows if r.id != bad] == [("processed", release, 1)] * 4
    assert signals_per_event(conductor.db) == {i: 1 for i in ids if i != bad}
    snap = conductor.snapshot(release)
    assert snap.release.stage == "nightly"
    assert [(a.kind, a.to_stage) for a in snap.audit if a.kind == "transitioned"] == [
        ("transitioned", "branch"),
        ("transitioned", "nightly"),
    ]
    assert next(a for a in snap.audit if a.to_stage == "nightly").event_id == ids[3]
    assert [o.action for o in snap.outbox] == ["cut_branch", "distribute"]


def test_an_already_processed_and_a_repeated_id_are_not_applied_again(conductor, clock, release):
    first = store(conductor, [ev(kind="build_finished", signals=sig("build_green", 1.0))])[0]
    assert apply_event(conductor, first) == "processed"
    before = inbox(conductor.db, [first])[0]
    with conductor.db.read() as s:
        audit_of_first = s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.event_id == first))
    clock.advance(timedelta(minutes=5))
    second, third = store(
        conductor,
        [
            ev(kind="tests_finished", signals=sig("tests_pass_rate", 1.0, 900)),
            ev(signals=sig("open_blockers", 0)),
        ],
    )

    result = process_events(conductor, [second, first, second, third, second]).statuses
    assert result == {first: "processed", second: "processed", third: "processed"}
    after = inbox(conductor.db, [first])[0]
    assert (after.status, after.attempts, after.processed_at, after.note, after.release_id) == (
        before.status,
        before.attempts,
        before.processed_at,
        before.note,
        before.release_id,
    )
    assert [r.attempts for r in inbox(conductor.db, [second, third])] == [1, 1]
    assert signals_per_event(conductor.db) == {first: 1, second: 1, third: 1}
    with conductor.db.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.event_id == first)) == audit_of_first
        nightly = s.scalars(select(AuditEntry).where(AuditEntry.kind == "transitioned", AuditEntry.to_stage == "nightly")).all()
        assert [a.event_id for a in nightly] == [second]
    # The same batch again (a redelivered task) changes nothing at all.
    counts = table_counts(conductor.db)
    assert process_events(conductor, [first, second, third]).statuses == result
    assert table_counts(conductor.db) == counts


def test_a_batch_over_several_releases_and_unmatched_branches(conductor, clock):
    a = conductor.start_release("music-android", "9.0.0", RM)
    b = conductor.start_release("music-android", "9.1.0", RM)
    clock.now = BRANCH_DAY
    conductor.tick()
    events = {
        "a_build": ev("9.0.0", kind="build_finished", signals=sig("build_green", 1.0)),
        "b_build": ev("9.1.0", kind="build_finished", signals=sig("build_green", 1.0)),
        "not_started": ev("7.0.0", signals=sig("build_green", 1.0)),
        "main": ev(branch="main", signals=sig("build_green", 1.0)),
        "other_repo": ev(repo="acme/other", signals=sig("build_green", 1.0)),
        "ping": ev(kind="ping"),
        "a_tests": ev("9.0.0", kind="tests_finished", signals=sig("tests_pass_rate", 1.0, 900)),
    }
    ids = dict(zip(events, store(conductor, events.values()), strict=True))
    result = process_events(conductor, list(ids.values())).statuses
    got = {
        name: (result[i], r.note, r.release_id) for (name, i), r in zip(ids.items(), inbox(conductor.db, list(ids.values())), strict=True)
    }
    assert got["a_build"] == ("processed", None, a)
    assert got["b_build"] == ("processed", None, b)
    assert got["a_tests"] == ("processed", None, a)
    assert got["ping"] == ("ignored", "ping", None)
    assert got["not_started"][0] == "unmatched" and "release 7.0.0 of music-android, which was not started" in got["not_started"][1]
    assert got["main"][0] == "unmatched" and "branch main matches no release branch pattern" in got["main"][1]
    assert got["other_repo"][0] == "unmatched" and "no track for repository acme/other" in got["other_repo"][1]
    assert all(r.status == result[r.id] for r in inbox(conductor.db, list(ids.values())))
    with conductor.db.read() as s:
        per_release = dict(s.execute(select(SignalRow.release_id, func.count()).group_by(SignalRow.release_id)).all())
    assert per_release == {a: 2, b: 1}
    assert (stage_of(conductor, a), stage_of(conductor, b)) == ("nightly", "branch")


def run_while_locked(database, table: str, row_id: int, fn):
    """Run fn in a thread while another transaction holds a row lock on table.row_id (released
    after at most 5 s); returns (whether fn was still waiting after 5 s, fn's result)."""
    holder = database.engine.connect()
    tx = holder.begin()
    holder.execute(text(f"SELECT id FROM {table} WHERE id = :i FOR UPDATE"), {"i": row_id})
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(result=fn()), daemon=True)
    try:
        worker.start()
        worker.join(5)
        blocked = worker.is_alive()
    finally:
        tx.rollback()
        holder.close()
        worker.join(5)
    return blocked, out.get("result")


# SKIP LOCKED is PostgreSQL's; SQLite has one writer, so there is nothing to skip there.
@pytest.mark.parametrize("database", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_an_event_another_transaction_holds_is_skipped_not_waited_for(conductor, database, release):
    ids = store(
        conductor,
        [
            ev(kind="build_finished", signals=sig("build_green", 1.0)),
            ev(signals=sig("open_blockers", 0)),
            ev(kind="tests_finished", signals=sig("tests_pass_rate", 1.0, 900)),
        ],
    )
    held = ids[1]
    blocked, result = run_while_locked(database, "inbox", held, lambda: process_events(conductor, ids).statuses)
    assert not blocked, "process_events waited for the row another transaction holds"
    assert result == {ids[0]: "processed", held: "pending", ids[2]: "processed"}
    assert [r.status for r in inbox(database, ids)] == ["processed", "pending", "processed"]
    assert apply_event(conductor, held) == "processed"
    assert signals_per_event(database) == {i: 1 for i in ids}


@pytest.mark.parametrize("database", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_events_of_a_release_another_worker_holds_are_applied_after_the_rest_in_order(conductor, database, release):
    """Two workers with overlapping batches run side by side: a batch first applies (and commits)
    what does not need a release another transaction holds, then waits for that release and
    applies its events in id order, in the same job (not at the back of the queue, where later
    events of that release could overtake them)."""
    other = conductor.start_release("music-android", "9.1.0", RM)
    ids = store(
        conductor,
        [
            ev("9.0.0", kind="branch_push", sha="AAA"),
            ev("9.1.0", signals=sig("open_blockers", 0)),
            ev("9.0.0", kind="branch_push", sha="BBB"),
        ],
    )
    rec = Recorder(conductor)
    holder = database.engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT id FROM releases WHERE id = :i FOR UPDATE"), {"i": release})
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(result=handle_events(rec.runtime, ids)), daemon=True)
    try:
        worker.start()
        deadline = time.monotonic() + 5
        while inbox(database, [ids[1]])[0].status != "processed" and time.monotonic() < deadline:
            time.sleep(0.05)
        # The other release's event is committed while the held release's events wait.
        assert [r.status for r in inbox(database, ids)] == ["pending", "processed", "pending"]
        assert worker.is_alive(), "the held release's events were not waited for"
    finally:
        tx.rollback()
        holder.close()
        worker.join(5)
    assert out["result"] == {"processed": 3}
    assert [r.status for r in inbox(database, ids)] == ["processed", "processed", "processed"]
    with database.read() as s:
        assert s.get(Release, release).head_sha == "BBB"  # the later push is the head, as sent
    assert stage_of(conductor, other) == "trunk"
    assert rec.sent == []


# ---------------------------------------------------------------------------------------------- jobs


class Done:
    def __init__(self):
        self.calls = []

    def run(self, req):
        self.calls.append(req)
        return ActionOutcome("done", "ok")


class Recorder:
    """A dispatcher that writes down what it was asked to run; `drain()` runs it, like a worker."""

    def __init__(self, conductor):
        self.sent: list[tuple[str, tuple]] = []
        self.done = Done()
        adapters = ActionAdapters(
            httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
            {"cut_branch": self.done, "distribute": self.done, "notify": self.done},
        )
        self.runtime = Runtime(conductor, self, adapters)

    def submit(self, task, *args):
        self.sent.append((task, args))

    def event_stored(self, event_id):
        self.submit(TASK_PROCESS_EVENTS, [event_id])

    def drain(self):
        while self.sent:
            task, args = self.sent.pop(0)
            run_job(self.runtime, task, *args)


def outbox_ids(db, rid, action):
    with db.read() as s:
        return list(s.scalars(select(OutboxAction.id).where(OutboxAction.release_id == rid, OutboxAction.action == action)))


def outbox_status(db, rid):
    with db.read() as s:
        return {o.action: o.status for o in s.scalars(select(OutboxAction).where(OutboxAction.release_id == rid))}


def test_handle_events_relays_the_actions_the_batch_queued_and_only_those(conductor):
    rec = Recorder(conductor)
    a = conductor.start_release("music-android", "9.0.0", RM)
    b = conductor.start_release("music-android", "9.1.0", RM)
    other = conductor.start_release("music-android", "9.2.0", RM)
    # Another release's action is queued and due, but it belongs to no event of the batch.
    assert apply_event(conductor, store(conductor, [ev("9.2.0", kind="branch_created")])[0]) == "processed"
    ids = store(
        conductor,
        [
            ev("9.0.0", kind="branch_created"),
            ev("9.1.0", kind="branch_created"),
            ev("9.0.0", kind="build_finished", signals=sig("build_green", 1.0)),
        ],
    )

    assert handle_events(rec.runtime, ids) == {"processed": 3}
    assert sorted(rec.sent) == sorted(
        (TASK_RUN_ACTION, (i,)) for i in outbox_ids(conductor.db, a, "cut_branch") + outbox_ids(conductor.db, b, "cut_branch")
    )
    assert len(rec.sent) == 2
    rec.drain()
    assert outbox_status(conductor.db, a) == {"cut_branch": "done"} and outbox_status(conductor.db, b) == {"cut_branch": "done"}
    assert outbox_status(conductor.db, other) == {"cut_branch": "pending"}
    assert len(rec.done.calls) == 2

    # A batch that falls back to one-by-one (one bad event) still relays what the good ones queued.
    ids = store(
        conductor,
        [
            ev("9.0.0", kind="tests_finished", signals=sig("tests_pass_rate", 1.0, 900)),
            ev("9.1.0", signals=sig("tests_pass_rate", 7.0, 900)),
        ],
    )
    assert handle_events(rec.runtime, ids) == {"processed": 1, "failed": 1}
    assert rec.sent == [(TASK_RUN_ACTION, (outbox_ids(conductor.db, a, "distribute")[0],))]
    rec.drain()
    assert outbox_status(conductor.db, a) == {"cut_branch": "done", "distribute": "done"}
    assert [r.status for r in inbox(conductor.db, ids)] == ["processed", "failed"]


def test_giving_up_on_a_batch_resends_each_event_alone(conductor, release):
    rec = Recorder(conductor)
    ids = store(
        conductor,
        [
            ev(kind="build_finished", signals=sig("build_green", 1.0)),
            ev(signals=sig("open_blockers", 0)),
            ev(kind="tests_finished", signals=sig("tests_pass_rate", 1.0, 900)),
        ],
    )
    gave_up(rec.runtime, TASK_PROCESS_EVENTS, (ids,), "WorkerLostError: worker exited")
    assert rec.sent == [(TASK_PROCESS_EVENTS, ([i],)) for i in ids]
    assert [r.status for r in inbox(conductor.db, ids)] == ["pending"] * 3  # nobody marked failed for the batch
    rec.sent.clear()

    # A batch of one is that event: it is marked failed, with the reason, and not resent.
    gave_up(rec.runtime, TASK_PROCESS_EVENTS, ([ids[1]],), "poison: KeyError")
    assert rec.sent == []
    poisoned = inbox(conductor.db, [ids[1]])[0]
    assert (poisoned.status, poisoned.note) == ("failed", "poison: KeyError")

    for i in ids:
        rec.submit(TASK_PROCESS_EVENTS, [i])
    rec.drain()
    assert [r.status for r in inbox(conductor.db, ids)] == ["processed", "failed", "processed"]
    assert stage_of(conductor, release) == "nightly"


def test_the_sweeper_resends_pending_events_in_batches(conductor, clock, release, monkeypatch):
    rec = Recorder(conductor)
    monkeypatch.setattr(jobs, "SWEEP_BATCH", 2)
    ids = store(conductor, [ev(signals=sig("open_blockers", 0)) for _ in range(5)])
    clock.advance(rec.runtime.sweep_grace)
    assert sweep_events(rec.runtime) == 5
    assert rec.sent == [(TASK_PROCESS_EVENTS, (ids[0:2],)), (TASK_PROCESS_EVENTS, (ids[2:4],)), (TASK_PROCESS_EVENTS, (ids[4:],))]
    rec.drain()
    assert Counter(r.status for r in inbox(conductor.db, ids)) == {"processed": 5}
    assert signals_per_event(conductor.db) == {i: 1 for i in ids}
