from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.domain.definition import CountGate, SignoffGate, ThresholdGate
from conductor.domain.gates import GateContext, Outcome, Reason, SignalValue, Signoff, evaluate_gate

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ENTERED = NOW - timedelta(days=1)

CRASH = ThresholdGate.model_validate(
    {
        "kind": "threshold",
        "signal": "crash",
        "better": "higher",
        "pass": 99.5,
        "fail": 99.0,
        "min_samples": 1000,
        "max_age": "6h",
        "fresh_in_stage": True,
    }
)
ANR = ThresholdGate.model_validate({"kind": "threshold", "signal": "anr", "better": "lower", "pass": 0.3, "fail": 0.47})
BLOCKERS = CountGate.model_validate({"kind": "count", "signal": "bugs", "max": 0, "max_age": "1d"})
USAGE = CountGate.model_validate({"kind": "count", "signal": "users", "min": 5000})
SIGNOFF = SignoffGate.model_validate({"kind": "signoff", "teams": ["a", "b"]})


def ctx(**signals) -> GateContext:
    return GateContext(NOW, ENTERED, "headsha", {n: s for n, s in signals.items()})


def sig(name, value, samples=5000, age_h=1.0, **kw) -> SignalValue:
    return SignalValue(name, value, NOW - timedelta(hours=age_h), "test", samples, **kw)


@pytest.mark.parametrize(
    "value,outcome,reason",
    [
        (99.9, Outcome.PASS, Reason.IN_PASS_BAND),
        (99.5, Outcome.PASS, Reason.IN_PASS_BAND),
        (99.49, Outcome.INCONCLUSIVE, Reason.GREY_ZONE),
        (99.01, Outcome.INCONCLUSIVE, Reason.GREY_ZONE),
        (99.0, Outcome.FAIL, Reason.IN_FAIL_BAND),
        (42.0, Outcome.FAIL, Reason.IN_FAIL_BAND),
    ],
)
def test_threshold_bands_higher_is_better(value, outcome, reason):
    r = evaluate_gate("crash_free", CRASH, ctx(crash=sig("crash", value)))
    assert (r.outcome, r.reason) == (outcome, reason)
    assert r.inputs["pass"] == 99.5 and r.inputs["fail"] == 99.0 and r.inputs["value"] == value


@pytest.mark.parametrize(
    "value,outcome", [(0.1, Outcome.PASS), (0.3, Outcome.PASS), (0.4, Outcome.INCONCLUSIVE), (0.47, Outcome.FAIL), (3.0, Outcome.FAIL)]
)
def test_threshold_bands_lower_is_better(value, outcome):
    assert evaluate_gate("anr", ANR, ctx(anr=sig("anr", value))).outcome == outcome


@pytest.mark.parametrize(
    "signal,reason",
    [
        (None, Reason.MISSING),
        (sig("crash", 99.9, samples=999), Reason.TOO_FEW_SAMPLES),
        (sig("crash", 99.9, samples=None), Reason.TOO_FEW_SAMPLES),
        (sig("crash", 99.9, age_h=7), Reason.STALE),
        (sig("crash", 99.9, age_h=30), Reason.NOT_IN_STAGE),
        (sig("crash", None, error="timeout"), Reason.SOURCE_ERROR),
        (sig("crash", 99.9, age_h=-1), Reason.SOURCE_ERROR),
    ],
)
def test_bad_data_is_inconclusive(signal, reason):
    signals = {"crash": signal} if signal else {}
    r = evaluate_gate("crash_free", CRASH, ctx(**signals))
    assert (r.outcome, r.reason) == (Outcome.INCONCLUSIVE, reason)


def test_signal_of_another_commit_is_not_judged():
    gate = ThresholdGate.model_validate({"kind": "threshold", "signal": "b", "better": "higher", "pass": 1, "fail": 0, "head_sha": True})
    assert evaluate_gate("b", gate, ctx(b=sig("b", 1.0, sha="oldsha"))).reason == Reason.OTHER_COMMIT
    assert evaluate_gate("b", gate, ctx(b=sig("b", 1.0, sha="headsha"))).outcome == Outcome.PASS


@pytest.mark.parametrize("value,outcome", [(0, Outcome.PASS), (1, Outcome.FAIL), (7, Outcome.FAIL)])
def test_count_max(value, outcome):
    assert evaluate_gate("no_blockers", BLOCKERS, ctx(bugs=sig("bugs", value))).outcome == outcome


@pytest.mark.parametrize("value,reason", [(4999, Reason.BELOW_MIN), (5000, Reason.WITHIN_BOUNDS)])
def test_count_min_waits_for_usage(value, reason):
    assert evaluate_gate("usage", USAGE, ctx(users=sig("users", value))).reason == reason


def test_signoffs():
    t = NOW - timedelta(hours=1)
    base = GateContext(NOW, ENTERED)
    assert evaluate_gate("s", SIGNOFF, base).reason == Reason.NOT_SIGNED
    one = GateContext(NOW, ENTERED, signoffs={"a": Signoff("a", True, "x", t)})
    r = evaluate_gate("s", SIGNOFF, one)
    assert r.outcome == Outcome.INCONCLUSIVE and "b" in r.detail
    both = GateContext(NOW, ENTERED, signoffs={"a": Signoff("a", True, "x", t), "b": Signoff("b", True, "y", t)})
    assert evaluate_gate("s", SIGNOFF, both).outcome == Outcome.PASS
    refused = GateContext(NOW, ENTERED, signoffs={"a": Signoff("a", True, "x", t), "b": Signoff("b", False, "y", t)})
    assert evaluate_gate("s", SIGNOFF, refused).outcome == Outcome.FAIL


# ---- properties: missing, stale or too-small data never passes ----------------------------

values = st.floats(min_value=0, max_value=100, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(value=values, samples=st.integers(0, 999))
def test_too_few_samples_never_pass(value, samples):
    assert evaluate_gate("c", CRASH, ctx(crash=sig("crash", value, samples=samples))).outcome != Outcome.PASS


@settings(max_examples=300, deadline=None)
@given(value=values, age_h=st.floats(min_value=6.001, max_value=23.9), samples=st.integers(0, 10**7))
def test_stale_data_never_passes(value, age_h, samples):
    assert evaluate_gate("c", CRASH, ctx(crash=sig("crash", value, samples=samples, age_h=age_h))).outcome != Outcome.PASS


@settings(max_examples=100, deadline=None)
@given(gate=st.sampled_from([CRASH, ANR, BLOCKERS, USAGE]))
def test_missing_data_never_passes(gate):
    assert evaluate_gate("g", gate, ctx()).outcome == Outcome.INCONCLUSIVE


@settings(max_examples=300, deadline=None)
@given(
    pass_at=st.floats(0, 100, allow_nan=False),
    gap=st.floats(0.001, 50, allow_nan=False),
    value=st.floats(-10, 150, allow_nan=False),
    better=st.sampled_from(["higher", "lower"]),
)
def test_threshold_outcome_matches_band(pass_at, gap, value, better):
    fail_at = pass_at - gap if better == "higher" else pass_at + gap
    gate = ThresholdGate.model_validate({"kind": "threshold", "signal": "x", "better": better, "pass": pass_at, "fail": fail_at})
    r = evaluate_gate("x", gate, ctx(x=sig("x", value)))
    good = value >= pass_at if better == "higher" else value <= pass_at
    bad = value <= fail_at if better == "higher" else value >= fail_at
    assert r.outcome == (Outcome.PASS if good else Outcome.FAIL if bad else Outcome.INCONCLUSIVE)


def test_overlapping_bands_are_refused():
    with pytest.raises(ValueError, match="bad threshold band"):
        ThresholdGate.model_validate({"kind": "threshold", "signal": "x", "better": "lower", "pass": 2, "fail": 1})
    with pytest.raises(ValueError, match="bad threshold band"):
        CountGate.model_validate({"kind": "count", "signal": "x"})
