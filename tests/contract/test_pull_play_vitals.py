"""Play vitals against the Reporting API's contract fake (and a fake OAuth token endpoint)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from conductor.sources.pull.base import PullTarget
from conductor.sources.pull.play_vitals import PlayVitalsConfig, PlayVitalsSource
from tests.contract.support import LATE_S, NOW, assert_failed
from tests.fakes.play_reporting import FakePlayReporting, service_account_key, throwaway_key

PACKAGE = "com.acme.app"
TARGET = PullTarget(track="android", version="8.9.0", stage="beta", build="8901", package=PACKAGE)
SIGNALS = ("crash_rate", "perceived_crash_rate", "anr_rate")
QUERY = r"/v1beta1/apps/com\.acme\.app/(crashRateMetricSet|anrRateMetricSet):query"
CRASH_QUERY = r"/v1beta1/apps/com\.acme\.app/crashRateMetricSet:query"


@pytest.fixture(scope="module")
def rsa_key():
    return throwaway_key()


@pytest.fixture
def key_file(server, rsa_key, tmp_path):
    info, public_key = service_account_key(f"{server.url}/token", rsa_key)
    path = tmp_path / "play-service-account.json"
    path.write_text(json.dumps(info))
    return path, info, public_key


@pytest.fixture
def fake(server, key_file):
    _, info, public_key = key_file
    fake = FakePlayReporting(server, package=PACKAGE, service_account=info, public_key=public_key)
    fake.rows[("crashRateMetricSet", 8901)] = {"crashRate": "0.0123", "userPerceivedCrashRate": "0.0061", "distinctUsers": "54000"}
    fake.rows[("anrRateMetricSet", 8901)] = {"anrRate": "0.0031", "userPerceivedAnrRate": "0.0019", "distinctUsers": "53000"}
    fake.rows[("crashRateMetricSet", 8800)] = {"crashRate": "0.0150", "userPerceivedCrashRate": "0.0080", "distinctUsers": "900000"}
    return fake


def source(server, client, key_file, **overrides) -> PlayVitalsSource:
    signals = {"crash_rate": "crashRate", "perceived_crash_rate": "userPerceivedCrashRate", "anr_rate": "anrRate"}
    raw = {"kind": "play_vitals", "base_url": server.url, "service_account": {"file": str(key_file[0])}, "signals": signals} | overrides
    return PlayVitalsSource(PlayVitalsConfig.model_validate(raw), client)


def test_rates_as_percents_with_users_observed_at_the_freshness(fake, server, client, key_file):
    result = source(server, client, key_file).fetch(TARGET, NOW)
    crash, perceived, anr = result.readings
    assert (crash.signal, crash.value, crash.samples, crash.events, crash.error) == ("crash_rate", 1.23, 54000, 664, None)
    assert (perceived.value, perceived.samples, perceived.events) == (0.61, 54000, 329)
    assert (anr.signal, anr.value, anr.samples, anr.events) == ("anr_rate", 0.31, 53000, 164)
    # the end of the latest complete day in America/Los_Angeles, not the fetch time
    assert {r.observed_at for r in result.readings} == {datetime(2026, 11, 29, 8, 0, tzinfo=UTC)}
    assert server.violations == []
    assert [c.path for c in server.calls()] == [
        "/token", "/v1beta1/apps/com.acme.app/crashRateMetricSet", "/v1beta1/apps/com.acme.app/crashRateMetricSet:query",
        "/v1beta1/apps/com.acme.app/anrRateMetricSet", "/v1beta1/apps/com.acme.app/anrRateMetricSet:query",
    ]  # fmt: skip
    crash_query = fake.queries[0]
    assert crash_query["filter"] == "versionCode = 8901" and crash_query["dimensions"] == ["versionCode"]
    assert crash_query["metrics"] == ["crashRate", "userPerceivedCrashRate", "distinctUsers"]
    assert crash_query["timelineSpec"] == {
        "aggregationPeriod": "DAILY",
        "startTime": {"year": 2026, "month": 11, "day": 28, "timeZone": {"id": "America/Los_Angeles"}},
        "endTime": {"year": 2026, "month": 11, "day": 29, "timeZone": {"id": "America/Los_Angeles"}},
    }
    assert len(result.notes) == 5 and result.notes[0] == f"POST {server.url}/token"


def test_the_token_is_reused_and_hourly_periods_are_utc(fake, server, client, key_file):
    play = source(server, client, key_file, aggregation="HOURLY", signals={"anr": "userPerceivedAnrRate"}, user_cohort="APP_TESTERS")
    first, second = play.fetch(TARGET, NOW), play.fetch(TARGET, NOW)
    assert first.readings[0].value == second.readings[0].value == 0.19
    assert first.readings[0].observed_at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert len(server.calls("POST", r"/token")) == 1
    assert fake.queries[-1]["timelineSpec"]["startTime"] == {"year": 2026, "month": 11, "day": 30, "hours": 7, "timeZone": {"id": "UTC"}}
    assert fake.queries[-1]["userCohort"] == "APP_TESTERS"
    assert server.violations == []


def test_an_html_502_page_is_a_failed_reading(fake, server, client, key_file):
    server.fault("POST", CRASH_QUERY, status=502, body="<html><title>Error 502 (Server Error)!!1</title></html>", content_type="text/html")
    result = source(server, client, key_file).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "play vitals: HTTP 502 (an HTML page, not JSON)")


def test_a_429_hands_back_its_retry_after(fake, server, client, key_file):
    body = {"error": {"code": 429, "message": "Quota exceeded for quota metric 'Queries'", "status": "RESOURCE_EXHAUSTED"}}
    server.fault("POST", QUERY, status=429, body=body, headers={"Retry-After": "30"})
    result = source(server, client, key_file).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "play vitals: HTTP 429 (rate limited; retry after 30 s)")
    assert result.retry_after_s == 30.0


def test_a_403_names_googles_message(fake, server, client, key_file):
    body = {"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}}
    server.fault("GET", r"/v1beta1/apps/", status=403, body=body)
    assert_failed(
        source(server, client, key_file).fetch(TARGET, NOW), SIGNALS, "play vitals: HTTP 403: The caller does not have permission"
    )


def test_a_timeout_is_a_failed_reading(fake, server, client, key_file):
    server.fault("POST", QUERY, status=None, delay=LATE_S)
    assert_failed(source(server, client, key_file).fetch(TARGET, NOW), SIGNALS, "play vitals: no answer in time (ReadTimeout)")


def test_a_token_endpoint_refusal_is_a_failed_reading(fake, server, client, key_file):
    server.fault("POST", r"/token", status=400, body={"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    result = source(server, client, key_file).fetch(TARGET, NOW)
    reason = assert_failed(result, SIGNALS, "play vitals: HTTP 400: Invalid JWT Signature.")
    assert "PRIVATE KEY" not in reason


def test_missing_fields_are_failed_readings(fake, server, client, key_file):
    server.fault("GET", r"/v1beta1/apps/", status=200, body={"name": f"apps/{PACKAGE}/crashRateMetricSet"})
    assert_failed(
        source(server, client, key_file).fetch(TARGET, NOW), SIGNALS, "play vitals: the answer has no freshnessInfo (a missing field)"
    )
    fake.rows[("crashRateMetricSet", 8901)] = {"crashRate": "0.0123", "distinctUsers": "54000"}
    assert_failed(
        source(server, client, key_file).fetch(TARGET, NOW), SIGNALS, "play vitals: the row has no userPerceivedCrashRate (a missing field)"
    )


def test_an_empty_series_is_a_failed_reading(fake, server, client, key_file):
    del fake.rows[("crashRateMetricSet", 8901)]
    result = source(server, client, key_file).fetch(TARGET, NOW)
    assert_failed(
        result,
        SIGNALS,
        "play vitals: no crashRateMetricSet rows for versionCode 8901 in the period ending 2026-11-29 00:00 PST (an empty series)",
    )
    assert server.violations == []


def test_a_series_for_another_version_code_is_a_failed_reading(fake, server, client, key_file):
    row = {"aggregationPeriod": "DAILY", "startTime": {"year": 2026, "month": 11, "day": 28, "timeZone": {"id": "America/Los_Angeles"}},
           "dimensions": [{"dimension": "versionCode", "int64Value": "8800"}],
           "metrics": [{"metric": "crashRate", "decimalValue": {"value": "0.015"}}]}  # fmt: skip
    server.fault("POST", CRASH_QUERY, status=200, body={"rows": [row]})
    assert_failed(source(server, client, key_file).fetch(TARGET, NOW), SIGNALS, "play vitals: the series is for versionCode 8800, not 8901")


def test_a_release_without_a_version_code_is_a_failed_reading(fake, server, client, key_file):
    result = source(server, client, key_file).fetch(PullTarget(track="android", version="8.9.0", stage="beta", package=PACKAGE), NOW)
    assert_failed(result, SIGNALS, "play vitals: release 8.9.0 has no versionCode (build)")
    assert server.requests == []


def test_a_key_that_is_not_json_never_shows_its_text(fake, server, client, key_file, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nMIIEv...\n-----END PRIVATE KEY-----\n")
    reason = assert_failed(source(server, client, key_file, service_account={"file": str(bad)}).fetch(TARGET, NOW), SIGNALS,
                           f"play vitals: the service account key (file {bad}) is not JSON")  # fmt: skip
    assert "MIIEv" not in reason


def test_config_rules(key_file):
    base = {"kind": "play_vitals", "service_account": {"env": "X"}, "signals": {"crash": "crashRate"}}
    assert PlayVitalsConfig.model_validate(base).aggregation == "DAILY"
    with pytest.raises(ValidationError, match="signals"):
        PlayVitalsConfig.model_validate(base | {"signals": {"crash": "crashes"}})
    with pytest.raises(ValidationError, match="package"):
        PlayVitalsConfig.model_validate(base | {"package": "not a package"})
    with pytest.raises(ValidationError, match="aggregation"):
        PlayVitalsConfig.model_validate(base | {"aggregation": "WEEKLY"})


def test_a_401_refreshes_the_token_once_and_goes_on(fake, server, client, key_file):
    body = {"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}
    server.fault("GET", r"/v1beta1/apps/com\.acme\.app/crashRateMetricSet$", status=401, body=body)
    result = source(server, client, key_file).fetch(TARGET, NOW)
    assert [r.error for r in result.readings] == [None, None, None]
    assert len(server.calls("POST", r"/token")) == 2
    assert server.violations == []


def test_a_tracks_package_that_is_not_a_package_name_is_a_failed_reading(fake, server, client, key_file):
    target = PullTarget(track="android", version="8.9.0", stage="beta", build="8901", package="acme app")
    assert_failed(source(server, client, key_file).fetch(target, NOW), SIGNALS, "play vitals: 'acme app' is not an app's package name")
    assert server.requests == []
