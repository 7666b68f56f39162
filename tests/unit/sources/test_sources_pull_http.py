"""The pulled sources' shared part: redaction, templates, times, answers and faults."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from conductor.connect.credentials import CredentialRef
from conductor.sources.pull._http import (
    Call,
    Fault,
    expand,
    json_body,
    known_placeholders,
    pull,
    reading,
    redact_url,
    status_fault,
    timestamp,
)
from conductor.sources.pull.base import PullTarget, Reading

NOW = datetime(2026, 11, 30, 9, 12, tzinfo=UTC)
TARGET = PullTarget(track="android", version="8.9.0", stage="beta", build="8901", release_name="com.acme@8.9.0+8901")


def test_redact_url_blanks_secret_looking_parameters_and_user_info():
    url = "https://robot:pw@api.example.com:8443/x?api_key=abc&token=def&query=up&sig=1&version=8.9.0"
    assert redact_url(url) == "https://api.example.com:8443/x?api_key=***&token=***&query=up&sig=***&version=8.9.0"


def test_expand_fills_placeholders_and_leaves_other_braces():
    promql = 'sum(rate(x{version="{version}",build="{build}"}[1h]))'
    assert expand(promql, TARGET) == 'sum(rate(x{version="8.9.0",build="8901"}[1h]))'
    assert expand("/r/{release_name}", TARGET, escape=lambda v: v.replace("@", "%40")) == "/r/com.acme%408.9.0+8901"
    assert expand("{now}-{version}", TARGET, extra={"now": "17"}) == "17-8.9.0"
    with pytest.raises(Fault, match=r"uses \{package\} but release 8.9.0 has none"):
        expand("{package}", TARGET)
    with pytest.raises(ValueError, match=r"unknown placeholder \{versoin\}"):
        known_placeholders("fixVersion = {versoin}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-30T09:00:00Z", datetime(2026, 11, 30, 9, tzinfo=UTC)),
        ("2026-11-30T10:00:00+01:00", datetime(2026, 11, 30, 9, tzinfo=UTC)),
        ("2026-11-30T09:00:00", datetime(2026, 11, 30, 9, tzinfo=UTC)),
        (1796029200, datetime(2026, 11, 30, 9, tzinfo=UTC)),
        ("1796029200.5", datetime(2026, 11, 30, 9, 0, 0, 500000, tzinfo=UTC)),
        (1796029200000, datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ],
)
def test_timestamps(value, expected):
    assert timestamp(value, "t") == expected


@pytest.mark.parametrize("value", ["yesterday", True, None, float("nan")])
def test_bad_timestamps_are_faults(value):
    with pytest.raises(Fault):
        timestamp(value, "t")


def test_a_503s_http_date_retry_after_is_handed_back():
    response = httpx.Response(503, headers={"Retry-After": "Mon, 30 Nov 2026 09:14:00 GMT", "content-type": "text/html"}, text="<p>down")
    fault = status_fault(response, NOW)
    assert (fault.reason, fault.retry_after_s) == ("HTTP 503 (an HTML page, not JSON)", 120.0)


def test_json_body_refuses_what_is_not_json():
    with pytest.raises(Fault, match="HTTP 200 but an HTML page, not JSON"):
        json_body(httpx.Response(200, text="<!doctype html><p>login</p>"))
    with pytest.raises(Fault, match="not JSON"):
        json_body(httpx.Response(200, headers={"content-type": "application/json"}, content=b'{"v": NaN}'))
    assert json_body(httpx.Response(200, headers={"content-type": "application/vnd.api+json"}, content=b'{"v": 1}')) == {"v": 1}


def test_events_cannot_exceed_samples():
    with pytest.raises(Fault, match="11 events cannot exceed 10 samples"):
        reading("x", 1.0, NOW, samples=10, events=11)


def test_pull_scrubs_secrets_from_reasons_and_notes(monkeypatch):
    monkeypatch.setenv("PULL_SECRET", "  s3cr3t value/+\n")

    def work(call: Call) -> list[Reading]:
        secret = call.secret(CredentialRef(env="PULL_SECRET"))
        call.note("GET", str(httpx.URL("https://api.example.com/x", params={"q": secret})))
        raise Fault(f"the vendor said {secret} is wrong", retry_after_s=5)

    with httpx.Client() as client:
        result = pull("demo", ("a", "b"), client, NOW, work)
    assert [r.error for r in result.readings] == ["demo: the vendor said *** is wrong"] * 2
    assert result.notes == ("GET https://api.example.com/x?q=***",) and result.retry_after_s == 5
