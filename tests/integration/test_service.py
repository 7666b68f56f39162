"""The service layer against a real database (SQLite and PostgreSQL), time moved by the clock."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from conductor.domain.errors import IllegalTransition, InvalidSignal, NotFound, NotPaused, StaleApproval
from conductor.service import Actor
from conductor.store.models import Approval, AuditEntry, Evaluation, OutboxAction, SignalRow, Timer

RM = Actor("rita", "release_manager")
TEAMS = ("playback", "search", "payments", "growth")
BRANCH_DAY = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def counts(db):
    with db.read() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m))
            for m in (AuditEntry, Evaluation, OutboxAction, Timer, SignalRow, Approval)
        }


def stage_of(c, rid):
    return c.snapshot(rid).release.stage


def feed_ci(c, rid, sha=None):
    c.record_signal(rid, "build_green", True, source="ci", sha=sha)
    c.record_signal(rid, "tests_pass_rate", 1.0, samples=900, source="junit", sha=sha)


def feed_ring(c, rid, crash=99.8, samples=40000, users=9000):
    c.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)
    c.record_signal(rid, "crash_free_sessions", crash, samples=samples, source="crashlytics", evaluate=False)
    c.record_signal(rid, "anr_rate", 0.2, samples=samples, source="vitals", evaluate=False)
    c.record_signal(rid, "active_users", users, source="analytics", evaluate=False)
    return c.evaluate(rid)


def to_beta(c, clock, rid):
    clock.now = BRANCH_DAY
    c.tick()
    feed_ci(c, rid)
    assert stage_of(c, rid) == "nightly"
    clock.advance(timedelta(hours=12))
    c.record_signal(rid, "open_blockers", 0, source="jira")
    c.tick()
    assert stage_of(c, rid) == "alpha"
    clock.advance(timedelta(days=1))
    feed_ci(c, rid)
    feed_ring(c, rid)
    assert stage_of(c, rid) == "beta"


def beta_ready(c, clock, rid, crash):
    for t in TEAMS:
        c.sign_off(rid, t, Actor(f"{t}-lead", "team"))
    clock.advance(timedelta(days=2))
    feed_ci(c, rid)
    return feed_ring(c, rid, crash=crash)


def unanswered_overnight(c, clock, version="9.0.0"):
    """A release asked about in beta (crash-free in the grey zone) whose question nobody answers:
    the same values again after 11 h, then the 12 h deadline passes (escalated, held). Returns the
    release id and the card that was asked."""
    rid = c.start_release("music-android", version, RM)
    to_beta(c, clock, rid)
    beta_ready(c, clock, rid, crash=99.3)
    asked = c.snapshot(rid).pending
    clock.advance(timedelta(hours=11))
    feed_ring(c, rid, crash=99.3)  # the same values again: the same question
    clock.advance(timedelta(hours=1))
    c.tick()
    return rid, asked


def test_start_pins_definition_and_waits_for_branch_day(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "trunk" and snap.status == "waiting"
    assert snap.timers[0].due_at == BRANCH_DAY
    assert [a.kind for a in snap.audit] == ["release_started"]
    clock.now = BRANCH_DAY - timedelta(minutes=1)
    assert conductor.tick() == 0
    clock.now = BRANCH_DAY
    assert conductor.tick() == 1
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "branch"
    assert [o.action for o in snap.outbox] == ["cut_branch"]
    assert snap.release.branch == "release/9.0.0"


def test_full_walk_with_grey_zone_approval(conductor, clock, database):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    d = beta_ready(conductor, clock, rid, crash=99.3)
    assert d.verdict.value == "ask"
    snap = conductor.snapshot(rid)
    assert snap.status == "awaiting_approval" and snap.pending is not None
    crash = next(g for g in snap.pending.evidence["gates"] if g["gate"] == "crash_free")
    assert crash["outcome"] == "inconclusive" and crash["reason"] == "grey_zone" and crash["inputs"]["value"] == 99.3
    stage = conductor.approve(rid, RM, "known OEM crash, within noise", evaluation_id=snap.pending.id, fingerprint=snap.pending.fingerprint)
    assert stage == "rollout_1"
    clock.advance(timedelta(days=1))
    feed_ring(conductor, rid)
    assert stage_of(conductor, rid) == "rollout_100"
    clock.advance(timedelta(days=1))
    feed_ring(conductor, rid)
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "released" and snap.status == "released"
    kinds = [a.kind for a in snap.audit]
    assert kinds.count("transitioned") == 7
    assert kinds.index("approval_requested") < kinds.index("approved")
    approved = next(a for a in snap.audit if a.kind == "approved")
    assert approved.actor == "rita" and approved.reason == "known OEM crash, within noise"
    actions = [o.action for o in snap.outbox]
    assert actions[:2] == ["cut_branch", "distribute"] and "set_rollout" in actions and actions[-1] == "notify"
    with database.read() as s:
        ap = s.scalars(select(Approval)).one()
        assert (ap.verdict, ap.fingerprint, ap.role) == (
            "approve",
            snap.audit[kinds.index("approved")].data.get("fp", ap.fingerprint),
            "release_manager",
        )


def test_stale_approval_is_refused_and_writes_nothing_of_its_own(conductor, clock, database):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    first = conductor.snapshot(rid).pending
    # The crash reporter now fails: another reason than the grey value asked about, a new question.
    conductor.record_signal(rid, "crash_free_sessions", None, error="crashlytics timed out", source="crashlytics")
    second = conductor.snapshot(rid).pending
    assert second.id != first.id and second.fingerprint != first.fingerprint
    before = counts(database)
    with pytest.raises(StaleApproval, match="superseded"):
        conductor.approve(rid, RM, "looks fine", evaluation_id=first.id)
    with pytest.raises(StaleApproval):
        conductor.approve(rid, RM, "looks fine", evaluation_id=second.id, fingerprint=first.fingerprint)
    assert counts(database) == before
    assert stage_of(conductor, rid) == "beta"
    assert conductor.approve(rid, RM, "fine", evaluation_id=second.id, fingerprint=second.fingerprint) == "rollout_1"


def test_fresher_evidence_refreshes_the_card_and_the_question_stays_open(conductor, clock):
    """One question per pause: hourly reports that stay in the grey zone refresh the card; they do
    not withdraw it and ask again, an approval of the first card still answers it, and the
    deadline counts from the first ask."""
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    first = conductor.snapshot(rid).pending
    audited = len(conductor.snapshot(rid).audit)
    for hour, value in enumerate((99.32, 99.28, 99.31), start=1):
        clock.advance(timedelta(hours=1))
        feed_ring(conductor, rid, crash=value, samples=40000 + 1000 * hour)
    snap = conductor.snapshot(rid)
    assert snap.pending.id != first.id and snap.pending.fingerprint == first.fingerprint
    assert snap.pending.evidence["gates"] != first.evidence["gates"]  # the card shows the fresher numbers
    since = [a.kind for a in snap.audit[audited:]]
    assert "approval_requested" not in since and "decision_withdrawn" not in since
    assert conductor.approve(rid, RM, "reviewed the grey crash rate", evaluation_id=first.id, fingerprint=first.fingerprint) == "rollout_1"


def test_the_approval_deadline_counts_from_the_first_ask(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    asked = conductor.snapshot(rid).pending.created_at
    for hour in range(1, 13):
        clock.advance(timedelta(hours=1))
        feed_ring(conductor, rid, crash=99.3 + hour / 1000, samples=40000 + 1000 * hour)  # every signal fresh, crash still grey
        conductor.tick()
    snap = conductor.snapshot(rid)
    escalated = [a for a in snap.audit if a.kind == "approval_escalated"]
    assert len(escalated) == 1 and escalated[0].at == asked + timedelta(hours=12)
    assert snap.pending is None and snap.status == "held"


def test_bad_crash_rate_halts_rollout_and_resume_needs_a_human(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.8)
    assert stage_of(conductor, rid) == "rollout_1"
    clock.advance(timedelta(hours=3))
    d = feed_ring(conductor, rid, crash=98.1)
    snap = conductor.snapshot(rid)
    assert d.verdict.value == "halt" and snap.release.stage == "halted" and snap.release.halted_from == "rollout_1"
    assert {"halt_rollout", "notify"} <= {o.action for o in snap.outbox}
    # Good data alone does not bring a halted release back.
    clock.advance(timedelta(days=2))
    feed_ring(conductor, rid, crash=99.9)
    conductor.tick()
    assert stage_of(conductor, rid) == "halted"
    assert conductor.resume(rid, RM, "fix shipped in 9.0.1 hotfix config") == "rollout_1"
    assert conductor.snapshot(rid).audit[-1].kind in ("resumed", "transitioned")


def test_reject_holds_before_the_store_and_halts_in_rollout(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    assert conductor.reject(rid, RM, "crash cluster is new") == "beta"
    snap = conductor.snapshot(rid)
    assert snap.pending is None and snap.audit[-1].kind == "rejected"
    # The same evidence is not asked about again.
    conductor.evaluate(rid)
    assert conductor.snapshot(rid).pending is None
    # Better evidence moves it on without a human.
    feed_ring(conductor, rid, crash=99.7)
    assert stage_of(conductor, rid) == "rollout_1"
    clock.advance(timedelta(days=1))
    feed_ring(conductor, rid, crash=99.2)  # grey at 1%
    pending = conductor.snapshot(rid).pending
    assert pending is not None
    assert conductor.reject(rid, RM, "not at 1%", evaluation_id=pending.id) == "halted"


def test_evaluate_is_idempotent(conductor, clock, database):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    before = counts(database)
    for _ in range(3):
        conductor.evaluate(rid)
        conductor.tick()
    assert counts(database) == before


def test_approval_deadline_escalates_and_holds(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    asked = conductor.snapshot(rid).pending
    clock.advance(timedelta(hours=11))
    feed_ring(conductor, rid, crash=99.3)  # the same values again: not new evidence
    assert conductor.snapshot(rid).pending.id == asked.id
    clock.advance(timedelta(hours=1))
    assert conductor.tick() >= 1
    snap = conductor.snapshot(rid)
    assert snap.pending is None and snap.release.stage == "beta"
    kinds = [a.kind for a in snap.audit]
    assert kinds[-2:] == ["approval_escalated", "held"]
    assert any(o.params.get("event") == "approval_escalated" for o in snap.outbox)


def test_an_escalated_question_can_still_be_answered_late(conductor, clock):
    """Asked at night, unanswered by the deadline, escalated and held: the release manager who
    comes in later approves it (naming the card they saw), as long as the question still stands."""
    rid, asked = unanswered_overnight(conductor, clock)
    held = conductor.snapshot(rid)
    assert held.pending is None and held.status == "held" and held.late is not None and held.late.fingerprint == asked.fingerprint
    assert "unanswered by its deadline" in held.waiting.text and held.late_decision is not None
    assert (
        conductor.approve(rid, RM, "read the crash clusters this morning", evaluation_id=asked.id, fingerprint=asked.fingerprint)
        == "rollout_1"
    )
    snap = conductor.snapshot(rid)
    assert snap.late is None and [a.kind for a in snap.audit if a.kind in ("approved", "transitioned")][-2:] == ["approved", "transitioned"]


def test_a_late_answer_is_refused_once_it_was_answered(conductor, clock):
    rid, asked = unanswered_overnight(conductor, clock)
    # A late rejection answers it: nothing is left to approve.
    assert conductor.reject(rid, RM, "the crash cluster is new") == "beta"
    assert conductor.snapshot(rid).late is None
    with pytest.raises(NotPaused):
        conductor.approve(rid, RM, "changed my mind", evaluation_id=asked.id)


def test_a_late_approval_is_refused_once_the_evidence_moved_on(conductor, clock):
    other, card = unanswered_overnight(conductor, clock)
    assert conductor.snapshot(other).late is not None
    feed_ring(conductor, other, crash=98.0, samples=90000)
    with pytest.raises(StaleApproval):
        conductor.approve(other, RM, "late", evaluation_id=card.id, fingerprint=card.fingerprint)
    assert stage_of(conductor, other) == "beta"


def test_bad_input_names_the_thing_and_writes_nothing(conductor, clock, database):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    before = counts(database)
    with pytest.raises(NotFound, match="music-android/1.0"):
        conductor.evaluate("music-android/1.0")
    with pytest.raises(NotFound):
        conductor.record_signal(999, "build_green", 1)
    with pytest.raises(InvalidSignal, match="'crash_free_sessions' is a percent"):
        conductor.record_signal(rid, "crash_free_sessions", 140)
    with pytest.raises(InvalidSignal, match="is a count"):
        conductor.record_signal(rid, "open_blockers", 1.5)
    with pytest.raises(InvalidSignal, match="not a number"):
        conductor.record_signal(rid, "anr_rate", "lots")
    with pytest.raises(InvalidSignal, match="unknown signal 'crashiness'"):
        conductor.record_signal(rid, "crashiness", 1)
    with pytest.raises(InvalidSignal, match="team 'qa'"):
        conductor.sign_off(rid, "qa", RM)
    with pytest.raises(NotPaused, match="not waiting for approval"):
        conductor.approve(rid, RM, "why not")
    with pytest.raises(NotPaused):
        conductor.resume(rid, RM, "nothing to resume")
    assert counts(database) == before


def test_pause_blocks_progress_until_resume(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    assert conductor.pause(rid, RM, "holiday freeze") is True
    assert conductor.pause(rid, RM, "again") is False
    clock.now = BRANCH_DAY
    conductor.tick()
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "trunk" and snap.status == "paused" and "holiday freeze" in snap.waiting_for
    assert conductor.resume(rid, RM, "freeze over") == "branch"


def test_cancel_from_any_live_stage_but_not_after_release(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    assert conductor.cancel(rid, RM, "superseded by 9.0.1") == "cancelled"
    assert conductor.cancel(rid, RM, "twice") == "cancelled"  # idempotent
    assert [a.kind for a in conductor.snapshot(rid).audit].count("cancelled") == 1
    with pytest.raises(IllegalTransition):
        conductor.pause(rid, RM, "too late")


def test_release_keeps_its_pinned_definition(conductor, clock, tmp_path, database):
    import shutil

    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from tests.conftest import DEFINITIONS

    rid = conductor.start_release("music-android", "9.0.0", RM)
    pinned = conductor.snapshot(rid).release.definition_hash
    # The definition file changes on disk: branch day moves and the crash gate tightens.
    d = tmp_path / "defs"
    shutil.copytree(DEFINITIONS, d)
    f = d / "mobile_weekly.yaml"
    f.write_text(f.read_text().replace('"0 10 * * FRI"', '"0 10 * * TUE"'))
    c2 = Conductor(database, DefinitionCatalog(d), clock)
    r2 = c2.start_release("music-android", "9.1.0", RM)
    assert c2.snapshot(r2).release.definition_hash != pinned
    clock.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # Tuesday 10:00 Stockholm
    c2.tick()
    assert stage_of(c2, r2) == "branch"
    assert stage_of(c2, rid) == "trunk"  # still on Friday's schedule


def test_second_release_of_same_version_is_refused(conductor):
    from conductor.domain.errors import AlreadyExists

    conductor.start_release("music-android", "9.0.0", RM)
    with pytest.raises(AlreadyExists):
        conductor.start_release("music-android", "9.0.0", RM)
    with pytest.raises(NotFound, match="unknown track"):
        conductor.start_release("music-ios", "9.0.0", RM)


def test_concurrent_writer_is_detected(conductor, database):
    from conductor.domain.errors import ConcurrentUpdate
    from conductor.service.step import ReleaseStep, lock_one

    rid = conductor.start_release("music-android", "9.0.0", RM)
    with database.begin() as conn:
        seen = lock_one(conn, rid, lock=False)  # what a slow writer read a moment ago
    conductor.pause(rid, RM, "someone else got there first")  # bumps the row's version
    with pytest.raises(ConcurrentUpdate):
        with database.begin() as conn:
            step = ReleaseStep(conn, seen, conductor.catalog.get("mobile_weekly"), conductor.clock)
            step.release.pause_reason = "lost update"
            step.save()
    assert conductor.snapshot(rid).release.pause_reason == "someone else got there first"


def test_system_clock_moved_by_time_machine(database, catalog):
    import time_machine

    from conductor.facade import Conductor

    with time_machine.travel(datetime(2026, 11, 24, 8, 0, tzinfo=UTC), tick=False) as traveller:
        c = Conductor(database, catalog)  # the real system clock
        c.ensure_track("desktop", "desktop")
        rid = c.start_release("desktop", "3.2", RM)
        assert stage_of(c, rid) == "main"
        traveller.move_to(datetime(2026, 11, 30, 13, 30, tzinfo=UTC))
        c.record_signal(rid, "build_green", 1)
        assert stage_of(c, rid) == "main"  # branch day not yet
        traveller.move_to(datetime(2026, 11, 30, 14, 0, tzinfo=UTC))  # Monday 09:00 New York
        c.tick()
        assert stage_of(c, rid) == "beta_channel"


def test_a_paused_rollout_still_halts_on_a_failed_gate_and_takes_no_step_forward(conductor, clock):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.8)
    assert stage_of(conductor, rid) == "rollout_1"
    conductor.pause(rid, RM, "store drift: someone changed the rollout in the console")
    clock.advance(timedelta(days=2))
    feed_ring(conductor, rid, crash=99.9)
    conductor.tick()
    assert stage_of(conductor, rid) == "rollout_1"  # good data: no step forward while paused
    feed_ring(conductor, rid, crash=97.0)
    snap = conductor.snapshot(rid)
    assert (snap.release.stage, snap.release.paused) == ("halted", False)
    halted = [a for a in snap.audit if a.kind == "halted"][-1]
    assert "while paused: store drift" in halted.reason
    assert conductor.resume(rid, RM, "rolled back the config") == "rollout_1"
