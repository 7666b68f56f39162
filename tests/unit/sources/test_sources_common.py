"""Cross-cutting behaviour of the inbound layer: errors, events, malformed JSON, fuzzed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError

from conductor.sources import (
    PayloadInvalid,
    PayloadTooLarge,
    SignatureInvalid,
    SourceError,
    parse_cloudevent,
    parse_generic,
    parse_github,
    parse_gitlab,
)
from conductor.sources._common import (
    Flag,
    LooseStr,
    OptObject,
    OptStr,
    Payload,
    ReqStr,
    Timestamp,
    parse_time,
    validate,
)
from conductor.sources.events import InboundEvent, SignalIn, outcome_signals

PARSERS = {
    "github": (parse_github, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d"}),
    "gitlab": (parse_gitlab, {"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Event-UUID": "u"}),
    "cloudevents-structured": (parse_cloudevent, {"Content-Type": "application/cloudevents+json"}),
    "cloudevents-binary": (
        parse_cloudevent,
        {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "dev.cdevents.build.finished.0.3.0"},
    ),
    "generic": (parse_generic, {"webhook-id": "w"}),
}


def test_error_hierarchy_and_status():
    for cls, status in ((SignatureInvalid, 401), (PayloadInvalid, 422), (PayloadTooLarge, 413)):
        assert issubclass(cls, SourceError)
        assert cls.http_status == status
    err = PayloadInvalid("required field is missing", field="workflow_run.head_sha")
    assert err.field == "workflow_run.head_sha"
    assert str(err) == "workflow_run.head_sha: required field is missing"
    assert PayloadInvalid("no field").field is None


MALFORMED = [
    (b'{"a": 1,}', "line 1 column 9 (char 8)"),
    (b"", "line 1 column 1 (char 0)"),
    (b'{"a":\n  tru}', "line 2 column 3 (char 8)"),
]


@pytest.mark.parametrize(
    ("name", "body", "position"),
    [
        (name, body, position)
        for name in sorted(PARSERS)
        for body, position in MALFORMED
        # an empty binary-mode body is a CloudEvent without data (see test_cdevent_without_data)
        if body or name != "cloudevents-binary"
    ],
)
def test_malformed_json_names_body_and_position(name, body, position):
    parse, headers = PARSERS[name]
    with pytest.raises(PayloadInvalid) as info:
        parse(headers, body)
    assert info.value.field == "body"
    assert position in str(info.value)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_deeply_nested_json_is_refused(name):
    parse, headers = PARSERS[name]
    with pytest.raises(PayloadInvalid) as info:
        parse(headers, b"[" * 100_000 + b"]" * 100_000)
    assert info.value.field == "body"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_invalid_utf8_is_refused(name):
    parse, headers = PARSERS[name]
    with pytest.raises(PayloadInvalid) as info:
        parse(headers, b'{"a": "\xff"}')
    assert info.value.field == "body"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(PARSERS)), value=json_values, raw=st.binary(max_size=64), use_raw=st.booleans())
def test_parsers_only_ever_raise_source_errors(name, value, raw, use_raw):
    parse, headers = PARSERS[name]
    body = raw if use_raw else json.dumps(value).encode()
    try:
        event = parse(headers, body)
    except SourceError:
        return
    assert isinstance(event, InboundEvent)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["github", "gitlab"]),
    repo=st.dictionaries(st.sampled_from(["full_name", "path_with_namespace"]), json_values, max_size=2),
    ref=json_values,
    sha=json_values,
)
def test_typed_fields_of_the_wrong_type_are_payload_invalid(name, repo, ref, sha):
    parse, headers = PARSERS[name]
    payload = (
        {"ref": ref, "after": sha, "repository": repo, "commits": [{"id": sha, "message": ref}]}
        if name == "github"
        else {"object_attributes": {"status": "success", "ref": ref, "sha": sha}, "project": repo}
    )
    try:
        parse(headers, json.dumps(payload).encode())
    except PayloadInvalid as exc:
        assert exc.field


def test_outcome_signals():
    assert outcome_signals("success") == [SignalIn(name="build_green", value=1.0)]
    assert outcome_signals("failure") == [SignalIn(name="build_green", value=0.0)]
    for other in ("cancelled", "skipped", "neutral", None):
        assert outcome_signals(other) == []


def test_signal_refuses_nan():
    with pytest.raises(ValidationError):
        SignalIn(name="x", value=float("nan"))


def test_event_defaults_are_not_shared():
    a = InboundEvent(source="github", delivery_id="1", kind="ping", raw_type="ping")
    b = InboundEvent(source="github", delivery_id="2", kind="ping", raw_type="ping")
    a.labels.append("x")
    assert b.labels == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2016-09-28 20:22:34 UTC", datetime(2016, 9, 28, 20, 22, 34, tzinfo=UTC)),
        ("2020-10-05T16:33:49Z", datetime(2020, 10, 5, 16, 33, 49, tzinfo=UTC)),
        ("2016-09-28T22:04:48+02:00", datetime(2016, 9, 28, 20, 4, 48, tzinfo=UTC)),
        (1557933657, datetime(2019, 5, 15, 15, 20, 57, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
        (True, None),
        (10**20, None),
    ],
)
def test_parse_time(value, expected):
    assert parse_time(value) == expected


# ------------------------------------------------------------------ payload models: types and errors


class _Author(Payload):
    name: OptStr = None


class _Item(Payload):
    id: ReqStr
    author: OptObject[_Author] = None


class _Doc(Payload):
    ref: ReqStr
    note: OptStr = None
    label: LooseStr = None
    draft: Flag = False
    at: Timestamp = None
    items: list[_Item] = Field(default_factory=list)


def _refusal(data, prefix=None) -> PayloadInvalid:
    with pytest.raises(PayloadInvalid) as info:
        validate(_Doc, data, prefix)
    return info.value


def test_field_types_read_what_the_parsers_need():
    doc = validate(
        _Doc,
        {"ref": "main", "note": "", "label": 5, "draft": "true", "at": 1557933657, "items": [{"id": "a", "author": "x"}]},
    )
    assert doc.note is None  # "" counts as absent
    assert doc.label is None  # a descriptive field never refuses
    assert doc.draft is False  # only JSON true is true
    assert doc.at == datetime(2019, 5, 15, 15, 20, 57, tzinfo=UTC)
    assert doc.items[0].author is None  # a nested optional object that is not an object is absent
    assert validate(_Doc, {"ref": "main", "at": "yesterday", "draft": True}).at is None
    assert validate(_Doc, {"ref": "main", "draft": True}).draft is True
    assert validate(_Doc, {"ref": "main", "unknown": {"fields": "are ignored"}}).ref == "main"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "ref", "required field is missing"),
        ({"ref": None}, "ref", "expected a string, got null"),
        ({"ref": ""}, "ref", 'expected a non-empty string, got ""'),
        ({"ref": 5}, "ref", "expected a string, got 5"),
        ({"ref": False}, "ref", "expected a string, got false"),
        ({"ref": "m", "note": ["x"]}, "note", "expected a string, got a list"),
        ({"ref": "m", "items": {"id": "a"}}, "items", "expected a list, got an object"),
        ({"ref": "m", "items": ["a"]}, "items.0", 'expected an object, got "a"'),
        ({"ref": "m", "items": [{"id": "a"}, {}]}, "items.1.id", "required field is missing"),
        ({"ref": "m", "items": [{"id": "a", "author": {"name": 1.5}}]}, "items.0.author.name", "expected a string, got 1.5"),
    ],
)
def test_validation_errors_name_the_dotted_path(data, field, message):
    err = _refusal(data)
    assert err.field == field
    assert err.detail == message


def test_validation_error_counts_further_problems():
    assert _refusal({"note": 1}).detail == "required field is missing (and 1 more problem)"
    assert _refusal({"note": 1, "items": 2}).detail == "required field is missing (and 2 more problems)"


def test_validation_error_prefix_and_whole_document():
    assert _refusal({"ref": 5}, prefix="data").field == "data.ref"
    assert _refusal([1], prefix="data").field == "data"
    err = _refusal([1])
    assert (err.field, err.detail) == ("body", "expected an object, got a list")


def test_long_values_are_shortened_in_messages():
    detail = _refusal({"ref": "m", "items": ["x" * 500]}).detail
    assert detail.startswith('expected an object, got "xxx') and detail.endswith("...")
    assert len(detail) < 100


def test_other_pydantic_errors_keep_pydantic_wording():
    class Strict(Payload):
        count: int

    with pytest.raises(PayloadInvalid) as info:
        validate(Strict, {"count": "many"})
    assert info.value.field == "count"
    assert "valid integer" in info.value.detail
