"""HTTP answers, read the same way by every adapter."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

USER_AGENT = "conductor-release-robot"


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """A response's Retry-After in seconds (delay-seconds or an HTTP date, RFC 9110 10.2.3); None
    when absent or unreadable."""
    from email.utils import parsedate_to_datetime

    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max((at - (now or datetime.now(UTC))).total_seconds(), 0.0)
