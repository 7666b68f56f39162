"""The shipped weekly train (state_definitions/mobile_weekly.yaml), as tuned on bench/decisions.py:
crash-free sessions and ANRs are compare gates against a baseline, with a fixed floor; CI gates
wait for reruns and do not age on the branch head."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from conductor.domain.decisions import Verdict, decide
from conductor.domain.gates import Baseline, GateContext, Reason, SignalValue, Signoff
from conductor.domain.loader import load_pipeline

SHIPPED = load_pipeline(Path(__file__).resolve().parents[2] / "state_definitions" / "mobile_weekly.yaml")
T0 = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # Monday 00:00 in Stockholm: beta entered
SIGNED = {t: Signoff(t, True, "lead", T0) for t in ("playback", "search", "payments", "growth")}


def rates(now, sessions, crash_free_pct, anr_pct):
    """Cumulative ring counts as a crash source reports them."""
    crash_free, anrs = round(sessions * crash_free_pct / 100), round(sessions * anr_pct / 100)
    return {
        "crash_free_sessions": SignalValue("crash_free_sessions", 100 * crash_free / sessions, now, "crashes", sessions, events=crash_free),
        "anr_rate": SignalValue("anr_rate", 100 * anrs / sessions, now, "vitals", sessions, events=anrs),
    }


def signals(now, sessions=600_000, crash_free_pct=99.65, anr_pct=0.23, tests=1.0, runs=1, sha="h1", ci_at=None):
    ci_at = ci_at or now - timedelta(hours=1)
    return {
        "build_green": SignalValue("build_green", 1.0, ci_at, "ci", sha=sha),
        "tests_pass_rate": SignalValue("tests_pass_rate", tests, ci_at, "junit", 2000, sha=sha, runs=runs),
        "open_blockers": SignalValue("open_blockers", 0, now, "jira"),
        "active_users": SignalValue("active_users", 8000, now, "analytics"),
        **rates(now, sessions, crash_free_pct, anr_pct),
    }


def baselines(sessions=700_000, crash_free_pct=99.65, anr_pct=0.23):
    prev = rates(T0 - timedelta(days=5), sessions, crash_free_pct, anr_pct)
    return {name: Baseline("music-android/8.9.0", sig) for name, sig in prev.items()}


def beta(now, **kw):
    return decide(SHIPPED, "beta", GateContext(now, T0, "h1", signals(now, **kw), SIGNED, baselines()))


def test_beta_advances_when_the_ring_matches_the_previous_release():
    d = beta(T0 + timedelta(days=2, hours=1))
    assert d.verdict is Verdict.ADVANCE
    crash = next(r for r in d.results if r.gate == "crash_free_beta")
    assert crash.reason is Reason.WITHIN_TOLERANCE and crash.inputs["baseline_release"] == "music-android/8.9.0"


def test_a_regression_in_beta_holds_during_the_soak():
    d = beta(T0 + timedelta(hours=20), sessions=150_000, crash_free_pct=99.35)
    assert d.verdict is Verdict.HOLD and "crash_free_beta" in d.summary and "regressed" in d.summary


def test_an_unsettled_comparison_waits_then_asks_once_max_wait_is_over():
    small = {"sessions": 300_000, "crash_free_pct": 99.59}  # 0.06 pp worse: right at the tolerance
    assert beta(T0 + timedelta(days=2, hours=1), **small).verdict is Verdict.WAIT
    d = beta(T0 + timedelta(days=4, hours=10), **small)
    assert d.verdict is Verdict.ASK and "still waiting" in d.summary


def test_below_the_floor_halts_in_the_store_whatever_the_baseline():
    now = T0 + timedelta(hours=6)
    ctx = GateContext(now, T0, "h1", signals(now, sessions=60_000, crash_free_pct=98.8), {}, baselines(crash_free_pct=98.7))
    d = decide(SHIPPED, "rollout_1", ctx)
    assert d.verdict is Verdict.HALT and "floor" in d.summary


def test_without_an_earlier_release_to_compare_with_a_human_is_asked():
    now = T0 + timedelta(days=2, hours=1)
    d = decide(SHIPPED, "beta", GateContext(now, T0, "h1", signals(now), SIGNED, {}))
    assert d.verdict is Verdict.ASK and any(r.reason is Reason.NO_BASELINE for r in d.results)


def test_a_flaky_test_waits_for_the_rerun_and_a_real_failure_holds():
    now = T0 + timedelta(days=2, hours=1)
    assert beta(now, tests=0.9995, runs=1).verdict is Verdict.WAIT
    assert beta(now, tests=1.0, runs=2).verdict is Verdict.ADVANCE
    assert beta(now, tests=0.9995, runs=3).verdict is Verdict.HOLD


def test_a_ci_result_for_the_branch_head_does_not_age():
    now = T0 + timedelta(days=2, hours=1)
    assert beta(now, ci_at=now - timedelta(days=6)).verdict is Verdict.ADVANCE
    assert beta(now, sha="h0").verdict is Verdict.WAIT  # a result for another commit is waited for
