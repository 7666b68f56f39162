"""Freezes: while one covers a track no move that raises user exposure happens, by the robot or by
an approval; halts still do; lifting it lets what it held move on; a holiday skips the branch cut."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conductor.domain.errors import IllegalTransition, InvalidSettings
from conductor.service import Actor
from tests.integration.test_service import BRANCH_DAY, beta_ready, feed_ring, stage_of, to_beta

RM = Actor("rita", "release_manager")


def test_a_freeze_holds_the_move_into_the_store_and_an_unfreeze_lets_it_go(conductor, clock):
    from conductor.service.freezes import freeze, list_freezes, unfreeze

    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    fid = freeze(conductor, RM, "payments incident: stop the line", track="music-android")
    beta_ready(conductor, clock, rid, crash=99.8)
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "beta" and snap.waiting_for == "frozen: payments incident: stop the line"
    assert [f["id"] for f in list_freezes(conductor, "music-android")] == [fid]
    assert unfreeze(conductor, RM, "incident resolved", track="music-android") == 1
    assert stage_of(conductor, rid) == "rollout_1"  # re-judged at once
    kinds = [a.kind for a in conductor.snapshot(rid).audit]
    assert "transitioned" in kinds


def test_a_freeze_still_lets_a_bad_rollout_halt_and_refuses_an_approval_into_more_users(conductor, clock):
    from conductor.service.freezes import freeze

    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.8)
    assert stage_of(conductor, rid) == "rollout_1"
    freeze(conductor, RM, "company-wide freeze")  # every track
    clock.advance(timedelta(hours=3))
    feed_ring(conductor, rid, crash=97.0)
    assert stage_of(conductor, rid) == "halted"  # a halt lowers exposure: never held


def test_an_approval_into_more_users_is_refused_while_frozen(conductor, clock):
    from conductor.service.freezes import freeze

    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)  # grey: asks
    pending = conductor.snapshot(rid).pending
    assert pending is not None
    freeze(conductor, RM, "store review outage", track="music-android")
    with pytest.raises(IllegalTransition, match="is frozen .store review outage.: lift the freeze first"):
        conductor.approve(rid, RM, "looks fine", evaluation_id=pending.id)


def test_a_holiday_skips_the_branch_cut_and_a_calendar_is_checked(conductor, clock):
    from conductor.service.freezes import set_calendar

    counts = set_calendar(conductor, RM, {"timezone": "Europe/Stockholm", "holidays": [{"date": "2026-11-27", "reason": "team day"}]},
                          track="music-android")  # fmt: skip
    assert counts == {"freezes": 0, "holidays": 1, "blackouts": 0}
    rid = conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY  # Friday 27 Nov, 10:00 Stockholm: the holiday
    conductor.tick()
    assert stage_of(conductor, rid) == "trunk"
    assert conductor.snapshot(rid).latest.evidence["summary"] == "schedule until 2026-12-04T09:00:00+00:00"  # the next Friday
    clock.now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)  # the next Friday
    conductor.tick()
    assert stage_of(conductor, rid) == "branch"
    with pytest.raises(InvalidSettings, match="calendar: blackouts.0.days"):
        set_calendar(conductor, RM, {"blackouts": [{"days": ["FUNDAY"], "from": "15:00", "to": "24:00"}]}, track="music-android")


def test_skipping_the_next_branch_cut_moves_it_a_week_and_freezes_nothing(conductor, clock):
    from conductor.service.freezes import list_freezes, restore_cuts, skip_next_cut

    rid = conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY - timedelta(days=1)
    assert skip_next_cut(conductor, RM, "hack week", track="music-android") == BRANCH_DAY
    assert skip_next_cut(conductor, RM, "and the week after", track="music-android") == BRANCH_DAY + timedelta(days=7)
    assert restore_cuts(conductor, RM, "changed our minds about the second week", track="music-android") == 2
    assert skip_next_cut(conductor, RM, "hack week", track="music-android") == BRANCH_DAY
    clock.now = BRANCH_DAY
    conductor.tick()
    assert stage_of(conductor, rid) == "trunk"
    assert conductor.snapshot(rid).latest.evidence["summary"] == "schedule until 2026-12-04T09:00:00+00:00"
    # Nothing is frozen: the overview shows no freeze, even at the moment of the skipped cut.
    from conductor.read.board import board

    assert [f["source"] for f in list_freezes(conductor, "music-android")] == ["skip"]
    assert [tb.frozen for tb in board(conductor).tracks] == [()]
    kinds = [a.kind for a in conductor.snapshot(rid).audit]
    assert "branch_cut_skipped" not in kinds  # a track's row, not the release's
    clock.now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    conductor.tick()
    assert stage_of(conductor, rid) == "branch"


def test_skipping_a_cut_names_what_is_wrong(conductor, clock):
    from conductor.domain.errors import ConductorError, NotFound
    from conductor.service.freezes import skip_next_cut

    with pytest.raises(NotFound, match="unknown track 'web'"):
        skip_next_cut(conductor, RM, "x", track="web")
    with pytest.raises(ConductorError, match="needs a reason"):
        skip_next_cut(conductor, RM, " ", track="music-android")


def test_blackout_hours_hold_like_a_freeze(conductor, clock):
    from conductor.service.freezes import set_calendar

    set_calendar(conductor, RM, {"timezone": "UTC", "blackouts": [{"days": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
                                                                    "from": "00:00", "to": "24:00", "reason": "always, for the test"}]},
                 track="music-android")  # fmt: skip
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.8)
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "beta" and "blackout hours: always, for the test" in snap.waiting_for
