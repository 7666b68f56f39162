"""Quiet hours and freezes: only moves that raise user exposure are held back, until when."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conductor.domain.decisions import Verdict, decide
from conductor.domain.gates import GateContext, SignalValue
from conductor.domain.kinds import WaitKind
from conductor.domain.loader import load_pipeline
from conductor.domain.policy import Freeze, NightPolicy, Policy, exposure, raises_exposure

MOBILE = load_pipeline(Path(__file__).resolve().parents[1] / "fixtures" / "definitions" / "mobile_weekly.yaml")  # fixed bands
STOCKHOLM = ZoneInfo("Europe/Stockholm")


def test_exposure_of_stages():
    assert [exposure(MOBILE, s) for s in ("branch", "beta", "rollout_1", "rollout_100", "released")] == [0, 0, 1, 100, 100]
    assert raises_exposure(MOBILE, MOBILE.advance_from("beta")) and raises_exposure(MOBILE, MOBILE.advance_from("rollout_1"))
    assert not raises_exposure(MOBILE, MOBILE.advance_from("alpha")) and not raises_exposure(MOBILE, MOBILE.advance_from("rollout_100"))


@pytest.mark.parametrize(
    ("local", "until"),
    [
        ("2026-11-30 23:10", "2026-12-01 07:00"),  # the evening part: until tomorrow morning
        ("2026-12-01 03:00", "2026-12-01 07:00"),  # after midnight
        ("2026-12-01 07:00", None),  # the window has ended
        ("2026-12-01 12:00", None),
        ("2026-03-29 01:30", "2026-03-29 07:00"),  # the night clocks go forward (02:00 -> 03:00)
    ],
)
def test_quiet_hours_across_midnight_and_dst(local, until):
    night = NightPolicy(quiet_hours="22:00-07:00", up_to_stage="rollout_1")
    now = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=STOCKHOLM)
    got = night.quiet_until(now.astimezone(UTC), STOCKHOLM)
    assert (got.astimezone(STOCKHOLM).strftime("%Y-%m-%d %H:%M") if got else None) == until


def test_the_budget_by_stage_or_share():
    assert NightPolicy(quiet_hours="22:00-07:00", up_to_stage="rollout_1").allows(MOBILE, "rollout_1")
    assert not NightPolicy(quiet_hours="22:00-07:00", up_to_stage="rollout_1").allows(MOBILE, "rollout_100")
    assert NightPolicy(quiet_hours="22:00-07:00", up_to_percent=5).allows(MOBILE, "rollout_1")
    assert not NightPolicy(quiet_hours="22:00-07:00").allows(MOBILE, "rollout_1")  # no budget: no new exposure
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        NightPolicy(quiet_hours="late")


def ready(now):
    s = lambda name, v, n=None: SignalValue(name, v, now - timedelta(minutes=5), "test", n)  # noqa: E731
    return {"open_blockers": s("open_blockers", 0), "crash_free_sessions": s("crash_free_sessions", 99.9, 500_000),
            "anr_rate": s("anr_rate", 0.1, 500_000), "active_users": s("active_users", 90_000)}  # fmt: skip


def test_at_night_the_move_beyond_the_budget_waits_for_the_morning_and_a_halt_does_not():
    entered = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    at_night = datetime(2026, 11, 30, 23, 30, tzinfo=STOCKHOLM).astimezone(UTC)
    policy = Policy(night=NightPolicy(quiet_hours="22:00-07:00", up_to_stage="rollout_1"))
    assert decide(MOBILE, "rollout_1", GateContext(at_night, entered, None, ready(at_night))).verdict is Verdict.ADVANCE
    d = decide(MOBILE, "rollout_1", GateContext(at_night, entered, None, ready(at_night)), policy=policy)
    assert (d.verdict, d.wait) == (Verdict.WAIT, WaitKind.NIGHT) and d.summary.startswith("waiting for the morning window")
    assert d.wait_until == datetime(2026, 12, 1, 7, 0, tzinfo=STOCKHOLM)
    bad = ready(at_night) | {"crash_free_sessions": SignalValue("crash_free_sessions", 97.0, at_night, "test", 500_000)}
    assert decide(MOBILE, "rollout_1", GateContext(at_night, entered, None, bad), policy=policy).verdict is Verdict.HALT


def test_policy_holds_only_exposure_raising_moves():
    t = datetime(2026, 11, 30, 23, 30, tzinfo=STOCKHOLM).astimezone(UTC)
    policy = Policy(night=NightPolicy(quiet_hours="22:00-07:00", up_to_stage="rollout_1"))
    held = policy.holds(MOBILE, MOBILE.advance_from("rollout_1"), t)
    assert held is not None and held[0].startswith("waiting for the morning window (quiet hours 22:00-07:00, up to rollout_1")
    assert held[1] == datetime(2026, 12, 1, 7, 0, tzinfo=STOCKHOLM) and held[2] == "night"
    assert policy.holds(MOBILE, MOBILE.advance_from("beta"), t) is None  # into rollout_1: within the budget
    assert policy.holds(MOBILE, MOBILE.advance_from("alpha"), t) is None  # no new users
    frozen = Policy(freezes=(Freeze("holiday code freeze", t - timedelta(hours=1), t + timedelta(days=2)),))
    why, until, kind = frozen.holds(MOBILE, MOBILE.advance_from("beta"), t)
    assert (why, until, kind) == ("frozen: holiday code freeze", t + timedelta(days=2), "freeze")
    assert (
        Policy(freezes=(Freeze("ended", t - timedelta(days=2), t - timedelta(days=1)),)).holds(MOBILE, MOBILE.advance_from("beta"), t)
        is None
    )
