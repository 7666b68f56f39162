"""Prometheus's HTTP API: instant queries, as documented.

GET /api/v1/query?query=<PromQL>[&time=<rfc3339 | unix>][&timeout=<duration>]
    https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries
    (response envelope and the vector / scalar formats: the same page, "Format overview" and
    "Expression query result formats")

Checked per request: the path, a non-empty query, no unknown parameters, and the Authorization
header when the fake has a token (Bearer <token>, or Basic user:token when it has a username).

Answers: {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {...},
"value": [<unix time>, "<value as string>"]}]}} for the series set per query (an unknown query is
an empty vector), or, for a query set as an error, HTTP 400 with {"status": "error", "errorType":
"bad_data", "error": "..."} as Prometheus answers a query it cannot parse.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.fakes.server import FakeServer, Reply, Request

PARAMS = {"query", "time", "timeout", "limit", "lookback_delta", "stats"}

Series = tuple[dict[str, str], float, str]  # labels, unix time, value


class FakePrometheus:
    def __init__(self, server: FakeServer, *, token: str | None = None, username: str | None = None):
        self.server = server
        self.token = token
        self.username = username
        self.series: dict[str, list[Series]] = {}
        self.scalars: dict[str, tuple[float, str]] = {}
        self.errors: dict[str, str] = {}
        server.route("GET", r"/api/v1/query", self._query)

    def _auth(self) -> str | None:
        if self.token is None:
            return None
        if self.username is None:
            return f"Bearer {self.token}"
        return "Basic " + base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def _query(self, req: Request) -> Reply:
        expected = self._auth()
        if expected is not None and req.headers.get("authorization") != expected:
            return self.server.reject(req, "Authorization missing or wrong")
        if set(req.query) - PARAMS:
            return self.server.reject(req, f"unknown parameters {sorted(set(req.query) - PARAMS)}")
        query = req.arg("query")
        if not query:
            return self.server.reject(req, "query is required")
        if query in self.errors:
            return Reply(400, {"status": "error", "errorType": "bad_data", "error": self.errors[query]})
        data: dict[str, Any]
        if query in self.scalars:
            at, value = self.scalars[query]
            data = {"resultType": "scalar", "result": [at, value]}
        else:
            result = [{"metric": labels, "value": [at, value]} for labels, at, value in self.series.get(query, [])]
            data = {"resultType": "vector", "result": result}
        return Reply(200, {"status": "success", "data": data})
