"""The pulled sources by kind: one configuration type over all of them, and the source for a configuration.

config = parse_source_config({"kind": "sentry", "organization": "acme", "project": 42,
                              "token": {"env": "SENTRY_TOKEN"}, "signals": {"crash_free_sessions": "crash_free_sessions"}})
source = build_source(config, make_client(10.0))
result = source.fetch(PullTarget(track="android", version="8.9.0", stage="beta", release_name="com.acme.app@8.9.0+8901"), now)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import httpx
from pydantic import Field, TypeAdapter

from conductor.sources.pull.base import PullSource
from conductor.sources.pull.json_http import JsonHttpConfig, JsonHttpSource
from conductor.sources.pull.play_vitals import PlayVitalsConfig, PlayVitalsSource
from conductor.sources.pull.prometheus import PrometheusConfig, PrometheusSource
from conductor.sources.pull.sentry import SentryConfig, SentrySource
from conductor.sources.pull.trackers import (
    GitHubIssuesConfig,
    GitHubIssuesSource,
    GitLabIssuesConfig,
    GitLabIssuesSource,
    JiraConfig,
    JiraSource,
)

SourceConfig = Annotated[
    SentryConfig | PlayVitalsConfig | JiraConfig | GitHubIssuesConfig | GitLabIssuesConfig | PrometheusConfig | JsonHttpConfig,
    Field(discriminator="kind"),
]

_SOURCE_CONFIG: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)

_BUILDERS: dict[type[Any], Callable[[Any, httpx.Client], PullSource]] = {
    SentryConfig: SentrySource,
    PlayVitalsConfig: PlayVitalsSource,
    JiraConfig: JiraSource,
    GitHubIssuesConfig: GitHubIssuesSource,
    GitLabIssuesConfig: GitLabIssuesSource,
    PrometheusConfig: PrometheusSource,
    JsonHttpConfig: JsonHttpSource,
}

SOURCE_KINDS: tuple[str, ...] = ("sentry", "play_vitals", "jira", "github_issues", "gitlab_issues", "prometheus", "json")


def parse_source_config(data: Mapping[str, Any]) -> SourceConfig:
    """A source's configuration from its mapping (YAML or JSON); pydantic's ValidationError names
    the kind and the field when it is wrong."""
    return _SOURCE_CONFIG.validate_python(data)


def source_config_schema() -> dict[str, Any]:
    """The JSON Schema of a source's configuration (for editors and the API's documentation)."""
    return _SOURCE_CONFIG.json_schema()


def build_source(config: SourceConfig, client: httpx.Client) -> PullSource:
    """The source for `config`, polling through `client` (whose timeouts bound each request)."""
    return _BUILDERS[type(config)](config, client)
