"""CloudEvents + CDEvents: Standard Webhooks signatures, both envelope modes, every CDEvents fixture."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from conductor.sources.cloudevents import (
    CDEventMapping,
    cloudevent_binary_headers,
    cloudevent_structured,
    parse_cloudevent,
    standard_webhook_headers,
    verify_standard_webhook,
)
from conductor.sources.errors import PayloadInvalid, SignatureInvalid

SECRET_A = "whsec_" + base64.b64encode(b"first secret, thirty-two bytes!!").decode()
SECRET_B = "whsec_" + base64.b64encode(b"second secret, rotated in later.").decode()
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BODY = b'{"type": "signal", "signals": [{"name": "crash_free_rate", "value": 0.998}]}'
CE_ID = "271069a8-fc18-44f1-b38f-9d70a1695819"
OCCURRED = datetime(2023, 3, 20, 14, 27, 5, 315384, tzinfo=UTC)


def _signed(secret: str = SECRET_A, body: bytes = BODY, at: datetime = NOW, msg_id: str = "msg_1") -> dict[str, str]:
    return standard_webhook_headers(secret, msg_id, body, at)


# ------------------------------------------------------------------ Standard Webhooks


def test_right_signature_passes():
    verify_standard_webhook([SECRET_A], BODY, _signed(), now=NOW)


def test_helper_agrees_with_the_library_verify():
    # the library reads the wall clock itself, so sign "now" for this cross-check
    at = datetime.now(UTC)
    headers = _signed(at=at)
    assert Webhook(SECRET_A).verify(BODY, headers) == json.loads(BODY)
    verify_standard_webhook([SECRET_A], BODY, headers)  # default now = wall clock


def test_secret_without_prefix_is_accepted():
    raw = SECRET_A.removeprefix("whsec_")
    verify_standard_webhook([raw], BODY, _signed(), now=NOW)


def test_flipped_body_byte_fails():
    headers = _signed()
    tampered = bytearray(BODY)
    tampered[10] ^= 0x01
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_standard_webhook([SECRET_A], bytes(tampered), headers, now=NOW)


def test_flipped_signature_byte_fails():
    headers = _signed()
    raw = bytearray(base64.b64decode(headers["webhook-signature"].removeprefix("v1,")))
    raw[0] ^= 0x01
    headers["webhook-signature"] = "v1," + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SignatureInvalid):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_changed_message_id_fails():
    headers = _signed()
    headers["webhook-id"] = "msg_2"
    with pytest.raises(SignatureInvalid):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails_and_names_it(missing):
    headers = _signed()
    del headers[missing]
    with pytest.raises(SignatureInvalid, match=f"missing {missing}"):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_wrong_secret_fails():
    with pytest.raises(SignatureInvalid):
        verify_standard_webhook([SECRET_B], BODY, _signed(SECRET_A), now=NOW)


def test_any_of_several_secrets_passes():
    verify_standard_webhook([SECRET_B, SECRET_A], BODY, _signed(SECRET_A), now=NOW)
    verify_standard_webhook([SECRET_B, SECRET_A], BODY, _signed(SECRET_B), now=NOW)


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_outside_tolerance_fails(offset):
    headers = _signed(at=NOW + timedelta(seconds=offset))
    with pytest.raises(SignatureInvalid, match="webhook-timestamp"):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_at_the_edge_of_tolerance_passes(offset):
    verify_standard_webhook([SECRET_A], BODY, _signed(at=NOW + timedelta(seconds=offset)), now=NOW)


@pytest.mark.parametrize("value", ["soon", "1714564800.5", "-1714564800", ""])
def test_malformed_timestamp_fails(value):
    headers = _signed()
    headers["webhook-timestamp"] = value
    with pytest.raises(SignatureInvalid, match="webhook-timestamp"):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_multiple_signatures_one_valid_passes():
    good = _signed()["webhook-signature"]
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    headers = _signed()
    headers["webhook-signature"] = f"v1a,ZWQyNTUxOQ== {bogus} garbage v1,not*base64 {good}"
    verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_multiple_signatures_none_valid_fails():
    headers = _signed()
    headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode() + " v2,abc"
    with pytest.raises(SignatureInvalid):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_signature_without_v1_entry_fails():
    headers = _signed()
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(SignatureInvalid, match="no v1 signature"):
        verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_headers_are_case_insensitive():
    headers = {k.title(): v for k, v in _signed().items()}
    verify_standard_webhook([SECRET_A], BODY, headers, now=NOW)


def test_non_utf8_body_is_refused_not_crashed():
    with pytest.raises(SignatureInvalid, match="not UTF-8"):
        verify_standard_webhook([SECRET_A], b"\xff\xfe", _signed(), now=NOW)


def test_naive_now_is_taken_as_utc():
    verify_standard_webhook([SECRET_A], BODY, _signed(), now=NOW.replace(tzinfo=None))


def test_configuration_errors():
    with pytest.raises(ValueError):
        verify_standard_webhook([], BODY, _signed(), now=NOW)
    with pytest.raises(ValueError):
        verify_standard_webhook(["whsec_"], BODY, _signed(), now=NOW)


# ------------------------------------------------------------------ CDEvents fixtures, both modes

EXPECTED = {
    "cdevents/pipelinerun_finished.json": dict(
        kind="pipeline_finished",
        raw_type="dev.cdevents.pipelinerun.finished.0.3.0",
        outcome="failure",
        signals=[("build_green", 0.0)],
        labels=["pipeline:myPipeline"],
        repository=None,
        branch=None,
    ),
    "cdevents/build_finished.json": dict(
        kind="build_finished",
        raw_type="dev.cdevents.build.finished.0.3.0",
        outcome=None,  # build.finished has no outcome field in CDEvents 0.3
        signals=[],
        labels=["artifact:pkg:oci/myapp@sha256%3A0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427"],
        repository=None,
        branch=None,
    ),
    "cdevents/testsuiterun_finished.json": dict(
        kind="tests_finished",
        raw_type="dev.cdevents.testsuiterun.finished.0.3.0",
        outcome="failure",
        signals=[],
        labels=["suite:Auth TestSuite", "env:dev"],
        repository=None,
        branch=None,
    ),
    "cdevents/artifact_published.json": dict(
        kind="artifact_published",
        raw_type="dev.cdevents.artifact.published.0.3.0",
        outcome=None,
        signals=[],
        labels=["artifact:pkg:golang/mygit.com/myorg/myapp@234fd47e07d1004f0aed9c"],
        repository=None,
        branch=None,
    ),
    "cdevents/branch_created.json": dict(
        kind="branch_created",
        raw_type="dev.cdevents.branch.created.0.3.0",
        outcome=None,
        signals=[],
        labels=[],
        repository="TestRepo/TestOrg",
        branch="mySubject123",
    ),
}


def _structured(cdevent: dict) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/cloudevents+json; charset=utf-8"}, cloudevent_structured(cdevent)


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cdevent_fixture(fixture_json, name, mode):
    cdevent = fixture_json(name)
    headers, body = cloudevent_binary_headers(cdevent) if mode == "binary" else _structured(cdevent)
    event = parse_cloudevent(headers, body)
    expected = EXPECTED[name]
    assert event.source == "cloudevents"
    assert event.delivery_id == CE_ID  # no webhook-id header: falls back to the CE id
    assert event.kind == expected["kind"]
    assert event.raw_type == expected["raw_type"]
    assert event.outcome == expected["outcome"]
    assert [(s.name, s.value) for s in event.signals] == expected["signals"]
    assert event.labels == expected["labels"]
    assert event.repository == expected["repository"]
    assert event.branch == expected["branch"]
    assert event.sha is None
    assert event.occurred_at == OCCURRED


def test_signed_cloudevent_end_to_end(fixture_json):
    cdevent = fixture_json("cdevents/pipelinerun_finished.json")
    headers, body = _structured(cdevent)
    headers |= _signed(body=body, msg_id="msg_pipeline_1")
    verify_standard_webhook([SECRET_A], body, headers, now=NOW)
    event = parse_cloudevent(headers, body)
    assert event.delivery_id == "msg_pipeline_1"  # webhook-id wins over the CE id
    assert event.kind == "pipeline_finished"


def test_structured_envelope_shape(fixture_json):
    cdevent = fixture_json("cdevents/build_finished.json")
    envelope = json.loads(cloudevent_structured(cdevent))
    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == CE_ID
    assert envelope["source"] == "/event/source/123"
    assert envelope["type"] == "dev.cdevents.build.finished.0.3.0"
    assert envelope["data"] == cdevent


def test_binary_headers_are_percent_encoded_and_decoded(fixture_json):
    cdevent = fixture_json("cdevents/artifact_published.json")
    cdevent["context"]["source"] = "/my source/ünïcode"
    headers, body = cloudevent_binary_headers(cdevent)
    assert headers["ce-source"] == "/my%20source/%C3%BCn%C3%AFcode"
    assert parse_cloudevent(headers, body).kind == "artifact_published"


def test_structured_data_base64(fixture_json):
    cdevent = fixture_json("cdevents/branch_created.json")
    envelope = json.loads(cloudevent_structured(cdevent))
    envelope["data_base64"] = base64.b64encode(json.dumps(envelope.pop("data")).encode()).decode()
    event = parse_cloudevent({"content-type": "application/cloudevents+json"}, json.dumps(envelope).encode())
    assert (event.kind, event.branch) == ("branch_created", "mySubject123")


@pytest.mark.parametrize(
    ("outcome", "expected", "green"),
    [("success", "success", [1.0]), ("error", "failure", [0.0]), ("cancel", "cancelled", []), ("weird", None, [])],
)
def test_pipeline_outcomes(fixture_json, outcome, expected, green):
    cdevent = fixture_json("cdevents/pipelinerun_finished.json")
    cdevent["subject"]["content"]["outcome"] = outcome
    event = parse_cloudevent(*_structured(cdevent))
    assert event.outcome == expected
    assert [s.value for s in event.signals] == green


def test_testsuite_pass_outcome(fixture_json):
    cdevent = fixture_json("cdevents/testsuiterun_finished.json")
    cdevent["subject"]["content"]["outcome"] = "pass"
    assert parse_cloudevent(*_structured(cdevent)).outcome == "success"


def test_unknown_types_are_ignored(fixture_json):
    cdevent = fixture_json("cdevents/build_finished.json")
    cdevent["context"]["type"] = "dev.cdevents.build.queued.0.3.0"
    event = parse_cloudevent(*_structured(cdevent))
    assert event.kind == "ignored" and "build.queued" in event.reason

    envelope = {"specversion": "1.0", "id": "x", "source": "/s", "type": "com.example.thing", "data": {}}
    event = parse_cloudevent({"Content-Type": "application/cloudevents+json"}, json.dumps(envelope).encode())
    assert event.kind == "ignored" and "not a CDEvent" in event.reason


def test_neither_mode_is_refused(fixture_bytes):
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent({"Content-Type": "application/json"}, fixture_bytes("cdevents/build_finished.json"))
    assert info.value.field == "ce-specversion"


@pytest.mark.parametrize("missing", ["ce-id", "ce-type", "ce-source"])
def test_binary_missing_attribute(fixture_json, missing):
    headers, body = cloudevent_binary_headers(fixture_json("cdevents/build_finished.json"))
    del headers[missing]
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(headers, body)
    assert info.value.field == missing


@pytest.mark.parametrize("missing", ["id", "type", "source", "specversion"])
def test_structured_missing_attribute(fixture_json, missing):
    envelope = json.loads(cloudevent_structured(fixture_json("cdevents/build_finished.json")))
    del envelope[missing]
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent({"Content-Type": "application/cloudevents+json"}, json.dumps(envelope).encode())
    assert info.value.field == missing


def test_wrong_specversion(fixture_json):
    headers, body = cloudevent_binary_headers(fixture_json("cdevents/build_finished.json"))
    headers["ce-specversion"] = "0.3"
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(headers, body)
    assert info.value.field == "specversion"


def test_batch_mode_is_refused():
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent({"Content-Type": "application/cloudevents-batch+json"}, b"[]")
    assert info.value.field == "Content-Type"


def test_type_mismatch_between_envelope_and_cdevent(fixture_json):
    cdevent = fixture_json("cdevents/build_finished.json")
    headers, body = cloudevent_binary_headers(cdevent)
    headers["ce-type"] = "dev.cdevents.pipelinerun.finished.0.3.0"
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(headers, body)
    assert info.value.field == "data.context.type"


def test_cdevent_without_data(fixture_json):
    headers, _ = cloudevent_binary_headers(fixture_json("cdevents/build_finished.json"))
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(headers, b"")
    assert info.value.field == "data"


def test_cdevent_without_subject_id(fixture_json):
    cdevent = fixture_json("cdevents/branch_created.json")
    del cdevent["subject"]["id"]
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(*_structured(cdevent))
    assert info.value.field == "data.subject.id"


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_malformed_json(mode):
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "/s"}
    if mode == "structured":
        headers = {"Content-Type": "application/cloudevents+json"}
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(headers, b'{"specversion": "1.0", "id": }')
    assert info.value.field == "body"
    assert "line 1 column 30" in str(info.value)


@pytest.mark.parametrize(("remove", "field"), [("context", "data.context"), ("subject", "data.subject")])
def test_cdevent_errors_name_the_path_under_data(fixture_json, remove, field):
    headers, _ = cloudevent_binary_headers(fixture_json("cdevents/pipelinerun_finished.json"))
    cdevent = fixture_json("cdevents/pipelinerun_finished.json")
    del cdevent[remove]
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(headers, json.dumps(cdevent).encode())
    assert info.value.field == field


def test_cdevent_content_of_the_wrong_type(fixture_json):
    cdevent = fixture_json("cdevents/testsuiterun_finished.json")
    cdevent["subject"]["content"]["testSuite"]["name"] = 7
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent(*_structured(cdevent))
    assert info.value.field == "data.subject.content.testSuite.name"


def test_cdevent_without_content(fixture_json):
    cdevent = fixture_json("cdevents/branch_created.json")
    cdevent["subject"]["content"] = None
    event = parse_cloudevent(*_structured(cdevent))
    assert (event.kind, event.branch, event.repository) == ("branch_created", "mySubject123", None)


def test_structured_null_data_base64_is_refused(fixture_json):
    envelope = json.loads(cloudevent_structured(fixture_json("cdevents/branch_created.json")))
    envelope["data_base64"] = None
    with pytest.raises(PayloadInvalid) as info:
        parse_cloudevent({"Content-Type": "application/cloudevents+json"}, json.dumps(envelope).encode())
    assert info.value.field == "data_base64"


@pytest.mark.parametrize("name", ["pipelinerun_finished", "build_finished", "testsuiterun_finished"])
def test_a_run_says_its_branch_through_custom_data_or_a_ref_subject(fixture_json, name):
    cdevent = fixture_json(f"cdevents/{name}.json")
    assert parse_cloudevent(*_structured(cdevent)).branch is None  # the real body names no branch: nothing to match on
    cdevent["customData"] = {"branch": "refs/heads/release/8.9.0", "sha": "a" * 40}
    event = parse_cloudevent(*_structured(cdevent))
    assert (event.branch, event.sha) == ("release/8.9.0", "a" * 40)
    cdevent.pop("customData")
    cdevent["subject"]["id"] = "refs/heads/release/8.9.1"
    assert parse_cloudevent(*_structured(cdevent)).branch == "release/8.9.1"


# --------------------------------------------------------------------------- declared mappings

TEKTON_LIKE = [
    # A pipeline named after the release it builds: android-release-8.9.0 -> release/8.9.0
    {"path": "subject.content.pipelineName", "pattern": r"android-release-(?P<version>[0-9.]+)", "value": "release/{version}"},
    {"field": "repository", "path": "customData.git.repo"},
    {"path": "customData.git.branch", "types": ["testsuiterun.finished"]},
]


def _mappings(raw: list[dict]) -> list[CDEventMapping]:
    return [CDEventMapping.model_validate(m) for m in raw]


def test_a_declared_mapping_finds_the_branch_and_repository(fixture_json):
    cdevent = fixture_json("cdevents/pipelinerun_finished.json")
    cdevent["subject"]["content"]["pipelineName"] = "android-release-8.9.0"
    cdevent["customData"] = {"git": {"repo": "acme/music-android"}}
    event = parse_cloudevent(*_structured(cdevent), mappings=_mappings(TEKTON_LIKE))
    assert (event.branch, event.repository) == ("release/8.9.0", "acme/music-android")
    assert parse_cloudevent(*_structured(cdevent)).branch is None  # undeclared: nothing to match on


def test_a_mapping_that_does_not_match_falls_through_to_the_built_in_places(fixture_json):
    cdevent = fixture_json("cdevents/pipelinerun_finished.json")  # pipelineName "myPipeline": no match
    cdevent["customData"] = {"branch": "release/8.9.1", "repository": {"id": "acme/music-android"}}
    event = parse_cloudevent(*_structured(cdevent), mappings=_mappings(TEKTON_LIKE))
    assert (event.branch, event.repository) == ("release/8.9.1", "acme/music-android")


def test_a_mapping_applies_to_its_types_only(fixture_json):
    run = fixture_json("cdevents/pipelinerun_finished.json")
    run["customData"] = {"git": {"branch": "refs/heads/release/8.9.2"}}
    assert parse_cloudevent(*_structured(run), mappings=_mappings(TEKTON_LIKE)).branch is None
    suite = fixture_json("cdevents/testsuiterun_finished.json")
    suite["customData"] = {"git": {"branch": "refs/heads/release/8.9.2"}}
    assert parse_cloudevent(*_structured(suite), mappings=_mappings(TEKTON_LIKE)).branch == "release/8.9.2"


def test_a_pattern_without_a_template_takes_its_first_group(fixture_json):
    cdevent = fixture_json("cdevents/build_finished.json")
    cdevent["subject"]["id"] = "build-release/8.9.3-42"
    mapping = _mappings([{"path": "subject.id", "pattern": r"build-(.+)-\d+"}])
    assert parse_cloudevent(*_structured(cdevent), mappings=mapping).branch == "release/8.9.3"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"path": "subject..id"}, "path"),
        ({"path": "subject.id", "value": "release/{version}"}, "needs a pattern"),
        ({"path": "subject.id", "pattern": "(?P<v>.+)", "value": "release/{version}"}, "no named group for"),
        ({"path": "subject.id", "pattern": "(unclosed"}, "pattern"),
        ({"path": "subject.id", "field": "sha"}, "field"),
        ({"path": "subject.id", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_mapping_is_refused_at_start_naming_the_setting(monkeypatch, raw, says):
    from conductor.config import SettingsInvalid, load_settings

    monkeypatch.setenv("CONDUCTOR_CDEVENTS_MAP", json.dumps([raw]))
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    assert "CONDUCTOR_CDEVENTS_MAP (cdevents_map.0" in str(info.value) and says in str(info.value)


def test_a_mapping_that_is_not_json_is_refused_naming_the_setting(monkeypatch):
    from conductor.config import SettingsInvalid, load_settings

    monkeypatch.setenv("CONDUCTOR_CDEVENTS_MAP", "[{")
    with pytest.raises(SettingsInvalid, match="CONDUCTOR_CDEVENTS_MAP: not valid JSON"):
        load_settings()


def test_mappings_come_from_the_environment(monkeypatch):
    from conductor.config import load_settings

    monkeypatch.setenv("CONDUCTOR_CDEVENTS_MAP", json.dumps(TEKTON_LIKE))
    assert [m.field for m in load_settings().cdevents_map] == ["branch", "repository", "branch"]
