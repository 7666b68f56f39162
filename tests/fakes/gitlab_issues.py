"""GitLab's project issue statistics, as documented (gitlab.com and self-managed).

GET /api/v4/projects/:id/issues_statistics?labels=a,b&milestone=...&scope=all
    ->  {"statistics": {"counts": {"all": N, "closed": N, "opened": N}}}
    https://docs.gitlab.com/api/issues_statistics/#get-project-issues-statistics
    :id is the numeric id or the URL-encoded path (https://docs.gitlab.com/api/rest/#namespaced-paths).
    Auth: PRIVATE-TOKEN: <token> (https://docs.gitlab.com/api/rest/authentication/#personalprojectgroup-access-tokens).
    Rate limits answer 429 with Retry-After (https://docs.gitlab.com/security/rate_limits/).

Checked per request: the PRIVATE-TOKEN header, the project (a path must be URL-encoded, a%2Fb),
only the documented parameters. Counts come from `counts` by (labels, milestone, search).
"""

from __future__ import annotations

from tests.fakes.server import FakeServer, Reply, Request

PARAMS = {
    "labels", "milestone", "scope", "author_id", "author_username", "assignee_id", "assignee_username", "my_reaction_emoji",
    "iids[]", "search", "in", "created_after", "created_before", "updated_after", "updated_before", "confidential",
}  # fmt: skip

Key = tuple[str | None, str | None, str | None]  # labels, milestone, search


class FakeGitLabIssues:
    def __init__(self, server: FakeServer, *, token: str, project: str):
        self.server = server
        self.token = token
        self.project = project  # as it appears in the path: "7" or "acme%2Fapp"
        self.counts: dict[Key, dict[str, int]] = {}
        server.route("GET", r"/api/v4/projects/(?P<project>[^/]+)/issues_statistics", self._statistics)

    def _statistics(self, req: Request) -> Reply:
        if req.headers.get("private-token") != self.token:
            return self.server.reject(req, "PRIVATE-TOKEN header missing or wrong")
        if req.match is None or req.match["project"] != self.project:
            found = req.match["project"] if req.match else None
            return self.server.reject(req, f"project {found!r}: expected {self.project!r} (a path is URL-encoded)")
        if set(req.query) - PARAMS:
            return self.server.reject(req, f"unknown parameters {sorted(set(req.query) - PARAMS)}")
        counts = self.counts.get((req.arg("labels"), req.arg("milestone"), req.arg("search")), {"opened": 0, "closed": 0})
        return Reply(200, {"statistics": {"counts": {"all": counts["opened"] + counts["closed"], **counts}}})
