"""The dashboard's formatters (conductor.api.dashboard.render): pure functions, no server."""

from __future__ import annotations

from datetime import timedelta

from conductor.api.dashboard.render import duration


def test_durations_are_never_negative():
    assert duration(timedelta(days=2, hours=3, minutes=5)) == "2d 3h"
    assert duration(timedelta(minutes=45)) == "45m"
    assert duration(timedelta(hours=-15, minutes=-51)) == "0s"
    assert duration(None) == "–"
