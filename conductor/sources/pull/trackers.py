"""Issue counts from trackers: Jira, GitHub issues, GitLab issues; one request per signal.

Each signal maps to a query template ({version}, {track} and the target's other fields filled);
the reading's value is the count of matching issues, observed now (a tracker counts live).

Jira Cloud   POST {base}/rest/api/3/search/approximate-count  {"jql": ...}  -> {"count": N}
             (the enhanced search, /rest/api/3/search/jql, pages by token and returns no total;
             the old /rest/api/3/search that did is gone: see the Jira Cloud REST API's issue
             search group). Basic auth: the account's email and an API token.
Jira DC      GET {base}/rest/api/2/search?jql=...&maxResults=0&fields=key  -> {"total": N}
             Bearer: a personal access token (Basic when an email/username is given).
GitHub       GET {base}/search/issues?q=repo:o/r is:issue is:open <qualifiers>&per_page=1
             -> {"total_count": N, "incomplete_results": false}; Bearer token; base_url is
             https://HOST/api/v3 for GitHub Enterprise Server. incomplete_results (the search
             timed out on GitHub's side) makes the count a lower bound: a failed reading.
GitLab       GET {base}/api/v4/projects/{id or url-encoded path}/issues_statistics
             ?labels=a,b&milestone=...&scope=all  -> {"statistics": {"counts": {"opened": N, ...}}}
             PRIVATE-TOKEN header. The state is read from counts (the endpoint's state
             parameter does not narrow them).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conductor.connect.credentials import CredentialRef
from conductor.sources.pull._http import BaseUrl, Call, Fault, PullConfig, SignalName, Template, count, expand, field, pull, reading
from conductor.sources.pull.base import FetchResult, PullTarget, Reading

GITHUB_API_VERSION = "2022-11-28"


class JiraConfig(PullConfig):
    """Jira Cloud or Data Center; each signal is a JQL template."""

    kind: Literal["jira"]
    base_url: BaseUrl = Field(description="https://acme.atlassian.net, or the Data Center server's URL")
    deployment: Literal["cloud", "data_center"] = "cloud"
    email: str | None = Field(default=None, min_length=3, max_length=320, description="Cloud: the token's account; DC: a Basic auth user")
    token: CredentialRef = Field(description="Cloud: an API token; Data Center: a personal access token (Bearer) or password")
    signals: dict[SignalName, Template] = Field(min_length=1, description='signal -> JQL, e.g. fixVersion = "{version}"')

    @model_validator(mode="after")
    def _cloud_needs_email(self) -> JiraConfig:
        if self.deployment == "cloud" and self.email is None:
            raise ValueError("Jira Cloud API tokens are sent with the account's email (Basic auth): set email")
        return self


class GitHubIssuesConfig(PullConfig):
    """Issue search in one repository; each signal is a template of search qualifiers."""

    kind: Literal["github_issues"]
    base_url: BaseUrl = Field(default="https://api.github.com", description="https://HOST/api/v3 for GitHub Enterprise Server")
    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="owner/name")
    state: Literal["open", "closed"] = "open"
    token: CredentialRef
    signals: dict[SignalName, Template] = Field(
        min_length=1, description='signal -> qualifiers, e.g. label:regression milestone:"{version}"'
    )


class GitLabIssueFilter(BaseModel):
    """What issues_statistics counts for one signal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[Template] = Field(default=[], description="issues must have all of them")
    milestone: Template | None = None
    search: Template | None = None
    state: Literal["opened", "closed", "all"] = "opened"


class GitLabIssuesConfig(PullConfig):
    """Issue statistics of one GitLab project (gitlab.com or self-managed)."""

    kind: Literal["gitlab_issues"]
    base_url: BaseUrl = "https://gitlab.com"
    project: int | str = Field(description="the numeric id, or the path such as acme/app")
    token: CredentialRef
    signals: dict[SignalName, GitLabIssueFilter] = Field(min_length=1)


class _CountSource:
    """One count per signal, observed now."""

    kind: str
    what: str

    def __init__(self, client: httpx.Client):
        self.client = client

    def signals(self) -> tuple[str, ...]:
        raise NotImplementedError

    def fetch(self, target: PullTarget, now: datetime) -> FetchResult:
        return pull(self.what, self.signals(), self.client, now, lambda call: self._read(call, target))

    def _read(self, call: Call, target: PullTarget) -> Sequence[Reading]:
        headers = self._headers(call)
        return [reading(signal, float(self._count(call, headers, signal, target)), call.now) for signal in self.signals()]

    def _headers(self, call: Call) -> dict[str, str]:
        raise NotImplementedError

    def _count(self, call: Call, headers: dict[str, str], signal: str, target: PullTarget) -> int:
        raise NotImplementedError


class JiraSource(_CountSource):
    kind = "jira"
    what = "jira"

    def __init__(self, config: JiraConfig, client: httpx.Client):
        super().__init__(client)
        self.config = config

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def _headers(self, call: Call) -> dict[str, str]:
        secret = call.secret(self.config.token)
        if self.config.email is None:
            return {"authorization": f"Bearer {secret}"}
        basic = base64.b64encode(f"{self.config.email}:{secret}".encode()).decode()
        call.hide(basic)
        return {"authorization": f"Basic {basic}"}

    def _count(self, call: Call, headers: dict[str, str], signal: str, target: PullTarget) -> int:
        jql = expand(self.config.signals[signal], target)
        if self.config.deployment == "cloud":
            answer = call.post_json(f"{self.config.base_url}/rest/api/3/search/approximate-count", {"jql": jql}, headers=headers)
            return count(field(answer, "count"), "count")
        params = {"jql": jql, "maxResults": "0", "fields": "key"}
        answer = call.get_json(f"{self.config.base_url}/rest/api/2/search", params=params, headers=headers)
        return count(field(answer, "total"), "total")


class GitHubIssuesSource(_CountSource):
    kind = "github_issues"
    what = "github issues"

    def __init__(self, config: GitHubIssuesConfig, client: httpx.Client):
        super().__init__(client)
        self.config = config

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def _headers(self, call: Call) -> dict[str, str]:
        token = call.secret(self.config.token)
        return {"authorization": f"Bearer {token}", "accept": "application/vnd.github+json", "x-github-api-version": GITHUB_API_VERSION}

    def _count(self, call: Call, headers: dict[str, str], signal: str, target: PullTarget) -> int:
        config = self.config
        q = f"repo:{config.repository} is:issue is:{config.state} {expand(config.signals[signal], target)}"
        answer = call.get_json(f"{config.base_url}/search/issues", params={"q": q, "per_page": "1"}, headers=headers)
        if field(answer, "incomplete_results") is not False:
            raise Fault(f"the search did not finish on GitHub's side (incomplete_results), so the count is a lower bound: {q}")
        return count(field(answer, "total_count"), "total_count")


class GitLabIssuesSource(_CountSource):
    kind = "gitlab_issues"
    what = "gitlab issues"

    def __init__(self, config: GitLabIssuesConfig, client: httpx.Client):
        super().__init__(client)
        self.config = config

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def _headers(self, call: Call) -> dict[str, str]:
        return {"private-token": call.secret(self.config.token)}

    def _count(self, call: Call, headers: dict[str, str], signal: str, target: PullTarget) -> int:
        spec = self.config.signals[signal]
        params = {"scope": "all"}
        if spec.labels:
            params["labels"] = ",".join(expand(label, target) for label in spec.labels)
        if spec.milestone is not None:
            params["milestone"] = expand(spec.milestone, target)
        if spec.search is not None:
            params["search"] = expand(spec.search, target)
        project = quote(str(self.config.project), safe="")
        answer = call.get_json(f"{self.config.base_url}/api/v4/projects/{project}/issues_statistics", params=params, headers=headers)
        return count(field(answer, "statistics", "counts", spec.state), f"statistics.counts.{spec.state}")
