"""Issue counts from Jira (Cloud and Data Center), GitHub and GitLab against their contract fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from conductor.sources.pull.base import PullTarget
from conductor.sources.pull.trackers import (
    GitHubIssuesConfig,
    GitHubIssuesSource,
    GitLabIssuesConfig,
    GitLabIssuesSource,
    JiraConfig,
    JiraSource,
)
from tests.contract.support import LATE_S, NOW, assert_failed
from tests.fakes.github_issues import FakeGitHubIssues
from tests.fakes.gitlab_issues import FakeGitLabIssues
from tests.fakes.jira import FakeJira

TOKEN = "tracker-secret-9f8e7d"
TARGET = PullTarget(track="android", version="8.9.0", stage="beta", build="8901")
SIGNALS = ("open_blockers", "open_regressions")
BLOCKERS_JQL = 'project = APP AND fixVersion = "android-8.9.0" AND priority = Blocker AND statusCategory != Done'
REGRESSIONS_JQL = 'project = APP AND fixVersion = "android-8.9.0" AND labels = regression'


@dataclass
class Vendor:
    name: str  # the reasons' prefix
    source: Any
    fake: Any
    method: str
    path: str
    missing_field: dict[str, Any]
    missing_name: str


def jira_cloud(server, client) -> Vendor:
    fake = FakeJira(server, token=TOKEN, email="robot@acme.example")
    fake.counts |= {BLOCKERS_JQL: 2, REGRESSIONS_JQL: 5}
    config = JiraConfig.model_validate({
        "kind": "jira", "base_url": server.url, "email": "robot@acme.example", "token": {"env": "TRACKER_TOKEN"},
        "signals": {"open_blockers": 'project = APP AND fixVersion = "{track}-{version}" AND priority = Blocker AND statusCategory != Done',
                    "open_regressions": 'project = APP AND fixVersion = "{track}-{version}" AND labels = regression'},
    })  # fmt: skip
    return Vendor("jira", JiraSource(config, client), fake, "POST", r"/rest/api/3/search/approximate-count", {"total": 3}, "count")


def jira_data_center(server, client) -> Vendor:
    fake = FakeJira(server, token=TOKEN)
    fake.counts |= {BLOCKERS_JQL: 2, REGRESSIONS_JQL: 5}
    config = JiraConfig.model_validate({
        "kind": "jira", "deployment": "data_center", "base_url": server.url, "token": {"env": "TRACKER_TOKEN"},
        "signals": {"open_blockers": 'project = APP AND fixVersion = "{track}-{version}" AND priority = Blocker AND statusCategory != Done',
                    "open_regressions": 'project = APP AND fixVersion = "{track}-{version}" AND labels = regression'},
    })  # fmt: skip
    return Vendor("jira", JiraSource(config, client), fake, "GET", r"/rest/api/2/search", {"issues": []}, "total")


def github(server, client) -> Vendor:
    fake = FakeGitHubIssues(server, token=TOKEN, prefix="/api/v3")
    fake.counts |= {
        'repo:acme/app is:issue is:open label:blocker milestone:"8.9.0"': 2,
        'repo:acme/app is:issue is:open label:regression label:"found in 8.9.0"': 5,
    }
    config = GitHubIssuesConfig.model_validate({
        "kind": "github_issues", "base_url": f"{server.url}/api/v3", "repository": "acme/app", "token": {"env": "TRACKER_TOKEN"},
        "signals": {"open_blockers": 'label:blocker milestone:"{version}"',
                    "open_regressions": 'label:regression label:"found in {version}"'},
    })  # fmt: skip
    missing = {"incomplete_results": False, "items": []}
    return Vendor("github issues", GitHubIssuesSource(config, client), fake, "GET", r"/api/v3/search/issues", missing, "total_count")


def gitlab(server, client) -> Vendor:
    fake = FakeGitLabIssues(server, token=TOKEN, project="acme%2Fapp")
    fake.counts |= {
        ("blocker", "8.9.0", None): {"opened": 2, "closed": 9},
        ("regression,android", None, "8.9.0"): {"opened": 5, "closed": 1},
    }
    config = GitLabIssuesConfig.model_validate({
        "kind": "gitlab_issues", "base_url": server.url, "project": "acme/app", "token": {"env": "TRACKER_TOKEN"},
        "signals": {"open_blockers": {"labels": ["blocker"], "milestone": "{version}"},
                    "open_regressions": {"labels": ["regression", "{track}"], "search": "{version}"}},
    })  # fmt: skip
    missing = {"statistics": {"counts": {"all": 1, "closed": 1}}}
    return Vendor("gitlab issues", GitLabIssuesSource(config, client), fake, "GET", r"/api/v4/projects/.*/issues_statistics", missing,
                  "statistics.counts.opened")  # fmt: skip


@pytest.fixture(params=[jira_cloud, jira_data_center, github, gitlab], ids=["jira-cloud", "jira-dc", "github", "gitlab"])
def vendor(request, server, client, monkeypatch) -> Vendor:
    monkeypatch.setenv("TRACKER_TOKEN", TOKEN)
    return request.param(server, client)


def test_counts_are_values_observed_now(vendor, server):
    """The fakes count only the exact query this release asks (any other counts 0), so 2 and 5
    also show each template was filled with this release's version and track. Counts do not echo
    their query, so 'a series for another version' is guarded on the way out, here."""
    result = vendor.source.fetch(TARGET, NOW)
    assert [(r.signal, r.value, r.observed_at, r.error) for r in result.readings] == [
        ("open_blockers", 2.0, NOW, None),
        ("open_regressions", 5.0, NOW, None),
    ]
    assert server.violations == []
    assert len(result.notes) == 2 and not any(TOKEN in n for n in result.notes)


def test_an_html_502_page_is_a_failed_reading(vendor, server):
    server.fault(vendor.method, vendor.path, status=502, body="<!DOCTYPE html><title>502</title>", content_type="text/html; charset=utf-8")
    assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, f"{vendor.name}: HTTP 502 (an HTML page, not JSON)")


def test_a_429_hands_back_its_retry_after(vendor, server):
    server.fault(vendor.method, vendor.path, status=429, body={"message": "slow down"}, headers={"Retry-After": "61"})
    result = vendor.source.fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, f"{vendor.name}: HTTP 429 (rate limited; retry after 61 s)")
    assert result.retry_after_s == 61.0


def test_a_timeout_is_a_failed_reading(vendor, server):
    server.fault(vendor.method, vendor.path, status=None, delay=LATE_S)
    assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, f"{vendor.name}: no answer in time")


def test_a_missing_count_is_a_failed_reading(vendor, server):
    server.fault(vendor.method, vendor.path, status=200, body=vendor.missing_field)
    assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, f"{vendor.name}: the answer has no {vendor.missing_name} (a missing field)")


def test_an_empty_answer_is_a_failed_reading(vendor, server):
    server.fault(vendor.method, vendor.path, status=200, body="", content_type="application/json")
    assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, f"{vendor.name}: HTTP 200 but the body is not JSON")


def test_a_count_that_is_not_a_count_is_a_failed_reading(vendor, server):
    body = {"count": -1, "total": "many", "total_count": 2.5, "incomplete_results": False, "statistics": {"counts": {"opened": None}}}
    server.fault(vendor.method, vendor.path, status=200, body=body)
    assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, "not a")


def test_a_refused_token_never_shows_the_token(vendor, server):
    server.fault(vendor.method, vendor.path, status=401, body={"message": f"Bad credentials: {TOKEN}", "errorMessages": [f"no {TOKEN}"]})
    reason = assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, f"{vendor.name}: HTTP 401")
    assert TOKEN not in reason and "***" in reason


def test_github_rate_limit_403_hands_back_the_reset(server, client, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", TOKEN)
    vendor = github(server, client)
    reset = int(NOW.timestamp()) + 240
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    server.fault("GET", vendor.path, status=403, body={"message": "API rate limit exceeded"}, headers=headers)
    result = vendor.source.fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "github issues: HTTP 403 (rate limited; retry after 240 s)")
    assert result.retry_after_s == 240.0


def test_github_incomplete_results_are_a_failed_reading(server, client, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", TOKEN)
    vendor = github(server, client)
    vendor.fake.incomplete = True
    assert_failed(vendor.source.fetch(TARGET, NOW), SIGNALS, "github issues: the search did not finish on GitHub's side")


def test_a_template_placeholder_the_release_lacks_is_a_failed_reading(server, client, monkeypatch):
    monkeypatch.setenv("TRACKER_TOKEN", TOKEN)
    vendor = jira_data_center(server, client)
    result = vendor.source.fetch(PullTarget(track="", version="8.9.0", stage="beta"), NOW)
    assert_failed(result, SIGNALS, "jira: the query uses {track} but release 8.9.0 has none")
    assert server.requests == []


def test_config_rules():
    base = {"kind": "jira", "base_url": "https://acme.atlassian.net", "token": {"env": "T"}, "signals": {"x": "project = APP"}}
    with pytest.raises(ValidationError, match="set email"):
        JiraConfig.model_validate(base)
    with pytest.raises(ValidationError, match="unknown placeholder"):
        JiraConfig.model_validate(base | {"email": "a@b.c", "signals": {"x": "fixVersion = {release}"}})
    with pytest.raises(ValidationError, match="repository"):
        GitHubIssuesConfig.model_validate(
            {"kind": "github_issues", "repository": "acme", "token": {"env": "T"}, "signals": {"x": "is:open"}}
        )
    with pytest.raises(ValidationError, match="Extra inputs"):
        GitLabIssuesConfig.model_validate(
            {"kind": "gitlab_issues", "project": 7, "token": {"env": "T"}, "signals": {"x": {"label": "bug"}}}
        )
