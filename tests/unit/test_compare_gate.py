"""The compare gate and its statistics: this release's rate against a baseline release's."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conductor.domain.definition import CompareGate, ThresholdGate
from conductor.domain.gates import Baseline, GateContext, Outcome, Reason, SignalValue, evaluate_gate
from conductor.domain.stats import compare_rates, half_width

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ENTERED = NOW - timedelta(hours=10)

CRASH_FREE = CompareGate.model_validate(
    {"kind": "compare", "signal": "crash_free", "better": "higher", "tolerance": 0.1, "floor": 99.0, "min_samples": 1000}
)


def signal(value: float, samples: int, events: int | None = None, age_h: float = 0.5) -> SignalValue:
    return SignalValue("crash_free", value, NOW - timedelta(hours=age_h), "sentry", samples, events=events)


def judge(value: float, samples: int, base_value: float | None = 99.8, base_samples: int = 2_000_000, gate: CompareGate = CRASH_FREE):
    baselines = {} if base_value is None else {"crash_free": Baseline("music/8.7.0", signal(base_value, base_samples, age_h=48))}
    ctx = GateContext(NOW, ENTERED, None, {"crash_free": signal(value, samples)}, baselines=baselines)
    return evaluate_gate("crash_free", gate, ctx, scale=100)


def test_a_clear_regression_fails_and_says_by_how_much_and_how_sure():
    r = judge(99.45, 400_000)
    assert r.outcome is Outcome.FAIL and r.reason is Reason.REGRESSED
    assert "music/8.7.0" in r.detail and "99% sure it is worse by more than 0.1pp" in r.detail
    assert r.inputs["regression"] == pytest.approx(0.35, abs=0.01)
    assert r.inputs["regression_low"] > 0.1


def test_the_same_rate_on_enough_sessions_passes():
    r = judge(99.8, 400_000)
    assert r.outcome is Outcome.PASS and r.reason is Reason.WITHIN_TOLERANCE
    assert r.inputs["regression_high"] < 0.1


def test_too_little_data_waits_and_says_how_much_more_it_needs():
    r = judge(99.75, 20_000)
    assert r.outcome is Outcome.INCONCLUSIVE and r.reason is Reason.NEEDS_MORE_DATA
    assert "needs about" in r.detail and "more samples" in r.detail and " h at the current rate" in r.detail


def test_the_floor_fails_whatever_the_baseline():
    r = judge(98.9, 400_000, base_value=98.85)
    assert r.outcome is Outcome.FAIL and r.reason is Reason.BELOW_FLOOR


def test_without_a_baseline_it_cannot_compare():
    r = judge(99.8, 400_000, base_value=None)
    assert r.outcome is Outcome.INCONCLUSIVE and r.reason is Reason.NO_BASELINE


def test_below_min_samples_is_too_few():
    assert judge(99.8, 999).reason is Reason.TOO_FEW_SAMPLES


def test_lower_is_better_reads_the_other_way():
    anr = CompareGate.model_validate({"kind": "compare", "signal": "crash_free", "better": "lower", "tolerance": 0.05})
    assert judge(0.60, 400_000, base_value=0.30, gate=anr).reason is Reason.REGRESSED
    assert judge(0.30, 400_000, base_value=0.30, gate=anr).reason is Reason.WITHIN_TOLERANCE


def test_counts_are_preferred_to_the_rounded_value():
    # The value says 99.8 %, but the counts say 99.5 %: the counts are what the gate judges.
    baselines = {"crash_free": Baseline("music/8.7.0", signal(99.8, 2_000_000, events=1_996_000))}
    ctx = GateContext(NOW, ENTERED, None, {"crash_free": signal(99.8, 400_000, events=398_000)}, baselines=baselines)
    r = evaluate_gate("crash_free", CRASH_FREE, ctx, scale=100)
    assert r.reason is Reason.REGRESSED and r.inputs["events"] == 398_000


def test_the_half_width_shrinks_with_variance_and_widens_with_confidence():
    assert half_width(1e-6, 1e-6, 0.01) > half_width(1e-8, 1e-6, 0.01) > 0
    assert half_width(1e-6, 1e-6, 0.001) > half_width(1e-6, 1e-6, 0.05)
    assert half_width(0, 1e-6, 0.01) == 0


def _looks(rng, true_rate, base_rate, looks=24, per_look=20_000, alpha=0.01, beta=0.05, tolerance=0.001):
    """Hourly looks at a release whose true rate is `true_rate`: the first verdict other than wait."""
    base_n = 2_000_000
    base_events = int(rng.binomial(base_n, base_rate))
    events = n = 0
    for _ in range(looks):
        n += per_look
        events += int(rng.binomial(per_look, true_rate))
        c = compare_rates(events, n, base_events, base_n, better="higher", tolerance=tolerance, alpha=alpha, beta=beta)
        if c.verdict != "wait":
            return c.verdict
    return "wait"


def test_looking_every_hour_does_not_inflate_false_halts():
    # 150 good releases (no regression), each looked at 24 times: an always-valid sequence keeps the
    # chance of ever failing one under alpha (1 %); a fixed-sample test looked at this often would not.
    rng = np.random.default_rng(7)
    verdicts = [_looks(rng, 0.998, 0.998) for _ in range(150)]
    assert verdicts.count("fail") <= 2
    assert verdicts.count("pass") >= 140  # and it does decide


def test_a_bad_release_is_caught_and_rarely_passed():
    rng = np.random.default_rng(11)
    verdicts = [_looks(rng, 0.9955, 0.998) for _ in range(100)]  # 0.25 pp worse, tolerance 0.1 pp
    assert verdicts.count("pass") <= 5
    assert verdicts.count("fail") >= 90


def test_needed_is_an_honest_estimate():
    # After waiting for the number of sessions it asked for (at the same rate), the gate decides.
    c = compare_rates(19_930, 20_000, 1_996_000, 2_000_000, better="higher", tolerance=0.001, alpha=0.01, beta=0.05)
    assert c.verdict == "wait" and c.needed
    n = 20_000 + c.needed + 1000
    later = compare_rates(round(0.9965 * n), n, 1_996_000, 2_000_000, better="higher", tolerance=0.001, alpha=0.01, beta=0.05)
    assert later.verdict != "wait"


def test_reruns_wait_before_failing_and_a_passing_rerun_is_flaky_not_failing():
    gate = ThresholdGate.model_validate(
        {"kind": "threshold", "signal": "tests", "better": "higher", "pass": 1.0, "fail": 0.99, "reruns": 2}
    )

    def run(value, runs, sha="abc1234567"):
        s = SignalValue("tests", value, NOW - timedelta(minutes=5), "junit", 900, sha=sha, runs=runs)
        return evaluate_gate("tests", gate, GateContext(NOW, ENTERED, sha, {"tests": s}))

    assert run(0.95, 1).reason is Reason.AWAITING_RERUN
    assert run(0.95, 2).reason is Reason.AWAITING_RERUN
    assert run(0.95, 3).reason is Reason.IN_FAIL_BAND  # every rerun reported: it fails
    flaky = run(1.0, 2)
    assert flaky.outcome is Outcome.PASS and "an earlier run did not pass" in flaky.detail
    # Without a commit there is nothing to rerun: judged at once.
    assert run(0.95, 1, sha=None).reason is Reason.IN_FAIL_BAND


REFERENCED = CRASH_FREE.model_copy(update={"reference": 99.8})


def test_without_a_baseline_a_reference_rate_stands_in():
    same = judge(99.8, 400_000, base_value=None, gate=REFERENCED)
    assert same.outcome is Outcome.PASS and "vs the reference 99.8" in same.detail
    worse = judge(99.45, 400_000, base_value=None, gate=REFERENCED)
    assert worse.outcome is Outcome.FAIL and worse.reason is Reason.REGRESSED and worse.inputs["baseline_release"] == "the reference 99.8"
    # A reference is known exactly: the test against it is at least as sure as against a measured
    # baseline of the same rate (its interval is never wider).
    measured = judge(99.75, 100_000)
    referenced = judge(99.75, 100_000, base_value=None, gate=REFERENCED)
    width = lambda r: r.inputs["regression_high"] - r.inputs["regression_low"]  # noqa: E731
    assert width(referenced) < width(measured)


def test_a_measured_baseline_wins_over_the_reference():
    r = judge(99.45, 400_000, base_value=99.5, gate=REFERENCED)
    assert r.inputs["baseline_release"] == "music/8.7.0" and r.outcome is not Outcome.FAIL


def test_a_reference_or_floor_outside_the_signal_range_names_the_field():
    from conductor.domain.errors import DefinitionError
    from conductor.domain.loader import parse_pipeline

    text = """\
name: t
signals:
  crash_free: {type: percent}
gates:
  crash: {kind: compare, signal: crash_free, better: higher, tolerance: 0.1, reference: 996}
stages:
  beta: {}
  done: {kind: final}
transitions:
  - {from: beta, to: done, gates: [crash]}
"""
    with pytest.raises(DefinitionError) as info:
        parse_pipeline(text, "t.yaml")
    assert [(p.line, p.field) for p in info.value.problems if "0 to 100" in p.message] == [(5, "gates.crash.reference")], (
        info.value.problems
    )
