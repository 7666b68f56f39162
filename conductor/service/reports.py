"""Several signals at once (a pushed batch, a test report): one transaction, one audit entry, one evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conductor.errors import InvalidSignal
from conductor.service.engine import Actor, Conductor
from conductor.sources.events import SignalIn


@dataclass(frozen=True)
class SignalBatch:
    release_id: int
    recorded: list[str]
    ignored: list[str]  # not declared by the release's pipeline (test reports only)
    verdict: str | None


def record_signals(
    c: Conductor,
    ref: int | str,
    signals: list[SignalIn] | list[dict[str, Any]],
    actor: Actor,
    *,
    source: str = "api",
    sha: str | None = None,
    only_declared: bool = False,
    what: str = "signals",
) -> SignalBatch:
    """Store the values, audit who sent them, and re-evaluate once.

    With `only_declared`, signals the pipeline does not declare are skipped (a test report carries
    every tests_* count, a pipeline uses a few); otherwise an undeclared name is InvalidSignal and
    nothing is written. Values of the wrong type are InvalidSignal either way.
    """
    items = [s if isinstance(s, SignalIn) else SignalIn.model_validate(s) for s in signals]
    if not items:
        raise InvalidSignal("no signals given")
    with c._commit_guard() as s:
        release = c._find(s, ref, lock=True)
        pipeline = c.pipeline_of(s, release)
        recorded, ignored = [], []
        for sig in items:
            if sig.name not in pipeline.signals and only_declared:
                ignored.append(sig.name)
                continue
            c._add_signal(s, release, pipeline, sig.name, sig.value, samples=sig.samples, source=source, sha=sha, actor=actor)
            recorded.append(sig.name)
        if recorded:
            values = {sig.name: sig.value for sig in items if sig.name in recorded}
            c._audit(s, release, "signals_recorded", actor.name, f"{what} from {source}: {', '.join(recorded)}",
                     data={"values": values, "sha": sha, "role": actor.role})
            d = c._evaluate_locked(s, release, pipeline, trigger=f"{what}:{source}")
        else:
            d = None
        return SignalBatch(release.id, recorded, ignored, d.verdict.value if d else None)
