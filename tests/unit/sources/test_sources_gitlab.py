"""GitLab: shared-token check, Pipeline Hook fixture, Job Hook, dedupe key."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from conductor.sources.errors import PayloadInvalid, SignatureInvalid
from conductor.sources.gitlab import parse_gitlab, verify_gitlab

PIPELINE = "gitlab/pipeline_hook__pipeline_succeeded.json"
TOKEN = "s3cr3t-token"


def _headers(event: str = "Pipeline Hook", **extra: str) -> dict[str, str]:
    return {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e", **extra}


# ------------------------------------------------------------------ token


def test_right_token_passes():
    verify_gitlab(TOKEN, {"X-Gitlab-Token": TOKEN})
    verify_gitlab(TOKEN, {"x-gitlab-token": TOKEN})


def test_wrong_token_fails():
    with pytest.raises(SignatureInvalid, match="X-Gitlab-Token does not match"):
        verify_gitlab(TOKEN, {"X-Gitlab-Token": TOKEN[:-1] + "X"})


def test_missing_token_fails():
    with pytest.raises(SignatureInvalid, match="missing X-Gitlab-Token"):
        verify_gitlab(TOKEN, {"X-Gitlab-Event": "Pipeline Hook"})


def test_non_ascii_token_does_not_crash():
    with pytest.raises(SignatureInvalid):
        verify_gitlab(TOKEN, {"X-Gitlab-Token": "tökén"})


def test_empty_configured_token_is_a_configuration_error():
    with pytest.raises(ValueError):
        verify_gitlab("", {"X-Gitlab-Token": ""})


# ------------------------------------------------------------------ pipeline hook


def test_pipeline_succeeded_fixture(fixture_bytes):
    event = parse_gitlab(_headers(), fixture_bytes(PIPELINE))
    assert event.source == "gitlab"
    assert event.kind == "pipeline_finished"
    assert event.raw_type == "Pipeline Hook"
    assert event.delivery_id == "13792a34-cac6-4fda-95a8-c58e00a3954e"
    assert event.repository == "TomaszKolek/my-awesome-project"
    assert event.branch == "master"
    assert event.sha == "6f88e719ccde3804b1b669cef9dfb236a92fbbff"
    assert event.outcome == "success"
    assert [(s.name, s.value) for s in event.signals] == [("build_green", 1.0)]
    # GitLab's own timestamp format: "2016-09-28 20:22:34 UTC"
    assert event.occurred_at == datetime(2016, 9, 28, 20, 22, 34, tzinfo=UTC)


def test_idempotency_key_wins_over_event_uuid(fixture_bytes):
    event = parse_gitlab(_headers(**{"Idempotency-Key": "idem-1"}), fixture_bytes(PIPELINE))
    assert event.delivery_id == "idem-1"


def test_no_dedupe_key_is_refused(fixture_bytes):
    with pytest.raises(PayloadInvalid) as info:
        parse_gitlab({"X-Gitlab-Event": "Pipeline Hook"}, fixture_bytes(PIPELINE))
    assert info.value.field == "X-Gitlab-Event-UUID"


def test_missing_event_header(fixture_bytes):
    with pytest.raises(PayloadInvalid) as info:
        parse_gitlab({"X-Gitlab-Event-UUID": "u"}, fixture_bytes(PIPELINE))
    assert info.value.field == "X-Gitlab-Event"


def _pipeline(fixture_json, **attrs) -> bytes:
    payload = fixture_json(PIPELINE)
    payload["object_attributes"].update(attrs)
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("status", "outcome", "green"),
    [("failed", "failure", [0.0]), ("canceled", "cancelled", []), ("skipped", "skipped", [])],
)
def test_final_statuses(fixture_json, status, outcome, green):
    event = parse_gitlab(_headers(), _pipeline(fixture_json, status=status))
    assert event.kind == "pipeline_finished"
    assert event.outcome == outcome
    assert [s.value for s in event.signals] == green


@pytest.mark.parametrize("status", ["created", "pending", "running", "manual", "waiting_for_resource"])
def test_non_final_statuses_are_ignored(fixture_json, status):
    event = parse_gitlab(_headers(), _pipeline(fixture_json, status=status))
    assert event.kind == "ignored"
    assert status in event.reason
    assert event.repository == "TomaszKolek/my-awesome-project"


def test_tag_pipeline_has_no_branch(fixture_json):
    event = parse_gitlab(_headers(), _pipeline(fixture_json, tag=True, ref="v1.2.0"))
    assert event.branch is None
    assert "tag:v1.2.0" in event.labels


def test_pipeline_without_sha_names_the_field(fixture_json):
    payload = fixture_json(PIPELINE)
    del payload["object_attributes"]["sha"]
    with pytest.raises(PayloadInvalid) as info:
        parse_gitlab(_headers(), json.dumps(payload).encode())
    assert info.value.field == "object_attributes.sha"


# ------------------------------------------------------------------ job hook

# Shape of GitLab's documented Job Hook example (no project object in older versions).
JOB = {
    "object_kind": "build",
    "ref": "gitlab-script-trigger",
    "tag": False,
    "before_sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
    "sha": "2293ada6b400935a1378653304eaf6221e0fdb8f",
    "build_id": 1977,
    "build_name": "test",
    "build_stage": "test",
    "build_status": "failed",
    "build_created_at": "2021-02-23T02:41:37.886Z",
    "build_started_at": None,
    "build_finished_at": "2021-02-23T02:45:01.000Z",
    "build_allow_failure": False,
    "project_id": 380,
    "project_name": "gitlab-org / gitlab-test",
    "repository": {
        "name": "gitlab_test",
        "homepage": "http://192.168.64.1:3005/gitlab-org/gitlab-test",
    },
}


def test_job_hook():
    event = parse_gitlab(_headers("Job Hook"), json.dumps(JOB).encode())
    assert event.kind == "build_finished"
    assert event.raw_type == "Job Hook"
    assert event.repository == "gitlab-org/gitlab-test"
    assert event.branch == "gitlab-script-trigger"
    assert event.sha == "2293ada6b400935a1378653304eaf6221e0fdb8f"
    assert event.outcome == "failure"
    assert [(s.name, s.value) for s in event.signals] == [("build_green", 0.0)]
    assert event.labels == ["job:test", "stage:test"]
    assert event.occurred_at == datetime(2021, 2, 23, 2, 45, 1, tzinfo=UTC)


def test_job_hook_prefers_project_path_and_falls_back_to_project_name():
    with_project = {**JOB, "project": {"path_with_namespace": "group/sub/app"}}
    assert parse_gitlab(_headers("Job Hook"), json.dumps(with_project).encode()).repository == "group/sub/app"
    bare = {k: v for k, v in JOB.items() if k != "repository"}
    assert parse_gitlab(_headers("Job Hook"), json.dumps(bare).encode()).repository == "gitlab-org/gitlab-test"


def test_running_job_is_ignored():
    event = parse_gitlab(_headers("Job Hook"), json.dumps({**JOB, "build_status": "running"}).encode())
    assert event.kind == "ignored" and "running" in event.reason


def test_other_events_are_ignored():
    body = json.dumps({"object_kind": "push", "project": {"path_with_namespace": "a/b"}}).encode()
    event = parse_gitlab(_headers("Push Hook"), body)
    assert event.kind == "ignored" and "Push Hook" in event.reason
    assert event.repository == "a/b"


def test_malformed_json():
    with pytest.raises(PayloadInvalid) as info:
        parse_gitlab(_headers(), b'{"object_kind": "pipeline"')
    assert info.value.field == "body"
    assert "char 26" in str(info.value)


def test_non_final_pipeline_needs_only_its_status(fixture_json):
    payload = fixture_json(PIPELINE)
    payload["object_attributes"] = {"status": "running"}
    event = parse_gitlab(_headers(), json.dumps(payload).encode())
    assert event.kind == "ignored" and event.repository == "TomaszKolek/my-awesome-project"


def test_merge_request_pipeline_uses_the_source_branch(fixture_json):
    payload = fixture_json(PIPELINE)
    payload["object_attributes"]["ref"] = "refs/merge-requests/7/head"
    payload["merge_request"] = {"source_branch": "feature/x"}
    event = parse_gitlab(_headers(), json.dumps(payload).encode())
    assert event.branch == "feature/x" and "merge_request" in event.labels


def test_wrong_typed_project_path_names_the_field():
    body = json.dumps({**JOB, "project": {"path_with_namespace": 42}}).encode()
    with pytest.raises(PayloadInvalid) as info:
        parse_gitlab(_headers("Job Hook"), body)
    assert info.value.field == "project.path_with_namespace"
