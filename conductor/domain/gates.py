"""Gate evaluation: pure functions from stored signals to pass / fail / inconclusive.

Missing, stale, too-small or out-of-stage data is never a pass: each of those paths returns
INCONCLUSIVE with a reason, and only a value inside the pass band with enough fresh samples passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from conductor.domain.definition import CompareGate, CountGate, Gate, SignoffGate, ThresholdGate


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Reason(StrEnum):
    IN_PASS_BAND = "in_pass_band"
    IN_FAIL_BAND = "in_fail_band"
    GREY_ZONE = "grey_zone"
    MISSING = "missing"
    TOO_FEW_SAMPLES = "too_few_samples"
    STALE = "stale"
    NOT_IN_STAGE = "not_in_stage"  # older than the current stage: it measured another ring
    OTHER_COMMIT = "other_commit"  # measured a commit that is no longer the branch head
    SOURCE_ERROR = "source_error"
    ABOVE_MAX = "above_max"
    BELOW_MIN = "below_min"
    WITHIN_BOUNDS = "within_bounds"
    SIGNED = "signed"
    NOT_SIGNED = "not_signed"
    SIGNOFF_REJECTED = "signoff_rejected"
    UNAPPROVED_CHANGE = "unapproved_change"
    AWAITING_RERUN = "awaiting_rerun"  # outside the pass band on a commit whose reruns have not all reported
    NEEDS_MORE_DATA = "needs_more_data"  # a comparison that more exposures will settle
    NO_BASELINE = "no_baseline"  # nothing to compare with (no earlier release in this ring)
    WITHIN_TOLERANCE = "within_tolerance"
    REGRESSED = "regressed"
    BELOW_FLOOR = "below_floor"  # worse than the fixed backstop, whatever the baseline


# Reasons that mean "the data is not in yet": the robot waits for them (up to max_wait) rather
# than asking a human straight away.
WAITING_REASONS = frozenset({
    Reason.MISSING, Reason.TOO_FEW_SAMPLES, Reason.NOT_IN_STAGE, Reason.OTHER_COMMIT, Reason.BELOW_MIN, Reason.NOT_SIGNED,
    Reason.AWAITING_RERUN, Reason.NEEDS_MORE_DATA,
})  # fmt: skip


@dataclass(frozen=True)
class SignalValue:
    """The latest stored value of one signal for one release."""

    name: str
    value: float | None  # None: the source reported an error instead of a value
    observed_at: datetime
    source: str = "unknown"
    samples: int | None = None  # exposures: sessions, users, executed tests
    sha: str | None = None
    error: str | None = None
    events: int | None = None  # of the samples, how many the value counts (crash-free sessions, ANRs)
    runs: int = 1  # reports of this signal on the same commit so far (1 + reruns)


@dataclass(frozen=True)
class Signoff:
    team: str
    approved: bool
    actor: str
    at: datetime


@dataclass(frozen=True)
class GateContext:
    now: datetime
    stage_entered_at: datetime
    head_sha: str | None = None
    signals: dict[str, SignalValue] = field(default_factory=dict)
    signoffs: dict[str, Signoff] = field(default_factory=dict)
    # For compare gates: the baseline release's latest value of each signal they read (in this
    # ring, or in production), and that release's name (for the evidence).
    baselines: dict[str, Baseline] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """What a compare gate compares with: another release's value of the same signal."""

    release: str  # e.g. "music-android/8.8.0"
    signal: SignalValue


@dataclass(frozen=True)
class GateResult:
    gate: str
    outcome: Outcome
    reason: Reason
    detail: str
    inputs: dict[str, Any] = field(default_factory=dict)  # what the fingerprint covers
    ages_s: dict[str, float] = field(default_factory=dict)  # shown, not fingerprinted (time moves)

    def as_evidence(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "outcome": self.outcome.value,
            "reason": self.reason.value,
            "detail": self.detail,
            "inputs": self.inputs,
            "ages_s": self.ages_s,
        }


def _signal_inputs(sig: SignalValue) -> dict[str, Any]:
    inputs = {
        "signal": sig.name,
        "value": sig.value,
        "samples": sig.samples,
        "source": sig.source,
        "observed_at": sig.observed_at.isoformat(),
        "sha": sig.sha,
    }
    if sig.events is not None:
        inputs["events"] = sig.events
    return inputs


def _usable(
    name: str, gate: ThresholdGate | CountGate | CompareGate, ctx: GateContext, thresholds: dict[str, Any]
) -> tuple[SignalValue | None, GateResult | None]:
    """The signal if it may be judged, else the INCONCLUSIVE result that says why not."""
    sig = ctx.signals.get(gate.signal)

    def inconclusive(reason: Reason, detail: str, inputs: dict[str, Any], ages: dict[str, float]) -> GateResult:
        return GateResult(name, Outcome.INCONCLUSIVE, reason, detail, {**thresholds, **inputs}, ages)

    if sig is None:
        return None, inconclusive(Reason.MISSING, f"no {gate.signal} signal yet", {"signal": gate.signal}, {})
    inputs = _signal_inputs(sig)
    age = (ctx.now - sig.observed_at).total_seconds()
    ages = {gate.signal: age}
    if sig.error is not None or sig.value is None:
        return None, inconclusive(Reason.SOURCE_ERROR, f"{sig.source} reported an error: {sig.error}", inputs, ages)
    if gate.fresh_in_stage and sig.observed_at < ctx.stage_entered_at:
        return None, inconclusive(Reason.NOT_IN_STAGE, f"{gate.signal} predates this stage", inputs, ages)
    if gate.head_sha and ctx.head_sha and sig.sha and sig.sha != ctx.head_sha:
        return None, inconclusive(
            Reason.OTHER_COMMIT, f"{gate.signal} is for {sig.sha[:10]}, the branch head is {ctx.head_sha[:10]}", inputs, ages
        )
    if gate.max_age is not None and age > gate.max_age.total_seconds():
        return None, inconclusive(
            Reason.STALE, f"{gate.signal} is {age / 3600:.1f}h old (max {gate.max_age.total_seconds() / 3600:.1f}h)", inputs, ages
        )
    if age < 0:
        # A timestamp from the future is a clock problem at the source; do not trust it.
        return None, inconclusive(Reason.SOURCE_ERROR, f"{gate.signal} is dated in the future", inputs, ages)
    return sig, None


def evaluate_threshold(name: str, gate: ThresholdGate, ctx: GateContext) -> GateResult:
    thresholds = {"better": gate.better, "pass": gate.pass_at, "fail": gate.fail_at, "min_samples": gate.min_samples}
    sig, early = _usable(name, gate, ctx, thresholds)
    if early:
        return early
    assert sig is not None and sig.value is not None
    inputs = {**thresholds, **_signal_inputs(sig)}
    ages = {gate.signal: (ctx.now - sig.observed_at).total_seconds()}
    v = sig.value
    if gate.min_samples and (sig.samples is None or sig.samples < gate.min_samples):
        return GateResult(
            name, Outcome.INCONCLUSIVE, Reason.TOO_FEW_SAMPLES, f"{sig.samples or 0} of {gate.min_samples} samples", inputs, ages
        )
    higher = gate.better == "higher"
    if (v >= gate.pass_at) if higher else (v <= gate.pass_at):
        flaky = f" (on run {sig.runs} of {sig.sha[:10]}: an earlier run did not pass)" if sig.runs > 1 and gate.reruns and sig.sha else ""
        return GateResult(name, Outcome.PASS, Reason.IN_PASS_BAND, f"{v:g} {'≥' if higher else '≤'} {gate.pass_at:g}{flaky}", inputs, ages)
    rerun = _awaiting_rerun(name, gate, sig, inputs, ages)
    if rerun is not None:
        return rerun
    if (v <= gate.fail_at) if higher else (v >= gate.fail_at):
        return GateResult(name, Outcome.FAIL, Reason.IN_FAIL_BAND, f"{v:g} {'≤' if higher else '≥'} {gate.fail_at:g}", inputs, ages)
    lo, hi = sorted((gate.pass_at, gate.fail_at))
    return GateResult(name, Outcome.INCONCLUSIVE, Reason.GREY_ZONE, f"{v:g} is between {lo:g} and {hi:g}", inputs, ages)


def evaluate_count(name: str, gate: CountGate, ctx: GateContext) -> GateResult:
    thresholds = {"max": gate.max, "min": gate.min}
    sig, early = _usable(name, gate, ctx, thresholds)
    if early:
        return early
    assert sig is not None and sig.value is not None
    inputs = {**thresholds, **_signal_inputs(sig)}
    ages = {gate.signal: (ctx.now - sig.observed_at).total_seconds()}
    v = sig.value
    if gate.max is not None and v > gate.max:
        rerun = _awaiting_rerun(name, gate, sig, inputs, ages)
        if rerun is not None:
            return rerun
        return GateResult(name, Outcome.FAIL, Reason.ABOVE_MAX, f"{v:g} > {gate.max}", inputs, ages)
    if gate.min is not None and v < gate.min:
        return GateResult(name, Outcome.INCONCLUSIVE, Reason.BELOW_MIN, f"{v:g} < {gate.min} needed", inputs, ages)
    return GateResult(name, Outcome.PASS, Reason.WITHIN_BOUNDS, f"{v:g} within bounds", inputs, ages)


def evaluate_signoff(name: str, gate: SignoffGate, ctx: GateContext) -> GateResult:
    got = {t: ctx.signoffs.get(t) for t in gate.teams}
    inputs = {
        "teams": {t: (None if s is None else {"approved": s.approved, "actor": s.actor, "at": s.at.isoformat()}) for t, s in got.items()}
    }
    rejected = [t for t, s in got.items() if s is not None and not s.approved]
    missing = [t for t, s in got.items() if s is None]
    if rejected:
        return GateResult(name, Outcome.FAIL, Reason.SIGNOFF_REJECTED, f"rejected by {', '.join(rejected)}", inputs)
    if missing:
        return GateResult(name, Outcome.INCONCLUSIVE, Reason.NOT_SIGNED, f"waiting for {', '.join(missing)}", inputs)
    return GateResult(name, Outcome.PASS, Reason.SIGNED, f"all {len(gate.teams)} teams signed off", inputs)


def _awaiting_rerun(
    name: str, gate: ThresholdGate | CountGate, sig: SignalValue, inputs: dict[str, Any], ages: dict[str, float]
) -> GateResult | None:
    """A value outside the pass band on a commit whose reruns have not all reported yet: wait for
    them (a failure that passes on a rerun is flaky, not failing). None when nothing is awaited."""
    if not gate.reruns or not sig.sha or sig.runs > gate.reruns:
        return None
    return GateResult(
        name, Outcome.INCONCLUSIVE, Reason.AWAITING_RERUN,
        f"{sig.value:g} on {sig.sha[:10]} (run {sig.runs} of up to {gate.reruns + 1}): waiting for a rerun", inputs, ages,
    )  # fmt: skip


def _proportion(sig: SignalValue, scale: float) -> tuple[int, int] | None:
    """(events, exposures) of a rate signal: its counts, or from its value when only that was sent."""
    if sig.samples is None or sig.samples <= 0 or sig.value is None:
        return None
    events = sig.events if sig.events is not None else round(sig.value / scale * sig.samples)
    return min(max(events, 0), sig.samples), sig.samples


def evaluate_compare(name: str, gate: CompareGate, ctx: GateContext, scale: float) -> GateResult:
    """This release's rate against its baseline's (conductor.domain.stats); `scale` is 100 for a
    percent signal, 1 for a ratio."""
    from conductor.domain.stats import compare_rates

    thresholds = {"better": gate.better, "tolerance": gate.tolerance, "alpha": gate.alpha, "beta": gate.beta, "floor": gate.floor,
                  "min_samples": gate.min_samples, "baseline": gate.baseline}  # fmt: skip
    sig, early = _usable(name, gate, ctx, thresholds)
    if early:
        return early
    assert sig is not None and sig.value is not None
    inputs = {**thresholds, **_signal_inputs(sig)}
    ages = {gate.signal: (ctx.now - sig.observed_at).total_seconds()}
    higher = gate.better == "higher"
    counts = _proportion(sig, scale)
    if counts is None or counts[1] < max(gate.min_samples, 1):
        return GateResult(name, Outcome.INCONCLUSIVE, Reason.TOO_FEW_SAMPLES, f"{sig.samples or 0} of {gate.min_samples} samples",
                          inputs, ages)  # fmt: skip
    v = sig.value
    if gate.floor is not None and ((v < gate.floor) if higher else (v > gate.floor)):
        return GateResult(name, Outcome.FAIL, Reason.BELOW_FLOOR, f"{v:g} is worse than the floor {gate.floor:g}", inputs, ages)
    base = ctx.baselines.get(gate.signal)
    base_counts = _proportion(base.signal, scale) if base is not None else None
    if base is not None and base_counts is not None:
        against, base_value = base.release, base.signal.value
    elif gate.reference is not None:
        against, base_value = f"the reference {gate.reference:g}", gate.reference
        base_counts = _reference_counts(gate.reference, scale)
    else:
        return GateResult(name, Outcome.INCONCLUSIVE, Reason.NO_BASELINE, f"no earlier release to compare {gate.signal} with",
                          inputs, ages)  # fmt: skip
    c = compare_rates(*counts, *base_counts, better=gate.better, tolerance=gate.tolerance / scale, alpha=gate.alpha, beta=gate.beta)
    unit = "pp" if scale == 100 else ""
    inputs |= {
        "baseline_release": against, "baseline_value": base_value, "baseline_samples": base_counts[1],
        "baseline_events": base_counts[0], "regression": c.regression * scale, "regression_low": c.lower * scale,
        "regression_high": c.upper * scale,
    }  # fmt: skip
    by = f"{c.regression * scale:+.3g}{unit} vs {against} (between {c.lower * scale:+.3g} and {c.upper * scale:+.3g})"
    if c.verdict == "fail":
        sure = f"{(1 - gate.alpha):.0%} sure it is worse by more than {gate.tolerance:g}{unit}"
        return GateResult(name, Outcome.FAIL, Reason.REGRESSED, f"regressed {by}; {sure}", inputs, ages)
    if c.verdict == "pass":
        sure = f"{(1 - gate.beta):.0%} sure any regression is under {gate.tolerance:g}{unit}"
        return GateResult(name, Outcome.PASS, Reason.WITHIN_TOLERANCE, f"{by}; {sure}", inputs, ages)
    return GateResult(name, Outcome.INCONCLUSIVE, Reason.NEEDS_MORE_DATA, f"{by}; {_needs(c.needed, sig, ctx)}", inputs, ages)


# A reference rate is known, not measured: it enters the comparison as a baseline so large that its
# own uncertainty vanishes (a billion exposures: a variance below 1e-9 of the rate's), which turns
# the two-sample test into the one-sample test against a fixed rate without a second code path.
REFERENCE_EXPOSURES = 1_000_000_000


def _reference_counts(reference: float, scale: float) -> tuple[int, int]:
    rate = min(max(reference / scale, 0.0), 1.0)
    return round(rate * REFERENCE_EXPOSURES), REFERENCE_EXPOSURES


def _needs(needed: int | None, sig: SignalValue, ctx: GateContext) -> str:
    """'needs about N more sessions (≈ H h at the current rate)'."""
    if needed is None:
        return "too close to the tolerance to settle with more data at this rate"
    hours = max((sig.observed_at - ctx.stage_entered_at).total_seconds() / 3600, 1e-9)
    per_hour = (sig.samples or 0) / hours
    eta = f" (≈ {needed / per_hour:.0f} h at the current rate)" if per_hour > 0 else ""
    return f"needs about {needed:,} more samples{eta}"


def evaluate_gate(name: str, gate: Gate, ctx: GateContext, scale: float = 1.0) -> GateResult:
    """Evaluate one gate; never raises for bad data, which is an INCONCLUSIVE result instead.
    `scale` is the gate's signal's unit (100 for a percent), for compare gates."""
    if isinstance(gate, ThresholdGate):
        return evaluate_threshold(name, gate, ctx)
    if isinstance(gate, CountGate):
        return evaluate_count(name, gate, ctx)
    if isinstance(gate, CompareGate):
        return evaluate_compare(name, gate, ctx, scale)
    return evaluate_signoff(name, gate, ctx)
