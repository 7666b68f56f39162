"""Generic JSON events: schema, validation errors naming the field, Standard Webhooks signing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from conductor.sources.cloudevents import standard_webhook_headers
from conductor.sources.errors import PayloadInvalid, SignatureInvalid
from conductor.sources.generic import GenericEvent, generic_json_schema, parse_generic, verify_generic

SECRET = "whsec_" + base64.b64encode(b"generic-sender-secret-0123456789").decode()
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_build_finished_gives_build_green():
    body = _body(type="build.finished", id="run-1", repository="acme/app", branch="refs/heads/main", sha="abc", outcome="failure")
    event = parse_generic({}, body)
    assert event.source == "generic"
    assert (event.kind, event.raw_type, event.delivery_id) == ("build_finished", "build.finished", "run-1")
    assert (event.repository, event.branch, event.sha, event.outcome) == ("acme/app", "main", "abc", "failure")
    assert [(s.name, s.value) for s in event.signals] == [("build_green", 0.0)]


def test_explicit_build_green_is_not_duplicated():
    body = _body(type="build.finished", id="r", outcome="success", signals=[{"name": "build_green", "value": 1}])
    assert [s.name for s in parse_generic({}, body).signals] == ["build_green"]


def test_signal_event():
    body = _body(
        type="signal",
        signals=[{"name": "crash_free_rate", "value": 0.998, "samples": 12000}],
        occurred_at="2024-05-01T11:59:00",
    )
    event = parse_generic({"Webhook-Id": "msg_7"}, body)
    assert event.kind == "signal"
    assert event.delivery_id == "msg_7"
    assert [(s.name, s.value, s.samples) for s in event.signals] == [("crash_free_rate", 0.998, 12000)]
    assert event.occurred_at == datetime(2024, 5, 1, 11, 59, tzinfo=UTC)


def test_a_rate_can_carry_its_counts():
    signals = [{"name": "crash_free_sessions", "value": 99.61, "samples": 412_000, "events": 410_393}]
    event = parse_generic({}, _body(type="signal", id="s", signals=signals))
    assert [(s.value, s.samples, s.events) for s in event.signals] == [(99.61, 412_000, 410_393)]


def test_tests_finished_with_counts():
    body = _body(type="tests.finished", id="t", signals=[{"name": "tests_pass_rate", "value": 0.97, "samples": 300}])
    event = parse_generic({}, body)
    assert event.kind == "tests_finished" and event.outcome is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "deploy.finished", "id": "x"}, "type"),
        ({"id": "x"}, "type"),
        ({"type": "signal", "id": "x", "signals": [{"name": "a", "value": "high"}]}, "signals.0.value"),
        ({"type": "signal", "id": "x", "signals": [{"name": "a", "value": 1, "samples": -1}]}, "signals.0.samples"),
        ({"type": "signal", "id": "x", "signals": [{"name": "", "value": 1}]}, "signals.0.name"),
        ({"type": "signal", "id": "x", "signals": [{"value": 1}]}, "signals.0.name"),
        ({"type": "signal", "id": "x", "signals": [{"name": "a", "value": 1, "unit": "%"}]}, "signals.0.unit"),
        ({"type": "build.finished", "id": "x", "outcome": "green"}, "outcome"),
        ({"type": "build.finished", "id": "x"}, "outcome"),
        ({"type": "build.finished", "id": "x", "outcome": "success", "commit": "abc"}, "commit"),
        ({"type": "signal", "id": "x"}, "signals"),
        ({"type": "tests.finished", "id": "x"}, "signals"),
        ({"type": "signal", "signals": [{"name": "a", "value": 1}]}, "id"),
        ({"type": "signal", "id": "x", "signals": [{"name": "a", "value": 99.5, "samples": 10, "events": 11}]}, "signals.0.events"),
        ({"type": "signal", "id": "x", "signals": [{"name": "a", "value": 99.5, "events": 11}]}, "signals.0.events"),
    ],
)
def test_invalid_events_name_the_field(fields, field):
    with pytest.raises(PayloadInvalid) as info:
        parse_generic({}, _body(**fields))
    assert info.value.field == field


def test_nan_is_refused():
    with pytest.raises(PayloadInvalid) as info:
        parse_generic({}, b'{"type": "signal", "id": "x", "signals": [{"name": "a", "value": NaN}]}')
    assert info.value.field == "body"


def test_huge_number_is_refused():
    with pytest.raises(PayloadInvalid) as info:
        parse_generic({}, b'{"type": "signal", "id": "x", "signals": [{"name": "a", "value": 1e999}]}')
    assert info.value.field == "signals.0.value"


def test_malformed_json():
    with pytest.raises(PayloadInvalid) as info:
        parse_generic({}, b'{"type": "signal" "id": "x"}')
    assert info.value.field == "body"
    assert "line 1 column 19" in str(info.value)


def test_top_level_must_be_an_object():
    with pytest.raises(PayloadInvalid) as info:
        parse_generic({}, b"[1, 2]")
    assert info.value.field == "body"


def test_schema_documents_the_fields():
    schema = generic_json_schema()
    assert schema == GenericEvent.model_json_schema()
    assert set(schema["properties"]) >= {"type", "id", "repository", "branch", "sha", "outcome", "signals"}
    assert schema["properties"]["type"]["enum"] == ["build.finished", "tests.finished", "signal"]
    assert schema["required"] == ["type"]
    assert schema["additionalProperties"] is False


def test_signature_uses_standard_webhooks():
    body = _body(type="signal", id="x", signals=[{"name": "a", "value": 1}])
    headers = standard_webhook_headers(SECRET, "msg_1", body, NOW)
    verify_generic([SECRET], body, headers, now=NOW)
    with pytest.raises(SignatureInvalid):
        verify_generic([SECRET], body + b" ", headers, now=NOW)
