"""What every pulled source takes and returns.

A source is polled for one release at a time and answers with readings, one per signal it maps.
It never raises for the vendor's faults: an HTTP error, a timeout, an HTML error page, a missing
field, an empty series or a series for another release is a reading with `error` set (a
SOURCE_ERROR signal: inconclusive, never a pass), and a 429's Retry-After is handed back so the
poller waits at least that long. Only a bug raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PullTarget:
    """The release a poll is about, as the vendor names it."""

    track: str
    version: str  # 8.9.0
    stage: str  # the release's current stage (ring)
    build: str | None = None  # Play versionCode / App Store build number, when known
    release_name: str | None = None  # the track's release_name template applied, e.g. com.acme.app@8.9.0+8901
    package: str | None = None  # Play package name / App Store bundle id, when the track has one


@dataclass(frozen=True)
class Reading:
    """One signal value (or the reason there is none) for the target release."""

    signal: str  # the pipeline's signal name
    value: float | None
    observed_at: datetime  # when the vendor measured it (its freshness), not when it was fetched
    samples: int | None = None
    events: int | None = None  # of the samples, how many the value counts (crash-free sessions)
    error: str | None = None  # set: a SOURCE_ERROR with this reason; value is None

    @classmethod
    def failed(cls, signal: str, at: datetime, reason: str) -> Reading:
        return cls(signal, None, at, error=reason)


@dataclass(frozen=True)
class FetchResult:
    readings: tuple[Reading, ...]
    retry_after_s: float | None = None  # the vendor asked us to wait this long (429)
    latency_s: float | None = None
    notes: tuple[str, ...] = field(default=())  # what was asked, for `conductor sources check`


class PullSource(Protocol):
    """One configured source of a track."""

    kind: str  # sentry, play_vitals, jira, github_issues, gitlab_issues, prometheus, json

    def signals(self) -> tuple[str, ...]:
        """The pipeline signals this source produces."""

    def fetch(self, target: PullTarget, now: datetime) -> FetchResult:
        """Poll the vendor once for `target`; never raises for the vendor's faults (see above)."""
