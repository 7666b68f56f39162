"""Quiet hours on a track: at night the robot takes no move beyond the budget; the move waits for
the morning window (a timer) and the card says so; in the morning it goes on by itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conductor.domain.errors import InvalidSettings
from conductor.service import Actor

RM = Actor("rita", "release_manager")
ADMIN = Actor("ada", "admin")
UTC_ZONE = ZoneInfo("UTC")  # the trial pipeline's time zone


def feed(c, rid, crash=99.8):
    c.record_signal(rid, "build_green", True, source="ci")
    c.record_signal(rid, "tests_pass_rate", 1.0, samples=400, source="ci")
    c.record_signal(rid, "crash_free_sessions", crash, samples=20_000, source="sentry")


def test_the_move_beyond_the_night_budget_waits_for_the_morning(conductor, clock):
    from conductor.service.tracks import set_night

    conductor.ensure_track("shop", "trial")
    shown = set_night(conductor, "shop", ADMIN, {"quiet_hours": "22:00-07:00", "up_to_stage": "rollout_10"})
    assert shown == "quiet hours 22:00-07:00, up to rollout_10 (UTC)"
    clock.now = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    rid = conductor.start_release("shop", "1.0", RM)
    feed(conductor, rid)
    conductor.sign_off(rid, "qa", Actor("quinn", "team"))
    clock.advance(timedelta(minutes=2))
    conductor.tick()
    assert conductor.snapshot(rid).release.stage == "rollout_10"  # 21:02: not night yet, within the budget anyway
    clock.now = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    feed(conductor, rid, crash=99.9)
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "rollout_10"
    assert snap.waiting_for == "waiting for the morning window (quiet hours 22:00-07:00, up to rollout_10, UTC)"
    assert "waiting for the morning window" in snap.latest.evidence["summary"]
    clock.now = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    conductor.tick()
    assert conductor.snapshot(rid).release.stage == "rollout_100"


def test_a_night_policy_is_checked_when_it_is_set(conductor):
    from conductor.service.tracks import set_night

    with pytest.raises(InvalidSettings, match="no stage 'rollout_5'"):
        set_night(conductor, "music-android", ADMIN, {"quiet_hours": "22:00-07:00", "up_to_stage": "rollout_5"})
    with pytest.raises(InvalidSettings, match="HH:MM-HH:MM"):
        set_night(conductor, "music-android", ADMIN, {"quiet_hours": "after dinner"})
    assert set_night(conductor, "music-android", ADMIN, None) is None
