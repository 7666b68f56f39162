"""Sentry's release health sessions endpoint, as documented.

GET /api/0/organizations/{organization_id_or_slug}/sessions/
    https://docs.sentry.io/api/releases/retrieve-release-health-session-statistics/
    (the OpenAPI text and its example answer: getsentry/sentry api-docs/paths/releases/sessions.json)

Checked per request (a wrong one is answered 400 and recorded in server.violations):
- Authorization: Bearer <the token>, the organization, project=<numeric id> (required);
- field: one or more of the documented fields (required); groupBy only project, release,
  environment or session.status, and never session.status with a crash rate (documented);
- statsPeriod / interval in "<number><unit>" form, the interval at least 1h, at most 1d and
  dividing a day (documented); query of the form release:"<name>".

The answer is the documented shape: start, end, intervals, and one group per release matching the
query with "by", "totals" and "series" for each asked field; crash_free_rate is a fraction, null
when there were no sessions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.server import FakeServer, Reply, Request

FIELDS = {
    "sum(session)", "count_unique(user)", "crash_rate(session)", "crash_rate(user)", "crash_free_rate(session)",
    "crash_free_rate(user)", "avg(session.duration)", "p50(session.duration)", "p75(session.duration)",
    "p90(session.duration)", "p95(session.duration)", "p99(session.duration)", "max(session.duration)",
}  # fmt: skip
GROUP_BY = {"project", "release", "environment", "session.status"}
PERIOD = re.compile(r"^(\d+)([smhdw])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
QUERY = re.compile(r'^release:"((?:[^"\\]|\\.)*)"$')


@dataclass
class ReleaseHealth:
    sessions: int
    crash_free_sessions: float | None  # a fraction
    users: int
    crash_free_users: float | None


class FakeSentry:
    def __init__(self, server: FakeServer, *, token: str, organization: str = "acme", project: int = 42):
        self.server = server
        self.token = token
        self.organization = organization
        self.project = project
        self.releases: dict[str, ReleaseHealth] = {}
        self.end = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        server.route("GET", r"/api/0/organizations/(?P<org>[^/]+)/sessions/", self._sessions)

    def _problem(self, req: Request) -> str | None:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return "Authorization must be 'Bearer <auth token>'"
        if req.match is None or req.match["org"] != self.organization:
            return f"unknown organization (expected {self.organization})"
        if req.query.get("project") != [str(self.project)]:
            return f"project must be the numeric id {self.project}"
        fields = req.query.get("field", [])
        if not fields or set(fields) - FIELDS:
            return f"field must be one or more of the documented fields, got {fields}"
        group_by = req.query.get("groupBy", [])
        if set(group_by) - GROUP_BY:
            return f"groupBy must be among {sorted(GROUP_BY)}"
        if "session.status" in group_by and any("crash" in f for f in fields):
            return "groupBy session.status does not work with crash_rate or crash_free_rate"
        for name in ("statsPeriod", "interval"):
            value = req.arg(name)
            if value is not None and not PERIOD.match(value):
                return f"{name} must be '<number><unit>', got {value!r}"
        interval = PERIOD.match(req.arg("interval") or "1h")
        assert interval is not None
        seconds = int(interval[1]) * UNIT_S[interval[2]]
        if seconds < 3600 or seconds > 86400 or 86400 % seconds:
            return "interval must be between 1h and 1d and divide a day"
        if req.arg("query") is not None and not QUERY.match(req.arg("query") or ""):
            return 'query must be release:"<name>"'
        return None

    def _sessions(self, req: Request) -> Reply:
        problem = self._problem(req)
        if problem:
            return self.server.reject(req, problem)
        match = QUERY.match(req.arg("query") or "")
        wanted = re.sub(r"\\(.)", r"\1", match[1]) if match else None
        fields = req.query["field"]
        group_by = req.query.get("groupBy", [])
        intervals = [self.end - timedelta(hours=h) for h in range(24, 0, -1)]
        groups = [self.group(name, health, fields, group_by, len(intervals))
                  for name, health in self.releases.items() if wanted is None or name == wanted]  # fmt: skip
        return Reply(200, {
            "start": _iso(intervals[0]), "end": _iso(self.end), "intervals": [_iso(t) for t in intervals],
            "groups": groups, "query": req.arg("query") or "",
        })  # fmt: skip

    @staticmethod
    def group(name: str, health: ReleaseHealth, fields: list[str], group_by: list[str], points: int) -> dict[str, Any]:
        totals: dict[str, Any] = {
            "sum(session)": health.sessions, "count_unique(user)": health.users,
            "crash_free_rate(session)": health.crash_free_sessions, "crash_free_rate(user)": health.crash_free_users,
        }  # fmt: skip
        asked = {f: totals.get(f) for f in fields}
        series = {f: [v] * points for f, v in asked.items()}
        return {"by": {"release": name} if "release" in group_by else {}, "totals": asked, "series": series}


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
