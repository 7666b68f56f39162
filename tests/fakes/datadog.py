"""Datadog's v1 metrics query, as documented: a JSON API the generic JSON source is pointed at.

GET /api/v1/query?from=<epoch s>&to=<epoch s>&query=<metric query>
    https://docs.datadoghq.com/api/latest/metrics/query-timeseries-points/
    Headers: DD-API-KEY and DD-APPLICATION-KEY (https://docs.datadoghq.com/api/latest/authentication/).
    Rate limits answer 429 with X-RateLimit-* headers (https://docs.datadoghq.com/api/latest/rate-limits/).

Checked per request: both key headers, from/to as epoch seconds with from < to, a query. The
answer is the documented shape: status "ok", res_type "time_series", from_date/to_date in
milliseconds, and one series per configured scope with pointlist [[epoch ms, value], ...],
scope and tag_set; an unknown query has an empty series list.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import FakeServer, Reply, Request


class FakeDatadog:
    def __init__(self, server: FakeServer, *, api_key: str, app_key: str):
        self.server = server
        self.api_key = api_key
        self.app_key = app_key
        self.series: dict[str, list[tuple[str, list[tuple[int, float]]]]] = {}  # query -> [(scope, points)]
        server.route("GET", r"/api/v1/query", self._query)

    def _query(self, req: Request) -> Reply:
        if req.headers.get("dd-api-key") != self.api_key or req.headers.get("dd-application-key") != self.app_key:
            return self.server.reject(req, "DD-API-KEY and DD-APPLICATION-KEY are required")
        start, end, query = req.arg("from") or "", req.arg("to") or "", req.arg("query") or ""
        if not (start.isdigit() and end.isdigit() and int(start) < int(end)):
            return self.server.reject(req, "from and to are required, epoch seconds, from before to")
        if not query:
            return self.server.reject(req, "query is required")
        series: list[dict[str, Any]] = [
            {"metric": query.split("{")[0], "expression": query, "scope": scope, "tag_set": scope.split(","), "aggr": "sum",
             "pointlist": [[float(t), v] for t, v in points], "length": len(points), "interval": 60,
             "start": points[0][0] if points else None, "end": points[-1][0] if points else None}
            for scope, points in self.series.get(query, [])
        ]  # fmt: skip
        body = {"status": "ok", "res_type": "time_series", "from_date": int(start) * 1000, "to_date": int(end) * 1000,
                "query": query, "group_by": ["version"], "series": series}  # fmt: skip
        return Reply(200, body)
