"""`Conductor`: one object for callers that want the use cases as methods (the CLI, the demo, tests).

A thin façade: it is a Context (database, definitions, clock) and each method is one call of a use
case in conductor.service or a read in conductor.read, which take the context as their first
argument. It holds no logic of its own; code that needs only one concern imports that module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conductor.context import Context
from conductor.domain.decisions import Decision
from conductor.read import release as read_release
from conductor.read.release import ReleaseSnapshot
from conductor.service import approvals, evaluation, releases, signals, timers, tracks
from conductor.service.step import ROBOT_ACTOR, Actor


class Conductor(Context):
    """The use cases as methods (see the module docstring); every one is idempotent or says it is not."""

    # ---- tracks and releases

    def ensure_track(
        self,
        track_id: str,
        definition: str,
        *,
        repository: str | None = None,
        branch_pattern: str = "release/{version}",
        four_eyes: bool = False,
        actor: Actor = ROBOT_ACTOR,
    ) -> str:
        return tracks.ensure_track(
            self, track_id, definition, repository=repository, branch_pattern=branch_pattern, four_eyes=four_eyes, actor=actor
        )

    def start_release(self, track_id: str, version: str, actor: Actor = ROBOT_ACTOR) -> int:
        return releases.start_release(self, track_id, version, actor)

    def pause(self, ref: int | str, actor: Actor, reason: str, *, expected_version: int | None = None) -> bool:
        return releases.pause(self, ref, actor, reason, expected_version=expected_version)

    def resume(self, ref: int | str, actor: Actor, reason: str, *, expected_version: int | None = None, restore_flags: bool = False) -> str:
        return releases.resume(self, ref, actor, reason, expected_version=expected_version, restore_flags=restore_flags)

    def cancel(self, ref: int | str, actor: Actor, reason: str, *, expected_version: int | None = None) -> str:
        return releases.cancel(self, ref, actor, reason, expected_version=expected_version)

    # ---- signals and evaluation

    def record_signal(
        self,
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
        events: int | None = None,
    ) -> str | None:
        return signals.record_signal(
            self, ref, name, value, samples=samples, source=source, observed_at=observed_at, sha=sha, error=error, actor=actor,
            evaluate=evaluate, events=events,
        )  # fmt: skip

    def set_build(self, ref: int | str, build: str, actor: Actor, reason: str = "") -> str | None:
        return releases.record_build(self, ref, build, actor, reason)

    def sign_off(self, ref: int | str, team: str, actor: Actor, *, approved: bool = True, reason: str = "") -> str | None:
        return signals.sign_off(self, ref, team, actor, approved=approved, reason=reason)

    def evaluate(self, ref: int | str, trigger: str = "manual") -> Decision | None:
        return evaluation.evaluate(self, ref, trigger)

    # ---- human decisions

    def approve(
        self, ref: int | str, actor: Actor, reason: str, *, evaluation_id: int | None = None, fingerprint: str | None = None
    ) -> str:
        return approvals.approve(self, ref, actor, reason, evaluation_id=evaluation_id, fingerprint=fingerprint)

    def reject(self, ref: int | str, actor: Actor, reason: str, *, evaluation_id: int | None = None) -> str:
        return approvals.reject(self, ref, actor, reason, evaluation_id=evaluation_id)

    # ---- time and reading

    def tick(self, limit: int = timers.TICK_LIMIT) -> int:
        return timers.tick(self, limit)

    def snapshot(self, ref: int | str) -> ReleaseSnapshot:
        return read_release.snapshot(self, ref)
