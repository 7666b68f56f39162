"""Prometheus instant queries against the query API's contract fake."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from conductor.sources.pull.base import PullTarget
from conductor.sources.pull.prometheus import PrometheusConfig, PrometheusSource
from tests.contract.support import LATE_S, NOW, assert_failed
from tests.fakes.prometheus import FakePrometheus

TOKEN = "glc_prom_secret"
TARGET = PullTarget(track="android", version="8.9.0", stage="beta", build="8901")
SIGNALS = ("error_rate", "p95_latency_ms")
ERRORS = 'sum(rate(http_errors_total{app="acme",version="8.9.0"}[1h])) / sum(rate(http_requests_total{app="acme",version="8.9.0"}[1h]))'
LATENCY = 'histogram_quantile(0.95, sum by (le, version) (rate(latency_bucket{version="8.9.0"}[1h]))) * 1000'
AT = 1796029920.5  # 2026-11-30T09:12:00.5Z


@pytest.fixture
def fake(server, monkeypatch):
    monkeypatch.setenv("PROM_TOKEN", TOKEN)
    fake = FakePrometheus(server, token=TOKEN)
    fake.series[ERRORS] = [({}, AT, "0.0125")]
    fake.series[LATENCY] = [({"version": "8.9.0"}, AT, "412.5")]
    return fake


def raw(server_url: str, **overrides) -> dict:
    signals = {
        "error_rate": 'sum(rate(http_errors_total{app="acme",version="{version}"}[1h]))'
        ' / sum(rate(http_requests_total{app="acme",version="{version}"}[1h]))',
        "p95_latency_ms": 'histogram_quantile(0.95, sum by (le, version) (rate(latency_bucket{version="{version}"}[1h]))) * 1000',
    }
    return {"kind": "prometheus", "base_url": server_url, "token": {"env": "PROM_TOKEN"}, "signals": signals} | overrides


def source(server, client, **overrides) -> PrometheusSource:
    return PrometheusSource(PrometheusConfig.model_validate(raw(server.url, **overrides)), client)


def test_one_sample_per_query_with_its_timestamp(fake, server, client):
    result = source(server, client).fetch(TARGET, NOW)
    errors, latency = result.readings
    assert (errors.signal, errors.value, errors.error) == ("error_rate", 0.0125, None)
    assert (latency.signal, latency.value, latency.error) == ("p95_latency_ms", 412.5, None)
    assert errors.observed_at == datetime(2026, 11, 30, 9, 12, 0, 500000, tzinfo=UTC)
    assert server.violations == []
    assert [c.arg("query") for c in server.calls("GET", r"/api/v1/query")] == [ERRORS, LATENCY]
    assert len(result.notes) == 2 and all(n.startswith(f"GET {server.url}/api/v1/query?query=") for n in result.notes)


def test_counts_behind_a_rate_and_basic_auth(fake, server, client):
    fake.username = "tenant-7"
    fake.series["sum(increase(requests_total[1h]))"] = [({}, AT, "80000")]
    fake.series["sum(increase(errors_total[1h]))"] = [({}, AT, "1000")]
    signals = {"error_rate": {"query": ERRORS, "samples": "sum(increase(requests_total[1h]))", "events": "sum(increase(errors_total[1h]))"}}
    result = source(server, client, username="tenant-7", signals=signals).fetch(TARGET, NOW)
    (reading,) = result.readings
    assert (reading.value, reading.samples, reading.events) == (0.0125, 80000, 1000)
    assert server.violations == []
    assert not any(TOKEN in n for n in result.notes)


def test_a_scalar_answer(fake, server, client):
    fake.scalars["scalar(vector(3))"] = (AT, "3")
    (reading,) = source(server, client, signals={"x": "scalar(vector(3))"}).fetch(TARGET, NOW).readings
    assert reading.value == 3.0


def test_an_error_status_is_a_failed_reading(fake, server, client):
    fake.errors[ERRORS] = 'invalid parameter "query": 1:6: parse error: unexpected identifier'
    result = source(server, client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "prometheus: HTTP 400: bad_data: invalid parameter", "parse error")
    assert server.violations == []


def test_an_error_status_in_a_200_answer_is_a_failed_reading(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=200, body={"status": "error", "errorType": "timeout", "error": "query timed out"})
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: status error: timeout: query timed out")


def test_an_empty_result_is_no_series(fake, server, client):
    fake.series[ERRORS] = []
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: no series (an empty result for sum(rate(")


def test_more_than_one_series_names_the_count(fake, server, client):
    fake.series[ERRORS] = [({"pod": "a"}, AT, "0.01"), ({"pod": "b"}, AT, "0.02"), ({"pod": "c"}, AT, "0.03")]
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: 3 series, not one")


def test_a_series_for_another_version_is_a_failed_reading(fake, server, client):
    fake.series[LATENCY] = [({"version": "8.8.0"}, AT, "300")]
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: the series is for version 8.8.0, not 8.9.0")


def test_nan_is_a_failed_reading(fake, server, client):
    fake.series[ERRORS] = [({}, AT, "NaN")]
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "not a finite number")


def test_an_html_502_page_is_a_failed_reading(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=502, body="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: HTTP 502 (an HTML page, not JSON)")


def test_a_429_hands_back_its_retry_after(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=429, body="too many outstanding requests", headers={"Retry-After": "12"})
    result = source(server, client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "prometheus: HTTP 429 (rate limited; retry after 12 s)")
    assert result.retry_after_s == 12.0


def test_a_timeout_is_a_failed_reading(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=None, delay=LATE_S)
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: no answer in time")


def test_missing_fields_are_failed_readings(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=200, body={"status": "success", "data": {"resultType": "vector"}})
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: the answer has no data.result (a missing field)")
    server.fault(
        "GET", r"/api/v1/query", status=200, body={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}
    )
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: the answer has no value (a missing field)")


def test_a_json_body_with_a_text_content_type_is_refused(fake, server, client):
    server.fault("GET", r"/api/v1/query", status=200, body='{"status": "success"}', content_type="text/plain")
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "prometheus: HTTP 200 but text/plain, not JSON")


def test_config_checks_placeholders_and_auth():
    with pytest.raises(ValidationError, match=r"unknown placeholder \{app\}"):
        PrometheusConfig.model_validate(raw("http://p:9090", signals={"x": "up{job='{app}'}"}))
    with pytest.raises(ValidationError, match="username is for Basic auth"):
        PrometheusConfig.model_validate(raw("http://p:9090", token=None, username="u"))
    with pytest.raises(ValidationError, match="give a samples query too"):
        PrometheusConfig.model_validate(raw("http://p:9090", signals={"x": {"query": "up", "events": "up"}}))
