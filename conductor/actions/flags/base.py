"""What Conductor does to a feature flag: on, off, or on for a percentage. Idempotent by state."""

from __future__ import annotations

from typing import Any, Protocol


class FlagClient(Protocol):
    kind: str  # unleash, flagsmith

    def check(self) -> str:
        """One read-only call: a sentence, or ActionFailed naming the credential problem."""

    def set(self, flag: str, environment: str, enabled: bool, percent: int | None = None) -> dict[str, Any]:
        """Switch `flag` in `environment` on or off (on for `percent` % when given); reads first and
        does nothing when it already is so."""
