"""Time as a dependency: the engine asks a clock, so tests and the demo can move it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock in UTC (freezegun and time-machine patch this too)."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to: for the demo and for tests that drive many steps."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now
