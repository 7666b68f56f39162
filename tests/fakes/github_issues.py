"""GitHub's issue search, as documented (github.com and GitHub Enterprise Server under /api/v3).

GET /search/issues?q=...&per_page=N  ->  {"total_count": N, "incomplete_results": false, "items": [...]}
    https://docs.github.com/en/rest/search/search#search-issues-and-pull-requests
    Headers: Authorization: Bearer <token> (https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api),
    Accept: application/vnd.github+json, X-GitHub-Api-Version: 2022-11-28
    (https://docs.github.com/en/rest/about-the-rest-api/api-versions).
    Rate limits: 403 or 429 with x-ratelimit-remaining: 0 and x-ratelimit-reset (epoch seconds),
    or a Retry-After (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).

Checked per request: the headers above, q present with repo:<owner/name> and is:issue (issue
search must say issue or pull request), per_page at most 100. Counts come from `counts` by exact q.
"""

from __future__ import annotations

from tests.fakes.server import FakeServer, Reply, Request

PARAMS = {"q", "sort", "order", "per_page", "page", "advanced_search"}
API_VERSIONS = {"2022-11-28"}


class FakeGitHubIssues:
    def __init__(self, server: FakeServer, *, token: str, prefix: str = ""):
        self.server = server
        self.token = token
        self.counts: dict[str, int] = {}
        self.incomplete = False
        server.route("GET", rf"{prefix}/search/issues", self._search)

    def _problem(self, req: Request) -> str | None:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return "Authorization must be Bearer <token>"
        if req.headers.get("accept") != "application/vnd.github+json":
            return "Accept should be application/vnd.github+json"
        if req.headers.get("x-github-api-version") not in API_VERSIONS:
            return f"X-GitHub-Api-Version must be one of {sorted(API_VERSIONS)}"
        if set(req.query) - PARAMS:
            return f"unknown parameters {sorted(set(req.query) - PARAMS)}"
        q = req.arg("q") or ""
        words = q.split()
        if not any(w.startswith("repo:") and w.count("/") == 1 for w in words):
            return "q must name the repository as repo:owner/name"
        if "is:issue" not in words:
            return "q must include is:issue (issue search says issue or pull request)"
        if not 1 <= int(req.arg("per_page") or "30") <= 100:
            return "per_page must be 1..100"
        return None

    def _search(self, req: Request) -> Reply:
        problem = self._problem(req)
        if problem:
            return self.server.reject(req, problem)
        total = self.counts.get(req.arg("q") or "", 0)
        items = [{"number": n, "state": "open"} for n in range(1, min(total, int(req.arg("per_page") or "30")) + 1)]
        return Reply(200, {"total_count": total, "incomplete_results": self.incomplete, "items": items})
