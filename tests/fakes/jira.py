"""Jira's issue counts, Cloud and Data Center, as documented.

Cloud: POST /rest/api/3/search/approximate-count  {"jql": "..."}  ->  {"count": N}
    https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issue-search/#api-rest-api-3-search-approximate-count-post
    (the JQL must be bounded: an empty one is a 400). Auth: Basic <email:API token>
    (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/).
Data Center: GET /rest/api/2/search?jql=...&maxResults=0  ->  {"startAt": 0, "maxResults": 0, "total": N, "issues": []}
    https://docs.atlassian.com/software/jira/docs/api/REST/9.12.0/#api/2/search-search
    Auth: Bearer <personal access token>
    (https://confluence.atlassian.com/enterprise/using-personal-access-tokens-1026032365.html).

Checked per request: the auth header's form, a non-empty jql, no unknown body keys or query
parameters. Counts come from `counts` by exact JQL (any other JQL counts 0, as a real Jira would).
"""

from __future__ import annotations

import base64

from tests.fakes.server import FakeServer, Reply, Request

SEARCH_PARAMS = {"jql", "startAt", "maxResults", "validateQuery", "fields", "expand", "properties", "fieldsByKeys"}


class FakeJira:
    def __init__(self, server: FakeServer, *, token: str, email: str | None = None):
        self.server = server
        self.token = token
        self.email = email
        self.counts: dict[str, int] = {}
        server.route("POST", r"/rest/api/3/search/approximate-count", self._approximate_count)
        server.route("GET", r"/rest/api/2/search", self._search)

    def _auth_problem(self, req: Request) -> str | None:
        if self.email is not None:
            expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
            return None if req.headers.get("authorization") == expected else "Authorization must be Basic <email:API token>"
        return (
            None if req.headers.get("authorization") == f"Bearer {self.token}" else "Authorization must be Bearer <personal access token>"
        )

    def _approximate_count(self, req: Request) -> Reply:
        problem = self._auth_problem(req)
        body = req.json() if req.headers.get("content-type", "").startswith("application/json") else None
        if problem is None and (not isinstance(body, dict) or set(body) != {"jql"}):
            problem = 'the body must be {"jql": "..."} (JSON)'
        if problem is None and not str(body["jql"]).strip():
            problem = "the JQL must be a bounded query (it is empty)"
        if problem:
            return self.server.reject(req, problem)
        return Reply(200, {"count": self.counts.get(body["jql"], 0)})

    def _search(self, req: Request) -> Reply:
        problem = self._auth_problem(req)
        if problem is None and set(req.query) - SEARCH_PARAMS:
            problem = f"unknown parameters {sorted(set(req.query) - SEARCH_PARAMS)}"
        if problem is None and not (req.arg("jql") or "").strip():
            problem = "jql is required here"
        if problem is None and req.arg("maxResults") != "0":
            problem = "ask for maxResults=0 when only the total is read"
        if problem:
            return self.server.reject(req, problem)
        return Reply(200, {"startAt": 0, "maxResults": 0, "total": self.counts.get(req.arg("jql") or "", 0), "issues": []})
