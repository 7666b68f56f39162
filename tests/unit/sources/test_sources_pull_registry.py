"""The pulled sources' configuration union and builder: one YAML example per kind (as in the docs)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import yaml
from pydantic import ValidationError

from conductor.sources.pull.registry import SOURCE_KINDS, build_source, parse_source_config, source_config_schema

EXAMPLES = """
sentry:
  kind: sentry
  organization: acme
  project: 4504
  environment: production
  token: {env: SENTRY_TOKEN}
  signals: {crash_free_sessions: crash_free_sessions, crash_free_users: crash_free_users, active_users: users}
play_vitals:
  kind: play_vitals
  interval: 30m
  service_account: {file: /run/secrets/play-reporting.json}
  signals: {crash_rate: userPerceivedCrashRate, anr_rate: userPerceivedAnrRate}
jira:
  kind: jira
  base_url: https://acme.atlassian.net
  email: release-robot@acme.example
  token: {env: JIRA_TOKEN}
  signals: {open_blockers: 'project = APP AND fixVersion = "{version}" AND priority = Blocker AND statusCategory != Done'}
github_issues:
  kind: github_issues
  repository: acme/app
  token: {env: GITHUB_TOKEN}
  signals: {open_regressions: 'label:regression milestone:"{version}"'}
gitlab_issues:
  kind: gitlab_issues
  base_url: https://gitlab.acme.example
  project: mobile/app
  token: {env: GITLAB_TOKEN}
  signals: {open_blockers: {labels: [blocker, "{track}"], milestone: "{version}"}}
prometheus:
  kind: prometheus
  base_url: http://prometheus.monitoring:9090
  signals:
    api_error_rate: >-
      sum(rate(http_requests_total{app="acme",version="{version}",code=~"5.."}[1h]))
      / sum(rate(http_requests_total{app="acme",version="{version}"}[1h]))
json:
  kind: json
  url: https://api.datadoghq.com/api/v1/query?from={since}&to={now}&query=sum:app.crashes{version:{version}}.as_count()
  headers: {DD-API-KEY: {env: DD_API_KEY}, DD-APPLICATION-KEY: {env: DD_APP_KEY}}
  signals:
    crashes: {value: "$.series[0].pointlist[-1][1]", observed_at: "$.series[0].pointlist[-1][0]", release: "$.series[0].scope",
              expect_release: "version:{version}"}
"""


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_each_kind_parses_and_builds(kind):
    config = parse_source_config(yaml.safe_load(EXAMPLES)[kind])
    assert config.kind == kind
    with httpx.Client() as client:
        source = build_source(config, client)
    assert source.kind == kind
    assert source.signals() == tuple(config.signals)
    assert config.interval == (timedelta(minutes=30) if kind == "play_vitals" else timedelta(minutes=5))


def test_the_examples_cover_every_kind():
    assert set(yaml.safe_load(EXAMPLES)) == set(SOURCE_KINDS)
    assert set(source_config_schema()["discriminator"]["mapping"]) == set(SOURCE_KINDS)


def test_an_unknown_kind_or_key_is_refused_by_name():
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        parse_source_config({"kind": "datadog"})
    with pytest.raises(ValidationError, match=r"sentry\.projct"):
        parse_source_config({"kind": "sentry", "organization": "acme", "projct": 1, "token": {"env": "T"}, "signals": {"x": "users"}})
    with pytest.raises(ValidationError, match="signals"):
        parse_source_config({"kind": "github_issues", "repository": "acme/app", "token": {"env": "T"}, "signals": {}})
