"""The generic JSON source against Datadog's metrics query fake and an internal API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from conductor.sources.pull.base import PullTarget
from conductor.sources.pull.json_http import JsonHttpConfig, JsonHttpSource
from tests.contract.support import LATE_S, NOW, assert_failed
from tests.fakes.datadog import FakeDatadog
from tests.fakes.server import Reply

API_KEY, APP_KEY = "dd-api-secret-1", "dd-app-secret-2"
TARGET = PullTarget(track="android", version="8.9.0", stage="beta", build="8901")
QUERY = "sum:app.crashes{version:8.9.0}.as_count()"
T1 = int((NOW - timedelta(minutes=2)).timestamp()) * 1000
T2 = int((NOW - timedelta(minutes=1)).timestamp()) * 1000


@pytest.fixture
def fake(server, monkeypatch):
    monkeypatch.setenv("DD_API_KEY", API_KEY)
    monkeypatch.setenv("DD_APP_KEY", APP_KEY)
    fake = FakeDatadog(server, api_key=API_KEY, app_key=APP_KEY)
    fake.series[QUERY] = [("version:8.9.0", [(T1, 3.0), (T2, 7.0)])]
    return fake


def datadog(server, client, **signal) -> JsonHttpSource:
    spec = {"value": "$.series[0].pointlist[-1][1]", "observed_at": "$.series[0].pointlist[-1][0]",
            "release": "$.series[0].scope", "expect_release": "version:{version}"} | signal  # fmt: skip
    config = JsonHttpConfig.model_validate({
        "kind": "json", "url": server.url + "/api/v1/query?from={since}&to={now}&query=sum:app.crashes{version:{version}}.as_count()",
        "headers": {"DD-API-KEY": {"env": "DD_API_KEY"}, "DD-APPLICATION-KEY": {"env": "DD_APP_KEY"}}, "window": "30m",
        "signals": {"crashes": spec},
    })  # fmt: skip
    return JsonHttpSource(config, client)


def test_datadog_last_point_with_its_time(fake, server, client):
    result = datadog(server, client).fetch(TARGET, NOW)
    (reading,) = result.readings
    assert (reading.signal, reading.value, reading.error) == ("crashes", 7.0, None)
    assert reading.observed_at == datetime.fromtimestamp(T2 / 1000, UTC)  # epoch milliseconds read as such
    assert server.violations == []
    (call,) = server.calls("GET", r"/api/v1/query")
    assert call.arg("query") == QUERY
    assert (int(call.arg("from")), int(call.arg("to"))) == (int(NOW.timestamp()) - 1800, int(NOW.timestamp()))
    (note,) = result.notes
    assert note.startswith(f"GET {server.url}/api/v1/query?from=") and "query=sum%3Aapp.crashes" in note
    assert API_KEY not in note and APP_KEY not in note


def test_an_internal_api_with_counts_iso_time_and_scale(server, client, monkeypatch):
    monkeypatch.setenv("HEALTH_TOKEN", "internal-secret")
    answer = {"release": {"version": "8.9.0", "build": 8901},
              "health": {"crash_free": 0.9962, "sessions": "52000", "crash_free_sessions": 51802},
              "computed_at": "2026-11-30T09:05:00+01:00"}  # fmt: skip

    def handler(req):
        if req.headers.get("authorization") != "token internal-secret":
            return server.reject(req, "token auth")
        if req.match["version"] != "8.9.0" or req.arg("build") != "8901":
            return server.reject(req, "release by path and build")
        return Reply(200, answer)

    server.route("GET", r"/health/(?P<version>[^/]+)", handler)
    config = JsonHttpConfig.model_validate({
        "kind": "json", "url": server.url + "/health/{version}?build={build}",
        "headers": {"Authorization": {"credential": {"env": "HEALTH_TOKEN"}, "prefix": "token "}, "X-Team": "release"},
        "signals": {"crash_free_sessions": {"value": "$.health.crash_free", "scale": 100, "samples": "$.health.sessions",
                                            "events": "$.health.crash_free_sessions", "observed_at": "$.computed_at",
                                            "release": "$.release.version"}},
    })  # fmt: skip
    (reading,) = JsonHttpSource(config, client).fetch(TARGET, NOW).readings
    assert (reading.value, reading.samples, reading.events, reading.error) == (99.62, 52000, 51802, None)
    assert reading.observed_at == datetime(2026, 11, 30, 8, 5, tzinfo=UTC)
    assert server.violations == []


def test_an_html_502_page_is_a_failed_reading(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=502, body="<html>bad gateway</html>", content_type="text/html")
    assert_failed(datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: HTTP 502 (an HTML page, not JSON)")


def test_a_429_hands_back_its_retry_after(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=429, body={"errors": ["Rate limit of 1600 requests in 3600 seconds reached."]},
                 headers={"Retry-After": "90", "X-RateLimit-Remaining": "0"})  # fmt: skip
    result = datadog(server, client).fetch(TARGET, NOW)
    assert_failed(result, ("crashes",), "json: HTTP 429 (rate limited; retry after 90 s)")
    assert result.retry_after_s == 90.0


def test_a_timeout_is_a_failed_reading(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=None, delay=LATE_S)
    assert_failed(datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: no answer in time")


def test_an_unparseable_body_is_a_failed_reading(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=200, body='{"series": [', content_type="application/json")
    assert_failed(datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: HTTP 200 but the body is not JSON (Expecting value")


def test_a_missing_field_is_a_failed_reading(fake, server, client):
    result = datadog(server, client, value="$.series[0].points[-1][1]").fetch(TARGET, NOW)
    assert_failed(
        result, ("crashes",), "json: nothing at $.series[0].points[-1][1] for crashes's value (a missing field or an empty series)"
    )


def test_an_empty_series_is_a_failed_reading(fake, server, client):
    fake.series[QUERY] = []
    assert_failed(datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: nothing at $.series[0].scope", "empty series")
    fake.series[QUERY] = [("version:8.9.0", [])]
    assert_failed(datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: nothing at $.series[0].pointlist[-1][1]")
    assert server.violations == []


def test_a_series_for_another_version_is_a_failed_reading(fake, server, client):
    server.fault(
        "GET", r"/api/v1/query", status=200, body={"status": "ok", "series": [{"scope": "version:8.8.0", "pointlist": [[T2, 1.0]]}]}
    )
    assert_failed(
        datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: the series is for release version:8.8.0, not version:8.9.0"
    )


def test_a_path_matching_several_values_is_a_failed_reading(fake, server, client):
    fake.series[QUERY] = [("version:8.9.0,host:a", [(T2, 1.0)]), ("version:8.9.0,host:b", [(T2, 2.0)])]
    result = datadog(server, client, value="$.series[*].pointlist[-1][1]", release=None).fetch(TARGET, NOW)
    assert_failed(result, ("crashes",), "json: $.series[*].pointlist[-1][1] matches 2 values for crashes's value, not one")


def test_a_missing_header_credential_is_a_failed_reading_naming_the_reference(fake, server, client, monkeypatch):
    monkeypatch.delenv("DD_APP_KEY")
    assert_failed(datadog(server, client).fetch(TARGET, NOW), ("crashes",), "json: credential env DD_APP_KEY: the variable is not set")
    assert server.requests == []


def test_config_rules():
    base = {"kind": "json", "url": "https://api.example.com/x?v={version}", "signals": {"x": {"value": "$.v"}}}
    assert JsonHttpConfig.model_validate(base).window == timedelta(hours=1)
    with pytest.raises(ValidationError, match="not a JSONPath"):
        JsonHttpConfig.model_validate(base | {"signals": {"x": {"value": "$.v[("}}})
    with pytest.raises(ValidationError, match="not an http"):
        JsonHttpConfig.model_validate(base | {"url": "ftp://example.com/{version}"})
    with pytest.raises(ValidationError, match="credentials go in headers"):
        JsonHttpConfig.model_validate(base | {"url": "https://user:pw@example.com/"})
    with pytest.raises(ValidationError, match=r"unknown placeholder \{project\}"):
        JsonHttpConfig.model_validate(base | {"url": "https://example.com/{project}"})
    with pytest.raises(ValidationError, match="give samples too"):
        JsonHttpConfig.model_validate(base | {"signals": {"x": {"value": "$.v", "events": "$.e"}}})
