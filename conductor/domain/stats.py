"""Comparing this release's rate with a baseline release's, from counts, as data keeps arriving.

A compare gate asks whether the release regressed a rate (crash-free sessions, ANRs, any ratio)
by more than a tolerance against a baseline, deciding from counts (events out of exposures), not
from rounded percentages. The regression is r = baseline rate - this rate when higher is better
(the other way round when lower is better); the gate

- passes when an upper confidence bound of r is below the tolerance (the release is at worst a
  little worse than its baseline, by less than matters),
- fails when a lower confidence bound of r is above the tolerance (it is worse by more), and
- otherwise waits, saying how many more exposures would settle it at the current estimate.

Why a sequential method: crash data arrive every hour and the gate looks at each report. A
fixed-sample test at level alpha, looked at every hour, is wrong far more often than alpha
(over a week of hourly looks, several times). So the bounds are an always-valid confidence
sequence: the normal-mixture boundary (Robbins 1970; Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, eq. 14;
the mixture SPRT of Johari, Pekelis and Walsh, "Always valid inference", 2017). With the
estimate's variance v and a mixing variance rho, the half-width

    w(v) = sqrt( 2 v (v + rho) / rho * log( sqrt((v + rho) / v) / alpha ) )

holds for every look at once with probability 1 - alpha, however often and for however long the
gate looks. rho is set from the tolerance (rho = tolerance**2), which makes the sequence tightest
around the sample sizes where a regression of about the tolerance can be told apart.

What comes from libraries: the difference of the two proportions and its variance come from
statsmodels (test_proportions_2indep, Agresti-Caffo adjusted, so zero events in a small sample
do not claim certainty), and the number of exposures still needed is found with scipy's brentq.
The boundary formula itself is written here: neither scipy nor statsmodels offers confidence
sequences, and the one package that does (confseq) is an unmaintained C++ build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower"]
Verdict = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Comparison:
    """What a comparison found: the regression estimate and its bounds, in proportions (0..1)."""

    regression: float  # baseline - this (higher is better) or this - baseline: positive is worse
    lower: float  # the regression is above this, with probability 1 - alpha
    upper: float  # and below this, with probability 1 - beta
    verdict: Verdict
    needed: int | None  # with "wait": about how many more exposures of this release would settle it


def half_width(variance: float, rho: float, alpha: float) -> float:
    """The normal-mixture confidence-sequence half-width for an estimate of variance `variance`."""
    if variance <= 0:
        return 0.0
    return math.sqrt(2 * variance * (variance + rho) / rho * math.log(math.sqrt((variance + rho) / variance) / alpha))


def _estimate(events: int, exposures: int, base_events: int, base_exposures: int) -> tuple[float, float]:
    """(this rate - baseline rate, its variance), Agresti-Caffo adjusted (statsmodels)."""
    from statsmodels.stats.proportion import test_proportions_2indep  # ~1 s to import: only when a compare gate runs

    result = test_proportions_2indep(events, exposures, base_events, base_exposures, method="agresti-caffo", compare="diff")
    variance = float(result.variance)
    return float(result.statistic) * math.sqrt(variance), variance


def compare_rates(
    events: int,
    exposures: int,
    base_events: int,
    base_exposures: int,
    *,
    better: Better,
    tolerance: float,
    alpha: float,
    beta: float,
) -> Comparison:
    """Judge this release's rate (events/exposures) against the baseline's (see the module docstring).

    `tolerance` is the smallest regression that matters, as a proportion (0.001 = 0.1 percentage
    points); `alpha` bounds the chance of failing a release that is within it, `beta` of passing
    one that is beyond it."""
    diff, variance = _estimate(events, exposures, base_events, base_exposures)
    regression = -diff if better == "higher" else diff
    rho = tolerance**2
    lower = regression - half_width(variance, rho, alpha)
    upper = regression + half_width(variance, rho, beta)
    if lower > tolerance:
        return Comparison(regression, lower, upper, "fail", None)
    if upper < tolerance:
        return Comparison(regression, lower, upper, "pass", None)
    needed = _needed(events, exposures, base_events, base_exposures, better, tolerance, rho, alpha if regression > tolerance else beta)
    return Comparison(regression, lower, upper, "wait", needed)


def _needed(
    events: int, exposures: int, base_events: int, base_exposures: int, better: Better, tolerance: float, rho: float, level: float
) -> int | None:
    """About how many more exposures of this release, at the same rate, would make the bound clear
    the tolerance (on the side the estimate is on); None when no number would (the estimate sits on
    the tolerance, or the baseline alone is too uncertain). The estimate is recomputed at each
    size, as the Agresti-Caffo adjustment fades with more data."""
    from scipy.optimize import brentq

    rate = events / exposures if exposures else 0.0
    sign = -1.0 if better == "higher" else 1.0

    def short(extra: float) -> float:
        n = exposures + extra
        diff, variance = _estimate(round(rate * n), round(n), base_events, base_exposures)
        return half_width(variance, rho, level) - abs(sign * diff - tolerance)

    if short(0) <= 0:
        return 0
    ceiling = max(exposures, 1000) * 1000.0
    if short(ceiling) > 0:
        return None
    root: float = brentq(short, 0.0, ceiling, xtol=1.0)
    return math.ceil(root)
