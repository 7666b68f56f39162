"""Use cases for what the gates read: signal values (one, or a batch such as a test report) and sign-offs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from conductor.context import Context
from conductor.domain.definition import SignalType
from conductor.domain.errors import InvalidSignal
from conductor.domain.kinds import SIGNOFF_PREFIX, AuditKind
from conductor.service.evaluation import judge
from conductor.service.step import ROBOT_ACTOR, Actor, ReleaseStep, open_step
from conductor.sources.events import SignalIn

log = structlog.get_logger("conductor.service")

_BOOLEAN_WORDS = {"true": 1.0, "pass": 1.0, "1": 1.0, "false": 0.0, "fail": 0.0, "0": 0.0}


def check_value(name: str, kind: SignalType, value: Any) -> float:
    """The value as float if it fits the declared type, else InvalidSignal naming both."""
    if isinstance(value, bool):
        if kind == "boolean":
            return 1.0 if value else 0.0
        raise InvalidSignal(f"signal {name!r} is a {kind}, got a boolean")
    if isinstance(value, str):
        text = value.strip().lower()
        if kind == "boolean" and text in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[text]
        try:
            value = float(text)
        except ValueError:
            raise InvalidSignal(f"signal {name!r} is a {kind}; {value!r} is not a number") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSignal(f"signal {name!r} is a {kind}; {value!r} is not a finite number")
    v = float(value)
    if kind == "boolean" and v not in (0.0, 1.0):
        raise InvalidSignal(f"signal {name!r} is a boolean; use 1/0 or true/false, not {value!r}")
    if kind == "count" and (v < 0 or not v.is_integer()):
        raise InvalidSignal(f"signal {name!r} is a count; {value!r} is not a whole number >= 0")
    if kind == "ratio" and not 0.0 <= v <= 1.0:
        raise InvalidSignal(f"signal {name!r} is a ratio; {value!r} is outside 0..1")
    if kind == "percent" and not 0.0 <= v <= 100.0:
        raise InvalidSignal(f"signal {name!r} is a percent; {value!r} is outside 0..100")
    return v


def add_signal(
    step: ReleaseStep,
    name: str,
    value: Any,
    *,
    actor: Actor,
    source: str,
    samples: int | None = None,
    observed_at: datetime | None = None,
    sha: str | None = None,
    error: str | None = None,
    events: int | None = None,
) -> None:
    """Check a value against the pipeline's declaration and store it (InvalidSignal names the problem)."""
    spec = step.pipeline.signals.get(name)
    if spec is None:
        raise InvalidSignal(f"unknown signal {name!r} for {step.release.key}; declared: {', '.join(sorted(step.pipeline.signals))}")
    v = None if error is not None else check_value(name, spec.type, value)
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 0):
        raise InvalidSignal(f"samples of {name!r} must be a whole number >= 0, got {samples!r}")
    if events is not None and (
        not isinstance(events, int) or isinstance(events, bool) or events < 0 or samples is None or events > samples
    ):
        raise InvalidSignal(f"events of {name!r} must be a whole number from 0 to its samples ({samples}), got {events!r}")
    step.add_signal(name, v, actor=actor.name, source=source, samples=samples, observed_at=observed_at, sha=sha, error=error, events=events)
    log.info("signal_recorded", release_id=step.release.id, signal=name, value=v, samples=samples, source=source, event_id=step.event_id)


def audit_intake(step: ReleaseStep, actor: Actor, source: str, values: dict[str, Any], *, sha: str | None, what: str = "signals") -> None:
    """One `signals_recorded` audit row for one intake (a CLI or REST call, a batch, a test report,
    an inbound event): every path that stores signals writes it, so every intake is on the timeline."""
    step.audit(
        AuditKind.SIGNALS_RECORDED,
        actor.name,
        f"{what} from {source}: {', '.join(values)}",
        data={"values": values, "sha": sha, "role": actor.role},
    )


def record_signal(
    ctx: Context,
    ref: int | str,
    name: str,
    value: Any,
    *,
    samples: int | None = None,
    source: str = "manual",
    observed_at: datetime | None = None,
    sha: str | None = None,
    error: str | None = None,
    actor: Actor = ROBOT_ACTOR,
    evaluate: bool = True,
    expected_version: int | None = None,
    events: int | None = None,
) -> str | None:
    """Store a signal value (or a source error) and re-evaluate; returns the verdict, if any."""
    with open_step(ctx, ref, expected_version=expected_version) as step:
        add_signal(step, name, value, actor=actor, source=source, samples=samples, observed_at=observed_at, sha=sha, error=error,
                   events=events)  # fmt: skip
        audit_intake(step, actor, source, {name: None if error is not None else value}, sha=sha, what="signal")
        if not evaluate:
            return None
        d = judge(step, trigger=f"signal:{name}")
        return d.verdict.value if d else None


@dataclass(frozen=True)
class SignalBatch:
    release_id: int
    recorded: list[str]
    ignored: list[str]  # not declared by the release's pipeline (test reports only)
    verdict: str | None


def record_signals(
    ctx: Context,
    ref: int | str,
    signals: list[SignalIn] | list[dict[str, Any]],
    actor: Actor,
    *,
    source: str = "api",
    sha: str | None = None,
    only_declared: bool = False,
    what: str = "signals",
    expected_version: int | None = None,
) -> SignalBatch:
    """Several values at once (a pushed batch, a test report): stored, audited once, judged once.

    With `only_declared`, signals the pipeline does not declare are skipped (a test report carries
    every tests_* count, a pipeline uses a few); otherwise an undeclared name is InvalidSignal and
    nothing is written. Values of the wrong type are InvalidSignal either way.
    """
    items = [s if isinstance(s, SignalIn) else SignalIn.model_validate(s) for s in signals]
    if not items:
        raise InvalidSignal("no signals given")
    with open_step(ctx, ref, expected_version=expected_version) as step:
        recorded, ignored = [], []
        for sig in items:
            if sig.name not in step.pipeline.signals and only_declared:
                ignored.append(sig.name)
                continue
            add_signal(step, sig.name, sig.value, actor=actor, source=source, samples=sig.samples, sha=sha, events=sig.events)
            recorded.append(sig.name)
        verdict = None
        if recorded:
            audit_intake(step, actor, source, {sig.name: sig.value for sig in items if sig.name in recorded}, sha=sha, what=what)
            d = judge(step, trigger=f"{what}:{source}")
            verdict = d.verdict.value if d else None
        return SignalBatch(step.release.id, recorded, ignored, verdict)


def sign_off(
    ctx: Context,
    ref: int | str,
    team: str,
    actor: Actor,
    *,
    approved: bool = True,
    reason: str = "",
    expected_version: int | None = None,
) -> str | None:
    """A team's sign-off (or its refusal) for the release; re-evaluates and returns the verdict."""
    with open_step(ctx, ref, expected_version=expected_version) as step:
        teams = {t for g in step.pipeline.gates.values() if g.kind == "signoff" for t in g.teams}
        if team not in teams:
            raise InvalidSignal(f"team {team!r} signs off nothing in {step.pipeline.name}; teams: {', '.join(sorted(teams)) or 'none'}")
        step.add_signal(f"{SIGNOFF_PREFIX}{team}", 1.0 if approved else 0.0, actor=actor.name, source="signoff")
        step.audit(AuditKind.SIGNED_OFF if approved else AuditKind.SIGNOFF_REFUSED, actor.name, reason or team, data={"team": team})
        d = judge(step, trigger=f"signoff:{team}")
        return d.verdict.value if d else None
