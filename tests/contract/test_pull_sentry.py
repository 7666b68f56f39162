"""Sentry release health against the sessions endpoint's contract fake."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from conductor.sources.pull.base import PullTarget
from conductor.sources.pull.sentry import SentryConfig, SentrySource
from tests.contract.support import LATE_S, NOW, assert_failed
from tests.fakes.sentry import FakeSentry, ReleaseHealth

TOKEN = "sntrys_secret_abc123"
RELEASE = "com.acme.app@8.9.0+8901"
TARGET = PullTarget(track="android", version="8.9.0", stage="beta", build="8901", release_name=RELEASE)
SIGNALS = ("crash_free_sessions", "crash_free_users")
PATH = r"/api/0/organizations/acme/sessions/"


@pytest.fixture
def fake(server, monkeypatch):
    monkeypatch.setenv("SENTRY_TOKEN", TOKEN)
    fake = FakeSentry(server, token=TOKEN)
    fake.releases[RELEASE] = ReleaseHealth(sessions=120_000, crash_free_sessions=0.9975, users=40_000, crash_free_users=0.9931)
    fake.releases["com.acme.app@8.8.0+8800"] = ReleaseHealth(500_000, 0.9990, 90_000, 0.9970)
    return fake


def source(server, client, **overrides) -> SentrySource:
    raw = {"kind": "sentry", "base_url": server.url, "organization": "acme", "project": 42, "token": {"env": "SENTRY_TOKEN"},
           "signals": {"crash_free_sessions": "crash_free_sessions", "crash_free_users": "crash_free_users"}} | overrides  # fmt: skip
    return SentrySource(SentryConfig.model_validate(raw), client)


def test_crash_free_sessions_and_users_as_percents_with_counts(fake, server, client):
    result = source(server, client, environment="production").fetch(TARGET, NOW)
    sessions, users = result.readings
    assert (sessions.signal, sessions.samples, sessions.events) == ("crash_free_sessions", 120_000, 119_700)
    assert sessions.value == pytest.approx(99.75)
    assert (users.signal, users.samples, users.events) == ("crash_free_users", 40_000, 39_724)
    assert users.value == pytest.approx(99.31)
    assert sessions.error is None and users.error is None
    assert sessions.observed_at == fake.end  # the end of the window the totals cover, not the fetch time
    assert result.retry_after_s is None and result.latency_s is not None and result.latency_s >= 0
    assert server.violations == []
    (call,) = server.calls("GET", PATH)
    assert sorted(call.query["field"]) == ["count_unique(user)", "crash_free_rate(session)", "crash_free_rate(user)", "sum(session)"]
    assert call.arg("query") == f'release:"{RELEASE}"' and call.arg("statsPeriod") == "24h" and call.arg("environment") == "production"
    (note,) = result.notes
    assert note.startswith(f"GET {server.url}{PATH}?field=") and TOKEN not in note


def test_only_the_fields_the_signals_need_and_counts_as_values(fake, server, client):
    result = source(server, client, signals={"sessions": "sessions"}).fetch(TARGET, NOW)
    (reading,) = result.readings
    assert (reading.value, reading.samples, reading.events, reading.error) == (120_000.0, None, None, None)
    assert server.calls("GET", PATH)[0].query["field"] == ["sum(session)"]
    assert server.violations == []


def test_the_plain_version_names_the_release_when_the_track_has_no_template(fake, server, client):
    fake.releases["8.9.0"] = ReleaseHealth(1000, 0.99, 300, 0.98)
    result = source(server, client).fetch(PullTarget(track="android", version="8.9.0", stage="beta"), NOW)
    assert result.readings[0].value == pytest.approx(99.0)
    assert server.violations == []


def test_an_html_502_page_is_a_failed_reading(fake, server, client):
    server.fault("GET", PATH, status=502, body="<html><body>Bad Gateway</body></html>", content_type="text/html")
    result = source(server, client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "sentry: HTTP 502 (an HTML page, not JSON)")
    assert result.retry_after_s is None


def test_a_429_hands_back_its_retry_after(fake, server, client):
    body = {"detail": "You are attempting to use this endpoint too frequently."}
    server.fault("GET", PATH, status=429, body=body, headers={"Retry-After": "37"})
    result = source(server, client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "sentry: HTTP 429 (rate limited; retry after 37 s)")
    assert result.retry_after_s == 37.0


def test_a_timeout_is_a_failed_reading(fake, server, client):
    server.fault("GET", PATH, status=None, delay=LATE_S)
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "sentry: no answer in time (ReadTimeout)")


def test_a_connection_failure_is_a_failed_reading(client, monkeypatch):
    monkeypatch.setenv("SENTRY_TOKEN", TOKEN)
    config = {"base_url": "http://127.0.0.1:9", "token": {"env": "SENTRY_TOKEN"}}
    result = SentrySource(SentryConfig.model_validate(_raw() | config), client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "sentry: could not reach it (ConnectError)")


def test_an_unset_credential_is_a_failed_reading_naming_the_reference(client):
    result = SentrySource(SentryConfig.model_validate(_raw()), client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, "sentry: credential env SENTRY_TOKEN_UNSET_X: the variable is not set")


def test_missing_fields_are_failed_readings(fake, server, client):
    server.fault("GET", PATH, status=200, body={"start": "2026-11-29T09:00:00Z", "end": "2026-11-30T09:00:00Z", "intervals": []})
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "sentry: the answer has no groups (a missing field)")
    group = {"by": {"release": RELEASE}, "totals": {"sum(session)": 10}, "series": {}}
    server.fault("GET", PATH, status=200, body={"end": "2026-11-30T09:00:00Z", "groups": [group]})
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "sentry: the answer has no crash_free_rate(session) total")


def test_an_empty_series_is_a_failed_reading(fake, server, client):
    del fake.releases[RELEASE]
    reason = assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, f"no sessions for release {RELEASE}", "empty series")
    assert "last 24h" in reason
    assert server.violations == []


def test_a_release_without_sessions_yet_is_a_failed_reading(fake, server, client):
    fake.releases[RELEASE] = ReleaseHealth(0, None, 0, None)
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "crash_free_rate(session) is null")


def test_a_series_for_another_release_is_a_failed_reading(fake, server, client):
    other = FakeSentry.group("com.acme.app@8.8.0+8800", fake.releases["com.acme.app@8.8.0+8800"],
                             ["sum(session)", "crash_free_rate(session)"], ["release"], 24)  # fmt: skip
    server.fault("GET", PATH, status=200, body={"end": "2026-11-30T09:00:00Z", "groups": [other]})
    result = source(server, client).fetch(TARGET, NOW)
    assert_failed(result, SIGNALS, f"sentry: the series is for release com.acme.app@8.8.0+8800, not {RELEASE}")


def test_a_refused_token_never_shows_the_token(fake, server, client):
    server.fault("GET", PATH, status=401, body={"detail": f"Invalid token: {TOKEN}"})
    reason = assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "sentry: HTTP 401: Invalid token: ***")
    assert TOKEN not in reason


def test_the_wrong_token_breaks_the_fakes_contract(fake, server, client, monkeypatch):
    monkeypatch.setenv("SENTRY_TOKEN", "another")
    assert_failed(source(server, client).fetch(TARGET, NOW), SIGNALS, "sentry: HTTP 400")
    assert server.violations == [f"GET {PATH}: Authorization must be 'Bearer <auth token>'"]


def test_an_observed_time_past_now_is_now(fake, server, client):
    fake.end = NOW + timedelta(minutes=48)  # Sentry rounds the window's end up to the interval
    assert source(server, client).fetch(TARGET, NOW).readings[0].observed_at == NOW


def test_config_refuses_unknown_keys_and_bad_periods():
    with pytest.raises(ValidationError, match="Extra inputs"):
        SentryConfig.model_validate(_raw() | {"tokn": "x"})
    with pytest.raises(ValidationError, match="stats_period"):
        SentryConfig.model_validate(_raw() | {"stats_period": "1 day"})
    with pytest.raises(ValidationError, match="at most every 30s"):
        SentryConfig.model_validate(_raw() | {"interval": "10s"})
    config = SentryConfig.model_validate(_raw() | {"interval": "15m", "base_url": "https://sentry.example.com/"})
    assert config.interval == timedelta(minutes=15) and config.base_url == "https://sentry.example.com"
    assert SentryConfig.model_validate(_raw()).interval == timedelta(minutes=5)


def _raw() -> dict:
    return {"kind": "sentry", "organization": "acme", "project": 42, "token": {"env": "SENTRY_TOKEN_UNSET_X"},
            "signals": {"crash_free_sessions": "crash_free_sessions", "crash_free_users": "crash_free_users"}}  # fmt: skip
