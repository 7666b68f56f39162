"""Sentry release health: crash-free sessions and users of one release.

One request per poll, to the organization sessions endpoint
(https://docs.sentry.io/api/releases/retrieve-release-health-session-statistics/):

    GET {base_url}/api/0/organizations/{organization}/sessions/
        ?field=crash_free_rate(session)&field=sum(session)     (the fields the signals need)
        &project={project}&query=release:"{release name}"&groupBy=release
        &statsPeriod=24h&interval=1h[&environment=production]
    Authorization: Bearer {token}

The answer holds one group per release ({"by": {"release": ...}, "totals": {field: value}}); the
totals over the period are read. crash_free_rate is a fraction (null when there were no
sessions), turned into a percent; its samples are the sessions (or users) and its events the
crash-free ones, round(rate x samples). The release is named by the track's release_name template
(PullTarget.release_name, e.g. com.acme.app@8.9.0+8901), or the plain version when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field, StringConstraints

from conductor.connect.credentials import CredentialRef
from conductor.sources.pull._http import (
    BaseUrl,
    Call,
    Fault,
    PullConfig,
    SignalName,
    count,
    field,
    number,
    percent,
    pull,
    reading,
    timestamp,
)
from conductor.sources.pull.base import FetchResult, PullTarget, Reading

SentryMeasure = Literal["crash_free_sessions", "crash_free_users", "sessions", "users"]
SentryPeriod = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,4}[mhdw]$")]

# measure -> (the rate field or None, the count field)
_FIELDS: dict[str, tuple[str | None, str]] = {
    "crash_free_sessions": ("crash_free_rate(session)", "sum(session)"),
    "crash_free_users": ("crash_free_rate(user)", "count_unique(user)"),
    "sessions": (None, "sum(session)"),
    "users": (None, "count_unique(user)"),
}


class SentryConfig(PullConfig):
    """A Sentry project's release health (sentry.io, or a self-hosted Sentry at base_url)."""

    kind: Literal["sentry"]
    base_url: BaseUrl = "https://sentry.io"
    organization: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100, description="organization slug or id")
    project: int = Field(gt=0, description="the project's numeric id (the sessions endpoint filters by id)")
    environment: str | None = Field(default=None, min_length=1, max_length=200)
    stats_period: SentryPeriod = Field(default="24h", description="the window the totals cover, in Sentry's form (24h, 7d)")
    resolution: SentryPeriod = Field(default="1h", description="the series' interval query parameter; must divide a day")
    token: CredentialRef = Field(description="an auth token with org:read")
    signals: dict[SignalName, SentryMeasure] = Field(min_length=1)


class SentrySource:
    """Polls Sentry's sessions endpoint for one release's crash-free rates."""

    kind = "sentry"

    def __init__(self, config: SentryConfig, client: httpx.Client):
        self.config = config
        self.client = client

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def fetch(self, target: PullTarget, now: datetime) -> FetchResult:
        return pull("sentry", self.signals(), self.client, now, lambda call: self._read(call, target))

    def _params(self, release: str) -> list[tuple[str, str]]:
        config = self.config
        fields = sorted({f for measure in config.signals.values() for f in _FIELDS[measure] if f is not None})
        quoted = release.replace("\\", "\\\\").replace('"', '\\"')
        params = [("field", f) for f in fields]
        params += [("project", str(config.project)), ("query", f'release:"{quoted}"'), ("groupBy", "release")]
        params += [("statsPeriod", config.stats_period), ("interval", config.resolution)]
        if config.environment:
            params.append(("environment", config.environment))
        return params

    def _read(self, call: Call, target: PullTarget) -> Sequence[Reading]:
        config = self.config
        release = target.release_name or target.version
        token = call.secret(config.token)
        url = f"{config.base_url}/api/0/organizations/{config.organization}/sessions/"
        answer = call.get_json(url, params=self._params(release), headers={"authorization": f"Bearer {token}"})
        totals = self._totals(answer, release)
        at = min(timestamp(answer["end"], "the answer's end"), call.now) if isinstance(answer, dict) and "end" in answer else call.now
        return [self._reading(signal, measure, totals, release, at) for signal, measure in config.signals.items()]

    def _totals(self, answer: Any, release: str) -> dict[str, Any]:
        groups = field(answer, "groups")
        if not isinstance(groups, list):
            raise Fault("the answer's groups is not a list")
        if not groups:
            raise Fault(f"no sessions for release {release} in the last {self.config.stats_period} (an empty series)")
        named = [g.get("by", {}).get("release") if isinstance(g, dict) and isinstance(g.get("by"), dict) else None for g in groups]
        mine = [g for g, name in zip(groups, named, strict=True) if name == release]
        if not mine:
            others = sorted({str(n) for n in named})
            raise Fault(f"the series is for release {others[0]}, not {release}")
        totals = field(mine[0], "totals")
        if not isinstance(totals, dict):
            raise Fault("the release's totals is not an object")
        return totals

    def _reading(self, signal: str, measure: str, totals: dict[str, Any], release: str, at: datetime) -> Reading:
        rate_field, count_field = _FIELDS[measure]
        if count_field not in totals:
            raise Fault(f"the answer has no {count_field} total (a missing field)")
        samples = count(totals[count_field], count_field) if totals[count_field] is not None else 0
        if rate_field is None:
            return reading(signal, float(samples), at)
        if rate_field not in totals:
            raise Fault(f"the answer has no {rate_field} total (a missing field)")
        if totals[rate_field] is None or samples == 0:
            raise Fault(f"no sessions for release {release} in the last {self.config.stats_period} ({rate_field} is null)")
        rate = number(totals[rate_field], rate_field)
        value = percent(rate, rate_field)
        return reading(signal, value, at, samples=samples, events=round(rate * samples))
