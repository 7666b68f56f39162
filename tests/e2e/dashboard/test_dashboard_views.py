"""The read side behind the dashboard (conductor.read): how releases are classified,
what each one waits for, and the insights arithmetic. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conductor.read import board as read_board
from conductor.read import insights as read_insights
from conductor.read import page as read_page
from conductor.service import Actor
from tests.e2e.dashboard.conftest import drive_to_approval

RM = Actor("rita", "release_manager")
FRIDAY_5PM_CET = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)


def card_of(board, rid):
    return next(
        c for tb in board.tracks for view in ("production", "current", "upcoming", "finished") for c in getattr(tb, view) if c.id == rid
    )


def release_fully(c, clock, version):
    rid = c.start_release("app", version, RM)
    c.record_signal(rid, "build_green", True, source="ci")
    c.sign_off(rid, "qa", Actor("quinn"))
    c.record_signal(rid, "open_blockers", 0, source="jira")
    c.record_signal(rid, "crash_free_sessions", 99.9, samples=900, source="crashlytics")
    clock.advance(timedelta(hours=1))
    c.tick()
    return rid


@pytest.mark.parametrize(
    "at,expected",
    [
        (datetime(2026, 11, 28, 10, 0), datetime(2026, 11, 30, 9, 0)),  # Saturday -> Monday
        (datetime(2026, 11, 23, 8, 59), datetime(2026, 11, 23, 9, 0)),  # Monday before nine -> same morning
        (datetime(2026, 11, 23, 9, 0), datetime(2026, 11, 23, 9, 0)),
        (datetime(2026, 11, 23, 9, 1), datetime(2026, 11, 24, 9, 0)),
        (datetime(2026, 11, 27, 17, 0), datetime(2026, 11, 30, 9, 0)),  # Friday evening -> Monday
        (datetime(2026, 3, 27, 10, 0), datetime(2026, 3, 30, 9, 0)),  # across the switch to summer time
    ],
)
def test_next_working_morning_is_nine_on_a_weekday_in_the_track_zone(at, expected):
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Stockholm")
    got = read_insights.next_working_morning(at.replace(tzinfo=tz).astimezone(UTC), "Europe/Stockholm")
    assert got.astimezone(tz).replace(tzinfo=None) == expected


def test_board_classifies_every_release_and_says_what_it_waits_for(quick, clock):
    old = release_fully(quick, clock, "0.9")
    newest = release_fully(quick, clock, "1.0")
    approval = drive_to_approval(quick, clock, "1.1")
    held = quick.start_release("app", "1.3", RM)
    quick.record_signal(held, "build_green", True, source="ci")
    quick.record_signal(held, "open_blockers", 3, source="jira")
    upcoming = quick.start_release("app", "1.4", RM)
    cancelled = quick.start_release("app", "1.5", RM)
    quick.cancel(cancelled, RM, "wrong branch")
    halted = drive_to_approval(quick, clock, "1.6")
    quick.approve(halted, RM, "ok")
    quick.record_signal(halted, "crash_free_sessions", 98.0, samples=900, source="crashlytics")
    soaking = quick.start_release("app", "1.2", RM)
    quick.record_signal(soaking, "build_green", True, source="ci")

    board = read_board.board(quick)
    (tb,) = board.tracks
    assert [c.id for c in tb.production] == [halted, newest]  # rolling out or halted first, then the live version
    assert {c.id for c in tb.current} == {approval, soaking, held}
    assert [c.id for c in tb.upcoming] == [upcoming]
    assert {c.id for c in tb.finished} == {old, cancelled}
    assert [p.release_id for p in board.pending] == [approval]
    assert board.counts["releases"] == 8

    def waits(rid):
        w = card_of(board, rid).waiting
        return w.kind, w.text

    assert waits(approval) == ("approval", "approval to move to rollout")
    assert card_of(board, approval).pending.age == board.now - quick.snapshot(approval).pending.created_at
    kind, _ = waits(soaking)
    assert kind == "soak" and card_of(board, soaking).waiting.until == quick.snapshot(soaking).release.entered_stage_at + timedelta(hours=1)
    assert waits(held) == ("fix", "a fix for blockers")
    assert waits(upcoming) == ("signal", "signal: build_green (missing)")
    assert waits(halted)[0] == "human"
    assert waits(newest) == ("done", "nothing (released)")
    lights = {g.gate: g.outcome for g in card_of(board, approval).lights}
    assert lights == {"build": "pass", "qa": "pass", "crash": "inconclusive", "blockers": "pass"}
    assert {g.outcome for g in card_of(board, upcoming).lights} == {"inconclusive"}
    assert card_of(board, halted).stage_index == card_of(board, halted).stage_order.index("rollout")
    assert {g.gate: g.outcome for g in card_of(board, halted).lights}["crash"] == "fail"  # what halted it
    assert card_of(board, newest).lights == ()


def test_insights_count_hours_saved_against_the_next_working_morning(quick, clock):
    clock.now = FRIDAY_5PM_CET
    rid = quick.start_release("app", "1.0", RM)
    quick.record_signal(rid, "build_green", True, source="ci")  # branch -> beta at once, Friday 17:00 CET
    clock.advance(timedelta(minutes=30))
    quick.sign_off(rid, "qa", Actor("quinn"))
    quick.record_signal(rid, "open_blockers", 0, source="jira")
    quick.record_signal(rid, "crash_free_sessions", 99.9, samples=900, source="crashlytics")
    clock.advance(timedelta(minutes=30))
    quick.tick()  # soak over at 18:00 CET: beta -> rollout -> released
    assert quick.snapshot(rid).release.stage == "released"

    # A second release waits two hours for a human.
    other = drive_to_approval(quick, clock, "1.1")
    clock.advance(timedelta(hours=2))
    quick.approve(other, RM, "known")

    (t,) = read_insights.insights(quick)
    monday_9_cet = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    expected_saved = (monday_9_cet - FRIDAY_5PM_CET) + 2 * (monday_9_cet - (FRIDAY_5PM_CET + timedelta(hours=1)))
    assert t.robot_transitions == 4  # three for 1.0, branch -> beta for 1.1 (its approval is a human's move)
    saved_11 = read_insights.next_working_morning(quick.snapshot(other).audit[1].at, "Europe/Stockholm") - quick.snapshot(other).audit[1].at
    assert t.saved_total == expected_saved + saved_11
    assert (t.reached_full, t.ended_short, t.in_flight, t.share_full) == (2, 0, 0, 1.0)
    assert t.human_wait_total == timedelta(hours=2) and t.approvals_asked >= 1
    stage = {s.stage: s for s in t.stage_times}
    assert stage["branch"].median == timedelta(0) and stage["beta"].visits == 2
    assert stage["beta"].median == timedelta(hours=2)  # 1h and 3h (two of them waiting for a human)


def test_release_view_has_the_decision_card_and_signal_history(quick, clock):
    rid = drive_to_approval(quick, clock, "1.0")
    quick.record_signal(rid, "crash_free_sessions", None, source="crashlytics", error="timeout", evaluate=False)
    view = read_page.release_view(quick, rid)
    assert view.decision is not None and view.decision.pending
    crash = next(r for r in view.decision.rows if r.gate == "crash")
    assert (crash.value, crash.samples, crash.min_samples, crash.source, crash.max_age) == (
        99.2,
        500,
        100,
        "crashlytics",
        timedelta(hours=6),
    )
    assert crash.thresholds == "passes ≥ 99.5, fails ≤ 99" and crash.age == timedelta(0)
    qa = next(r for r in view.decision.rows if r.gate == "qa")
    assert qa.teams["qa"]["actor"] == "quinn"
    series = {s.name: s for s in view.signals}
    assert [p.value for p in series["crash_free_sessions"].points] == [99.2, None]
    assert ("crash pass", 99.5, "pass") in series["crash_free_sessions"].thresholds
    assert [stage for _, stage in view.stage_marks] == ["branch", "beta"]


def test_change_marks_move_with_the_release(quick, clock):
    rid = drive_to_approval(quick, clock, "1.0")
    before = read_board.change_marks(quick, rid)
    board_before = read_board.change_marks(quick)
    assert read_board.change_marks(quick, rid) == before
    quick.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)
    after = read_board.change_marks(quick, rid)
    # the intake is on the timeline; without an evaluation the decision stays as it was
    assert after["signals"] != before["signals"] and after["timeline"] != before["timeline"] and after["decision"] == before["decision"]
    quick.approve(rid, RM, "fine")
    after2 = read_board.change_marks(quick, rid)
    assert after2["stage"] == "rollout" and after2["timeline"] != after["timeline"]
    assert read_board.change_marks(quick) != board_before


def test_insights_count_a_halted_release_as_ended_and_a_question_asked_again_once(quick, clock):
    halted = drive_to_approval(quick, clock, "1.0")
    quick.approve(halted, RM, "grey but known")
    quick.record_signal(halted, "crash_free_sessions", 98.0, samples=900, source="crashlytics")
    assert quick.snapshot(halted).status == "halted"
    released = release_fully(quick, clock, "1.1")
    assert quick.snapshot(released).status == "released"

    asked = drive_to_approval(quick, clock, "1.2")
    first = quick.snapshot(asked).pending.fingerprint
    # The crash reporter fails (another question), then reports the same grey value: the first question again.
    quick.record_signal(asked, "crash_free_sessions", None, source="crashlytics", error="timeout")
    assert quick.snapshot(asked).pending.fingerprint != first
    quick.record_signal(asked, "crash_free_sessions", 99.2, samples=600, source="crashlytics")
    snap = quick.snapshot(asked)
    assert snap.pending.fingerprint == first
    assert [a.kind for a in snap.audit].count("approval_requested") == 3

    (t,) = read_insights.insights(quick)
    assert (t.reached_full, t.ended_short, t.halted, t.in_flight) == (1, 0, 1, 1)
    assert t.share_full == 0.5
    # 1.0: one question at beta, one at rollout (still grey there); 1.2: two distinct questions, one of them asked twice
    assert t.approvals_asked == 4


def test_insights_never_show_negative_durations_when_the_clock_is_behind_the_rows(quick, clock):
    """The demo's database is written on a simulated clock that ends in the future: a dashboard
    reading it now must not count open waits (or anything else) negative."""
    rid = drive_to_approval(quick, clock, "1.0")
    halted = drive_to_approval(quick, clock, "1.1")
    quick.approve(halted, RM, "ok")
    quick.record_signal(halted, "crash_free_sessions", 98.0, samples=900, source="crashlytics")
    clock.advance(timedelta(hours=3))
    quick.pause(rid, RM, "store outage")  # the newest audit row, 3h after the halt and 4h after the first question
    clock.now = clock.now - timedelta(days=2)

    (t,) = read_insights.insights(quick)
    assert t.human_wait_total == timedelta(hours=7)  # both waits counted up to the newest row, not to the clock
    assert all(w >= timedelta(0) for w in (t.human_wait_total, t.saved_total, *(s.median for s in t.stage_times)))
    assert t.human_wait_median is not None and t.human_wait_median > timedelta(0)
    board = read_board.board(quick)
    assert board.now > clock.now and all(card_of(board, r).time_in_stage >= timedelta(0) for r in (rid, halted))
    assert card_of(board, halted).waiting.since is not None and board.now - card_of(board, halted).waiting.since == timedelta(hours=3)
    view = read_page.release_view(quick, rid)
    assert view.now == board.now and view.card.time_in_stage == timedelta(hours=5)  # in beta since an hour before the question


def test_the_timeline_shows_every_intake_of_signals_and_folds_runs(quick, clock):
    """CLI and webhook signals never reached the timeline (only REST batches wrote an audit row)."""
    from conductor.service.inbox import store_event
    from conductor.service.signals import record_signals
    from conductor.sources.events import InboundEvent, SignalIn
    from tests.conftest import apply_event

    quick.ensure_track("web", "quick", repository="acme/web")
    rid = quick.start_release("web", "2.0", RM)
    event = InboundEvent(source="github", delivery_id="d-1", kind="build_finished", raw_type="workflow_run", repository="acme/web",
                         branch="release/2.0", sha="abc1234", signals=[SignalIn(name="build_green", value=1.0)])  # fmt: skip
    assert apply_event(quick, store_event(quick, event).event_id) == "processed"  # a webhook: branch -> beta
    quick.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)  # the CLI's path
    record_signals(quick, rid, [{"name": "crash_free_sessions", "value": 99.9, "samples": 900}], RM, source="api")  # REST
    quick.sign_off(rid, "qa", Actor("quinn"))

    view = read_page.release_view(quick, rid)
    intakes = [a for a in view.snapshot.audit if a.kind == "signals_recorded"]
    assert [(a.actor, a.reason) for a in intakes] == [
        ("github", "signals from github: build_green"),
        ("conductor", "signal from jira: open_blockers"),
        ("rita", "signals from api: crash_free_sessions"),
    ]
    kinds = [(item.kind, len(item.entries)) for item in view.timeline]
    # newest first; the two intakes in a row are one folded line, the webhook's stays on its own
    assert kinds == [("signed_off", 1), ("signals_recorded", 2), ("transitioned", 1), ("signals_recorded", 1), ("release_started", 1)]
    assert view.timeline[1].folded and view.timeline[1].latest.reason == "signals from api: crash_free_sessions"


def test_a_halted_or_held_release_says_why(quick, clock):
    halted = drive_to_approval(quick, clock, "1.0")
    quick.approve(halted, RM, "grey but known")
    quick.record_signal(halted, "crash_free_sessions", 98.4, samples=5000, source="crashlytics")
    held = quick.start_release("app", "1.1", RM)
    quick.record_signal(held, "build_green", True, source="ci")
    quick.record_signal(held, "open_blockers", 3, source="jira")
    waiting = drive_to_approval(quick, clock, "1.2")

    board = read_board.board(quick)
    assert card_of(board, halted).reason == "crash failed: 98.4 ≤ 99"
    assert card_of(board, held).reason == "blockers failed: 3 > 0"
    assert card_of(board, waiting).reason is None

    view = read_page.release_view(quick, halted)
    d = view.decision
    assert d is not None and d.kind == "halted" and not d.pending and d.evaluation.stage == "rollout"
    crash = next(r for r in d.rows if r.gate == "crash")
    assert (crash.outcome, crash.value, crash.thresholds, crash.detail) == ("fail", 98.4, "passes ≥ 99.5, fails ≤ 99", "98.4 ≤ 99")
    assert read_page.release_view(quick, held).decision.kind == "held"
    assert read_page.release_view(quick, waiting).decision.kind == "pending"


def test_a_track_whose_pipeline_moves_a_store_without_one_connected_says_so(conductor):
    from conductor.read.board import board
    from conductor.service.tracks import connect_store

    (tb,) = board(conductor).tracks
    assert tb.track == "music-android" and tb.store_connected is False  # mobile_weekly submits to the store
    play = {"kind": "play", "package": "com.acme.app", "credentials": {"env": "K"}}
    connect_store(conductor, "music-android", Actor("ada", "admin"), play)
    assert board(conductor).tracks[0].store_connected is True
