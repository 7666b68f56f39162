"""Generic JSON over HTTP: one GET, values picked out with JSONPath (RFC 9535, python-jsonpath).

For APIs without a source of their own: Bugsnag stability scores, Datadog metric queries,
internal dashboards. The URL is a template ({version} and the target's other fields, URL-encoded,
and {now} and {since}: epoch seconds of the fetch and of `window` before it, for APIs that take a
time range); headers are literal text or secrets by reference (optionally after a prefix such as "token ").
Per signal: a JSONPath to the value and, optionally, to its samples, events, observed time
(ISO 8601 or epoch seconds; above 1e11 read as milliseconds) and to the release the answer is
about, which must equal `expect_release` ({version} by default). Each path must match exactly one
value: none is a missing field or an empty series, several an ambiguous path.

    kind: json
    url: https://api.datadoghq.com/api/v1/query?from={since}&to={now}&query=sum:app.crashes{version:{version}}.as_count()
    headers: {DD-API-KEY: {env: DD_API_KEY}, DD-APPLICATION-KEY: {env: DD_APP_KEY}}
    signals:
      crashes: {value: "$.series[0].pointlist[-1][1]", observed_at: "$.series[0].pointlist[-1][0]",
                release: "$.series[0].scope", expect_release: "version:{version}"}
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import jsonpath
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from conductor.connect.credentials import CredentialRef
from conductor.domain.definition import Duration
from conductor.sources.pull._http import (
    Call,
    Fault,
    PullConfig,
    SignalName,
    Template,
    count,
    expand,
    known_placeholders,
    number,
    pull,
    reading,
    timestamp,
)
from conductor.sources.pull.base import FetchResult, PullTarget, Reading


def _compiles(path: str) -> str:
    try:
        jsonpath.compile(path)
    except jsonpath.JSONPathError as exc:
        raise ValueError(f"{path!r} is not a JSONPath: {' '.join(str(exc).split())}") from None
    return path


TIME_PLACEHOLDERS = ("now", "since")
UrlTemplate = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(lambda t: known_placeholders(t, TIME_PLACEHOLDERS))]
JsonPath = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_compiles)]


class HeaderSecret(BaseModel):
    """A header whose value is a secret, sent after `prefix` ("token ", "Bearer ")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credential: CredentialRef
    prefix: str = Field(default="", max_length=100)


class JsonSignal(BaseModel):
    """Where one signal's value (and counts, time, release) is in the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    value: JsonPath
    scale: float = Field(default=1.0, gt=0, description="the value is multiplied by it: 100 turns a fraction into a percent")
    samples: JsonPath | None = None
    events: JsonPath | None = None
    observed_at: JsonPath | None = None
    release: JsonPath | None = Field(default=None, description="where the answer names the release it is about")
    expect_release: Template = "{version}"

    @model_validator(mode="after")
    def _events_need_samples(self) -> JsonSignal:
        if self.events is not None and self.samples is None:
            raise ValueError("events count some of the samples: give samples too")
        return self


class JsonHttpConfig(PullConfig):
    """A JSON API polled with one GET; each signal picks its numbers out of the answer."""

    kind: Literal["json"]
    url: UrlTemplate = Field(description="http(s) URL template; placeholders are URL-encoded")
    window: Duration = Field(default=timedelta(hours=1), description="{since} is this long before {now}")
    headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")], str | CredentialRef | HeaderSecret] = {}
    signals: dict[SignalName, JsonSignal] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url.replace("{", "").replace("}", ""))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("credentials go in headers by reference, not in the URL")
        return url


class JsonHttpSource:
    """GETs the configured URL for the target and reads each signal by JSONPath."""

    kind = "json"

    def __init__(self, config: JsonHttpConfig, client: httpx.Client):
        self.config = config
        self.client = client

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def fetch(self, target: PullTarget, now: datetime) -> FetchResult:
        return pull("json", self.signals(), self.client, now, lambda call: self._read(call, target))

    def _headers(self, call: Call) -> dict[str, str]:
        headers = {}
        for name, value in self.config.headers.items():
            if isinstance(value, CredentialRef):
                headers[name] = call.secret(value)
            elif isinstance(value, HeaderSecret):
                headers[name] = value.prefix + call.secret(value.credential)
            else:
                headers[name] = value
        return headers

    def _read(self, call: Call, target: PullTarget) -> Sequence[Reading]:
        times = {"now": str(int(call.now.timestamp())), "since": str(int((call.now - self.config.window).timestamp()))}
        url = expand(self.config.url, target, escape=lambda v: quote(v, safe=""), extra=times)
        answer = call.get_json(url, headers=self._headers(call))
        return [self._reading(signal, spec, answer, target, call.now) for signal, spec in self.config.signals.items()]

    def _reading(self, signal: str, spec: JsonSignal, answer: Any, target: PullTarget, now: datetime) -> Reading:
        if spec.release is not None:
            named = _one(answer, spec.release, f"{signal}'s release")
            expected = expand(spec.expect_release, target)
            if str(named) != expected:
                raise Fault(f"the series is for release {named}, not {expected}")
        value = number(_one(answer, spec.value, f"{signal}'s value"), f"{signal}'s value at {spec.value}") * spec.scale
        samples = count(_one(answer, spec.samples, f"{signal}'s samples"), f"{signal}'s samples") if spec.samples else None
        events = count(_one(answer, spec.events, f"{signal}'s events"), f"{signal}'s events") if spec.events else None
        at = timestamp(_one(answer, spec.observed_at, f"{signal}'s time"), f"{signal}'s time") if spec.observed_at else now
        return reading(signal, round(value, 9), at, samples=samples, events=events)


def _one(answer: Any, path: str, what: str) -> Any:
    """The single value at `path`; a Fault for none (missing field, empty series) or several."""
    try:
        found = jsonpath.findall(path, answer)
    except jsonpath.JSONPathError as exc:
        raise Fault(f"{what}: {path} cannot be applied ({' '.join(str(exc).split())})") from None
    if not found:
        raise Fault(f"nothing at {path} for {what} (a missing field or an empty series)")
    if len(found) > 1:
        raise Fault(f"{path} matches {len(found)} values for {what}, not one")
    return found[0]
