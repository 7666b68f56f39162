"""Prometheus (or a compatible API: Thanos, Mimir, VictoriaMetrics): an instant PromQL query per signal.

    GET {base_url}/api/v1/query?query={the signal's query, placeholders filled}
    (https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries)

The answer must be {"status": "success", "data": {"resultType": "vector", "result": [one sample]}}
(or a scalar): its value is the reading's value and its timestamp the observed time. An error
status, an empty result ("no series") or several series (the query must aggregate to one) is a
failed reading; so is a series whose `version_label` names another version. Optional `samples`
and `events` queries give the counts behind a rate (e.g. all requests, and the failed ones).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conductor.connect.credentials import CredentialRef
from conductor.sources.pull._http import (
    BaseUrl,
    Call,
    Fault,
    PullConfig,
    SignalName,
    Template,
    count,
    expand,
    field,
    number,
    pull,
    reading,
    timestamp,
)
from conductor.sources.pull.base import FetchResult, PullTarget, Reading


class PromQuery(BaseModel):
    """A value query and, optionally, the count queries behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: Template
    samples: Template | None = None
    events: Template | None = None

    @model_validator(mode="after")
    def _events_need_samples(self) -> PromQuery:
        if self.events is not None and self.samples is None:
            raise ValueError("events count some of the samples: give a samples query too")
        return self


class PrometheusConfig(PullConfig):
    """A Prometheus-compatible query API; a signal maps to a PromQL query or to {query, samples, events}."""

    kind: Literal["prometheus"]
    base_url: BaseUrl = Field(description="e.g. http://prometheus:9090, or https://mimir.example.com/prometheus")
    token: CredentialRef | None = Field(default=None, description="sent as a Bearer token, or as Basic auth's password with username")
    username: str | None = Field(default=None, min_length=1, max_length=200)
    version_label: str | None = Field(default="version", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
                                      description="a series label that, when present, must equal the release's version")  # fmt: skip
    signals: dict[SignalName, Template | PromQuery] = Field(min_length=1)

    @model_validator(mode="after")
    def _username_needs_token(self) -> PrometheusConfig:
        if self.username is not None and self.token is None:
            raise ValueError("username is for Basic auth: give the password as token")
        return self


class PrometheusSource:
    """Runs the signals' instant queries against one Prometheus-compatible API."""

    kind = "prometheus"

    def __init__(self, config: PrometheusConfig, client: httpx.Client):
        self.config = config
        self.client = client

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def fetch(self, target: PullTarget, now: datetime) -> FetchResult:
        return pull("prometheus", self.signals(), self.client, now, lambda call: self._read(call, target))

    def _headers(self, call: Call) -> dict[str, str]:
        if self.config.token is None:
            return {}
        secret = call.secret(self.config.token)
        if self.config.username is None:
            return {"authorization": f"Bearer {secret}"}
        basic = base64.b64encode(f"{self.config.username}:{secret}".encode()).decode()
        call.hide(basic)
        return {"authorization": f"Basic {basic}"}

    def _read(self, call: Call, target: PullTarget) -> Sequence[Reading]:
        headers = self._headers(call)
        readings = []
        for signal, spec in self.config.signals.items():
            query = spec if isinstance(spec, PromQuery) else PromQuery(query=spec)
            value, at = self._sample(call, headers, expand(query.query, target), target)
            samples = events = None
            if query.samples is not None:
                samples = count(self._sample(call, headers, expand(query.samples, target), target)[0], "the samples query's value")
            if query.events is not None:
                events = count(self._sample(call, headers, expand(query.events, target), target)[0], "the events query's value")
            readings.append(reading(signal, value, at, samples=samples, events=events))
        return readings

    def _sample(self, call: Call, headers: dict[str, str], promql: str, target: PullTarget) -> tuple[float, datetime]:
        answer = call.get_json(f"{self.config.base_url}/api/v1/query", params={"query": promql}, headers=headers)
        status = field(answer, "status")
        if status != "success":
            raise Fault(f"status {status}: {answer.get('errorType', '')}: {answer.get('error', '')} (query {promql})")
        kind = field(answer, "data", "resultType")
        result = field(answer, "data", "result")
        if kind == "scalar":
            return self._point(result, promql)
        if kind != "vector":
            raise Fault(f"the query gave a {kind}, not an instant vector (query {promql})")
        if not isinstance(result, list) or not result:
            raise Fault(f"no series (an empty result for {promql})")
        if len(result) > 1:
            raise Fault(f"{len(result)} series, not one: aggregate the query to one series (query {promql})")
        self._check_version(result[0], target)
        return self._point(field(result[0], "value"), promql)

    def _check_version(self, series: Any, target: PullTarget) -> None:
        labels = series.get("metric") if isinstance(series, dict) else None
        label = self.config.version_label
        if label and isinstance(labels, dict) and label in labels and labels[label] != target.version:
            raise Fault(f"the series is for {label} {labels[label]}, not {target.version}")

    @staticmethod
    def _point(point: Any, promql: str) -> tuple[float, datetime]:
        if not isinstance(point, list) or len(point) != 2:
            raise Fault(f"the sample is {point!r}, not [time, value] (query {promql})")
        return number(point[1], f"the value of {promql}"), timestamp(point[0], "the sample's time")
