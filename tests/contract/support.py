"""What the pulled sources' contract tests share: the fixed clock, timeouts, and the check every
source must pass for a fault (a failed reading per signal with a reason, never a value)."""

from __future__ import annotations

from datetime import UTC, datetime

from conductor.sources.pull.base import FetchResult

NOW = datetime(2026, 11, 30, 9, 12, tzinfo=UTC)
TIMEOUT_S = 0.5
LATE_S = 1.5  # a fault's delay past the client's timeout


def assert_failed(result: FetchResult, signals: tuple[str, ...], *fragments: str) -> str:
    """Every signal failed with the same reason, holding each fragment; no value anywhere."""
    assert [r.signal for r in result.readings] == list(signals)
    reasons = {r.error for r in result.readings}
    assert len(reasons) == 1, reasons
    reason = reasons.pop()
    assert reason, result.readings
    assert all(r.value is None and r.samples is None and r.events is None for r in result.readings)
    for fragment in fragments:
        assert fragment in reason, reason
    return reason
