from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conductor.domain.decisions import Verdict, decide, next_schedule_time
from conductor.domain.gates import GateContext, SignalValue, Signoff
from conductor.domain.loader import load_pipeline

# decide() itself, on a frozen copy of the weekly train with fixed-band crash and ANR gates; the shipped,
# tuned definition has its own tests (test_mobile_weekly.py).
MOBILE = load_pipeline(Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "definitions" / "mobile_weekly.yaml")
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday


def good(now, sha="h1", **overrides):
    base = {
        "build_green": SignalValue("build_green", 1.0, now - timedelta(minutes=5), "ci", sha=sha),
        "tests_pass_rate": SignalValue("tests_pass_rate", 1.0, now - timedelta(minutes=5), "junit", 900, sha=sha),
        "open_blockers": SignalValue("open_blockers", 0, now - timedelta(minutes=5), "jira"),
        "crash_free_sessions": SignalValue("crash_free_sessions", 99.8, now - timedelta(minutes=5), "crashlytics", 50000),
        "anr_rate": SignalValue("anr_rate", 0.2, now - timedelta(minutes=5), "vitals", 50000),
        "active_users": SignalValue("active_users", 20000, now - timedelta(minutes=5), "analytics"),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


SIGNED = {t: Signoff(t, True, "lead", T0) for t in ("playback", "search", "payments", "growth")}


def test_branch_day_follows_the_pipeline_time_zone():
    # Friday 10:00 in Stockholm is 09:00 UTC in winter and 08:00 UTC in summer.
    assert next_schedule_time(MOBILE, "branch_cut", T0) == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert next_schedule_time(MOBILE, "branch_cut", datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2026, 6, 5, 8, 0, tzinfo=UTC)


def test_trunk_waits_for_branch_day_then_advances():
    d = decide(MOBILE, "trunk", GateContext(T0, T0))
    assert d.verdict is Verdict.WAIT and d.wait_until == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    later = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert decide(MOBILE, "trunk", GateContext(later, T0)).verdict is Verdict.ADVANCE


def test_soak_is_honoured():
    entered = T0
    now = entered + timedelta(hours=11)
    d = decide(MOBILE, "nightly", GateContext(now, entered, "h1", good(now)))
    assert d.verdict is Verdict.WAIT and d.wait_until == entered + timedelta(hours=12)
    now = entered + timedelta(hours=12)
    assert decide(MOBILE, "nightly", GateContext(now, entered, "h1", good(now))).verdict is Verdict.ADVANCE


def test_failure_during_soak_halts_at_once_in_rollout():
    now = T0 + timedelta(hours=2)
    sigs = good(now, crash_free_sessions=SignalValue("crash_free_sessions", 97.0, now, "crashlytics", 50000))
    d = decide(MOBILE, "rollout_1", GateContext(now, T0, "h1", sigs))
    assert d.verdict is Verdict.HALT and "crash_free" in d.summary


def test_failure_before_store_holds():
    now = T0 + timedelta(days=3)
    sigs = good(now, open_blockers=SignalValue("open_blockers", 2, now, "jira"))
    assert decide(MOBILE, "beta", GateContext(now, T0, "h1", sigs, SIGNED)).verdict is Verdict.HOLD


def test_grey_zone_asks():
    now = T0 + timedelta(days=3)
    sigs = good(now, crash_free_sessions=SignalValue("crash_free_sessions", 99.3, now, "crashlytics", 50000))
    d = decide(MOBILE, "beta", GateContext(now, T0, "h1", sigs, SIGNED))
    assert d.verdict is Verdict.ASK and "grey" not in d.summary and "between" in d.summary


def test_missing_signoffs_wait_until_max_wait_then_ask():
    now = T0 + timedelta(days=2, hours=1)
    d = decide(MOBILE, "beta", GateContext(now, T0, "h1", good(now)))
    assert d.verdict is Verdict.WAIT and d.wait_until == T0 + timedelta(days=3)
    now = T0 + timedelta(days=3)
    d = decide(MOBILE, "beta", GateContext(now, T0, "h1", good(now)))
    assert d.verdict is Verdict.ASK and "still waiting" in d.summary


def test_stale_signal_asks_not_waits():
    now = T0 + timedelta(days=3)
    sigs = good(now, open_blockers=SignalValue("open_blockers", 0, now - timedelta(days=2), "jira"))
    assert decide(MOBILE, "beta", GateContext(now, T0, "h1", sigs, SIGNED)).verdict is Verdict.ASK


def test_terminal_stages_have_no_decision():
    for stage in ("released", "halted", "cancelled"):
        assert decide(MOBILE, stage, GateContext(T0, T0)) is None


def test_the_question_ignores_time_and_values_within_their_band_but_the_evidence_digest_does_not():
    now = T0 + timedelta(days=3)
    a = decide(MOBILE, "beta", GateContext(now, T0, "h1", good(now), SIGNED))
    later = now + timedelta(hours=1)
    b = decide(MOBILE, "beta", GateContext(later, T0, "h1", good(now), SIGNED))
    assert (a.fingerprint, a.evidence_digest) == (b.fingerprint, b.evidence_digest)  # same evidence, only older
    moved = good(now, crash_free_sessions=SignalValue("crash_free_sessions", 99.7, now, "crashlytics", 50000))
    c = decide(MOBILE, "beta", GateContext(now, T0, "h1", moved, SIGNED))
    assert c.fingerprint == a.fingerprint and c.evidence_digest != a.evidence_digest  # new numbers, the same question
    worse = good(now, crash_free_sessions=SignalValue("crash_free_sessions", 99.2, now, "crashlytics", 50000))
    assert decide(MOBILE, "beta", GateContext(now, T0, "h1", worse, SIGNED)).fingerprint != a.fingerprint  # another band


def test_a_question_narrows_as_the_data_it_waited_for_settles_and_changes_on_a_new_doubt():
    now = T0 + timedelta(days=3)  # soak and max_wait are over: the robot asks instead of waiting
    a = decide(MOBILE, "beta", GateContext(now, T0, "h1", good(now, open_blockers=None)))
    assert a.verdict is Verdict.ASK and "still waiting" in a.summary and "no_blockers" in a.summary
    # The tracker reports: only the sign-offs are still awaited. The same question, on fresher evidence.
    b = decide(MOBILE, "beta", GateContext(now, T0, "h1", good(now)))
    assert b.verdict is Verdict.ASK and "no_blockers" not in b.summary
    assert b.fingerprint == a.fingerprint and b.evidence_digest != a.evidence_digest
    # A gate falling into a doubt more data will not settle is another question.
    grey = good(now, crash_free_sessions=SignalValue("crash_free_sessions", 99.3, now, "crashlytics", 50000))
    c = decide(MOBILE, "beta", GateContext(now, T0, "h1", grey))
    assert c.verdict is Verdict.ASK and c.fingerprint != b.fingerprint
    # Waiting (not yet asking) keeps the full question: which gates it waits for.
    early = now - timedelta(hours=12)
    w1 = decide(MOBILE, "beta", GateContext(early, T0, "h1", good(early, open_blockers=None)))
    w2 = decide(MOBILE, "beta", GateContext(early, T0, "h1", good(early)))
    assert w1.verdict is w2.verdict is Verdict.WAIT and w1.fingerprint != w2.fingerprint


def test_evidence_records_inputs_thresholds_sources_and_ages():
    now = T0 + timedelta(days=3)
    ev = decide(MOBILE, "beta", GateContext(now, T0, "h1", good(now), SIGNED)).evidence()
    crash = next(g for g in ev["gates"] if g["gate"] == "crash_free")
    assert crash["inputs"]["pass"] == 99.5 and crash["inputs"]["fail"] == 99.0
    assert crash["inputs"]["source"] == "crashlytics" and crash["inputs"]["samples"] == 50000
    assert crash["ages_s"]["crash_free_sessions"] == pytest.approx(300)
    assert ev["verdict"] == "advance"


SHADOWED = """
name: shadowed
signals:
  crash_free: {type: percent}
  users: {type: count}
gates:
  crash_fixed: {kind: threshold, signal: crash_free, better: higher, pass: 99.5, fail: 99.0}
  crash_compare: {kind: compare, signal: crash_free, better: higher, tolerance: 0.1, mode: shadow}
  usage: {kind: count, signal: users, min: 5000}
stages:
  one: {kind: rollout}
  two: {kind: final}
  halted: {kind: halted}
transitions:
  - {from: one, to: two, max_wait: 1d, gates: [crash_fixed, crash_compare, usage], on_fail: halt}
"""


def test_a_shadow_gate_is_judged_and_recorded_but_never_acted_on():
    from conductor.domain.gates import Baseline
    from conductor.domain.loader import parse_pipeline

    p = parse_pipeline(SHADOWED, "shadowed.yaml")
    now = T0 + timedelta(hours=3)
    sigs = {
        "crash_free": SignalValue("crash_free", 99.55, now, "sentry", 400_000),
        "users": SignalValue("users", 9000, now, "analytics"),
    }
    base = {"crash_free": Baseline("app/1.0", SignalValue("crash_free", 99.8, T0, "sentry", 2_000_000))}
    d = decide(p, "one", GateContext(now, T0, None, sigs, baselines=base))
    # Live: 99.55 is in the fixed pass band, so it advances; the compare gate would have halted.
    assert d.verdict is Verdict.ADVANCE and [r.gate for r in d.results] == ["crash_fixed", "usage"]
    assert d.shadow_verdict is Verdict.HALT
    (shadow,) = d.shadow
    assert shadow.gate == "crash_compare" and shadow.inputs["would"] == "halt"
    ev = d.evidence()
    assert ev["verdict"] == "advance" and ev["shadow_verdict"] == "halt" and ev["shadow"][0]["reason"] == "regressed"


def test_it_waits_for_data_before_asking_about_a_grey_gate():
    from conductor.domain.loader import parse_pipeline

    p = parse_pipeline(SHADOWED, "shadowed.yaml")
    now = T0 + timedelta(hours=3)
    grey = {"crash_free": SignalValue("crash_free", 99.3, now, "sentry", 400_000), "users": SignalValue("users", 100, now, "analytics")}
    d = decide(p, "one", GateContext(now, T0, None, grey))
    assert d.verdict is Verdict.WAIT and "usage" in d.summary  # the usage will come; asking now asks too early
    enough = {**grey, "users": SignalValue("users", 9000, now, "analytics")}
    assert decide(p, "one", GateContext(now, T0, None, enough)).verdict is Verdict.ASK  # only the grey gate is left
    late = T0 + timedelta(days=1, hours=1)  # max_wait is over: ask, naming both
    d = decide(p, "one", GateContext(late, T0, None, {**grey, "crash_free": SignalValue("crash_free", 99.3, late, "sentry", 1)}))
    assert d.verdict is Verdict.ASK and "usage" in d.summary and "crash_fixed" in d.summary
