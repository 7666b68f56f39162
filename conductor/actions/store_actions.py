"""The store actions of a release, performed through its track's StoreClient.

    distribute(ring)           the build to the store ring the connection maps `ring` to
    submit_to_store(percent)   the build into production at the first percentage
    set_rollout(percent)       production at `percent` (100 completes it)
    halt_rollout               Play halted / App Store phased release paused
    resume_rollout             back to where it was

The build is the release's (from CI, a person, or found earlier); when nobody said it, the store
is asked which build carries the release's version (a testing-track release of that name); when
the store does not know either, the action fails for a person to say it, never guesses. Every
StoreClient call is idempotent by state, so the outbox may retry any of these safely.
"""

from __future__ import annotations

from typing import Any

from conductor.actions.base import ActionFailed, ActionOutcome, ActionRequest
from conductor.actions.connections import AppStoreConnection, PlayConnection
from conductor.actions.stores.base import StoreClient, StoreRollout


class StoreActions:
    """Performs one track's store actions (an ActionAdapter)."""

    def __init__(self, client: StoreClient, connection: PlayConnection | AppStoreConnection):
        self.client, self.connection = client, connection

    def run(self, request: ActionRequest) -> ActionOutcome:
        r, action, params = request.release, request.action, request.params
        build = self._build(r.build, r.version)
        if action == "distribute":
            ring = str(params.get("ring"))
            target = self.connection.rings.get(ring)
            if target is None:
                raise ActionFailed(f"distribute: the store connection maps no ring {ring!r}", retryable=False)
            state = self.client.distribute(build, r.version, target)
        elif action in ("submit_to_store", "set_rollout"):
            state = self.client.rollout(build, r.version, _percent(action, params), notes=params.get("notes"),
                                        priority=params.get("priority"))  # fmt: skip
        elif action == "halt_rollout":
            state = self.client.halt(build, r.version)
        elif action == "resume_rollout":
            state = self.client.resume(build, r.version)
        else:
            raise ActionFailed(f"{action} is not a store action", retryable=False)
        return ActionOutcome(
            "done",
            f"{self.client.kind}: {describe(state)}",
            {"store": state.as_dict(), "kind": self.client.kind, "build": build, "production": action != "distribute"},
        )

    def _build(self, known: str | None, version: str) -> str:
        if known:
            return known
        found = self.client.find_build(version)
        if found:
            return found
        raise ActionFailed(
            f"the store build of {version} is unknown: neither CI nor a person said it, and {self.client.kind} has no release named "
            f"{version} on a testing track; set it with `conductor build RELEASE BUILD` or PUT /releases/{{id}}/build",
            retryable=False,
        )


def _percent(action: str, params: dict[str, Any]) -> float:
    percent = params.get("percent")
    if not isinstance(percent, int | float) or isinstance(percent, bool):
        raise ActionFailed(f"{action}: no percent (give it on the action or on the rollout stage)", retryable=False)
    return float(percent)


def describe(state: StoreRollout) -> str:
    """A store state in a few words: 'in_progress at 1% (build 8901)', 'halted', 'day 3 of 7'."""
    parts = [state.status.replace("_", " ")]
    if state.percent is not None and state.status not in ("completed", "none"):
        parts.append(f"at {state.percent:g}%")
    if state.day is not None:
        parts.append(f"(day {state.day} of 7)")
    if state.build:
        parts.append(f"build {state.build}")
    return " ".join(parts)
