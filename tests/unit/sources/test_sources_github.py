"""GitHub: signature checks and every shared fixture normalized to the values read from the file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.sources.errors import PayloadInvalid, SignatureInvalid
from conductor.sources.github import github_signature, parse_github, verify_github

SECRET = "It's a Secret to Everybody"


def _headers(event: str, delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958") -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}


# ------------------------------------------------------------------ signatures


def test_signature_known_vector():
    # the example from GitHub's "Validating webhook deliveries" documentation
    assert github_signature(SECRET, b"Hello, World!") == ("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_right_signature_passes(fixture_bytes):
    body = fixture_bytes("github/workflow_run_completed.payload.json")
    verify_github(SECRET, body, {"X-Hub-Signature-256": github_signature(SECRET, body)})


def test_header_name_is_case_insensitive(fixture_bytes):
    body = fixture_bytes("github/ping_payload.json")
    verify_github(SECRET, body, {"x-hub-signature-256": github_signature(SECRET, body)})


def test_flipped_body_byte_fails(fixture_bytes):
    body = fixture_bytes("github/push_with-new-branch.payload.json")
    signature = github_signature(SECRET, body)
    tampered = bytearray(body)
    tampered[100] ^= 0x01
    with pytest.raises(SignatureInvalid, match="X-Hub-Signature-256 does not match"):
        verify_github(SECRET, bytes(tampered), {"X-Hub-Signature-256": signature})


def test_flipped_signature_byte_fails():
    body = b"{}"
    signature = github_signature(SECRET, body)
    bad = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(SignatureInvalid):
        verify_github(SECRET, body, {"X-Hub-Signature-256": bad})


def test_missing_header_fails():
    with pytest.raises(SignatureInvalid, match="missing X-Hub-Signature-256"):
        verify_github(SECRET, b"{}", {"X-Hub-Signature": "sha1=abc"})


def test_wrong_prefix_fails():
    digest = github_signature(SECRET, b"{}").removeprefix("sha256=")
    with pytest.raises(SignatureInvalid, match="sha256="):
        verify_github(SECRET, b"{}", {"X-Hub-Signature-256": "sha1=" + digest})


def test_wrong_secret_fails():
    with pytest.raises(SignatureInvalid):
        verify_github("another secret", b"{}", {"X-Hub-Signature-256": github_signature(SECRET, b"{}")})


def test_empty_secret_is_a_configuration_error():
    with pytest.raises(ValueError):
        verify_github("", b"{}", {"X-Hub-Signature-256": github_signature("x", b"{}")})


@settings(max_examples=50, deadline=None)
@given(body=st.binary(min_size=1, max_size=200), data=st.data())
def test_any_single_byte_change_fails(body, data):
    signature = github_signature(SECRET, body)
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(body)
    tampered[index] ^= flip
    with pytest.raises(SignatureInvalid):
        verify_github(SECRET, bytes(tampered), {"X-Hub-Signature-256": signature})


# ------------------------------------------------------------------ fixtures


def test_workflow_run_completed(fixture_bytes):
    event = parse_github(_headers("workflow_run", "d1"), fixture_bytes("github/workflow_run_completed.payload.json"))
    assert event.source == "github"
    assert event.delivery_id == "d1"
    assert event.kind == "build_finished"
    assert event.raw_type == "workflow_run.completed"
    assert event.repository == "octo-org/octo-repo"
    assert event.branch == "master"
    assert event.sha == "3484a3fb816e0859fd6e1cea078d76385ff50625"
    assert event.outcome == "success"
    assert [(s.name, s.value) for s in event.signals] == [("build_green", 1.0)]
    assert event.labels == ["workflow:test"]
    assert event.occurred_at == datetime(2020, 10, 5, 16, 33, 49, tzinfo=UTC)
    assert event.reason is None


def test_workflow_job_completed_failure(fixture_bytes):
    body = fixture_bytes("github/workflow_job_completed.failure.with-organization.payload.json")
    event = parse_github(_headers("workflow_job"), body)
    assert event.kind == "build_finished"
    assert event.raw_type == "workflow_job.completed"
    assert event.repository == "Codertocat/Hello-World"
    assert event.branch == "main"
    assert event.sha == "3484a3fb816e0859fd6e1cea078d76385ff50625"
    assert event.outcome == "failure"
    assert [(s.name, s.value) for s in event.signals] == [("build_green", 0.0)]
    assert event.labels == ["workflow:CodeQL", "job:linters"]
    assert event.occurred_at == datetime(2021, 8, 5, 10, 38, 16, tzinfo=UTC)


def test_check_suite_completed(fixture_bytes):
    event = parse_github(_headers("check_suite"), fixture_bytes("github/check_suite_completed.payload.json"))
    assert event.kind == "build_finished"
    assert event.raw_type == "check_suite.completed"
    assert event.repository == "Codertocat/Hello-World"
    assert event.branch == "changes"
    assert event.sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert event.outcome == "success"
    assert [(s.name, s.value) for s in event.signals] == [("build_green", 1.0)]
    assert event.labels == ["app:octocoders-linter"]


def test_push_that_creates_a_branch(fixture_bytes):
    event = parse_github(_headers("push"), fixture_bytes("github/push_with-new-branch.payload.json"))
    assert event.kind == "branch_push"
    assert event.raw_type == "push"
    assert event.repository == "Codertocat/Hello-World"
    assert event.branch == "master"
    assert event.sha == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert event.outcome is None
    assert event.signals == []
    assert "branch_created" in event.labels
    assert [(c.sha, c.message, c.author) for c in event.commits] == [
        ("6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Initial commit", "Codertocat")
    ]
    # repository.pushed_at is unix seconds (1557933657) in push payloads
    assert event.occurred_at == datetime(2019, 5, 15, 15, 20, 57, tzinfo=UTC)


def test_ping(fixture_bytes):
    event = parse_github(_headers("ping", "p1"), fixture_bytes("github/ping_payload.json"))
    assert event.kind == "ping"
    assert event.raw_type == "ping"
    assert event.delivery_id == "p1"
    assert event.repository == "Octocoders/Hello-World"


def test_headers_are_case_insensitive(fixture_bytes):
    event = parse_github({"x-github-event": "ping", "X-GITHUB-DELIVERY": "abc"}, fixture_bytes("github/ping_payload.json"))
    assert (event.kind, event.delivery_id) == ("ping", "abc")


# ------------------------------------------------------------------ variations


def _variant(fixture_json, name: str, **changes) -> bytes:
    payload = fixture_json(name)
    for path, value in changes.items():
        target = payload
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(payload).encode()


def test_non_completed_action_is_ignored(fixture_json):
    body = _variant(fixture_json, "github/workflow_run_completed.payload.json", action="requested")
    event = parse_github(_headers("workflow_run"), body)
    assert event.kind == "ignored"
    assert event.raw_type == "workflow_run.requested"
    assert "requested" in event.reason
    assert event.repository == "octo-org/octo-repo"


@pytest.mark.parametrize(
    ("conclusion", "outcome", "signals"),
    [
        ("cancelled", "cancelled", []),
        ("skipped", "skipped", []),
        ("neutral", "neutral", []),
        ("timed_out", "failure", [("build_green", 0.0)]),
        ("action_required", "neutral", []),
    ],
)
def test_conclusions(fixture_json, conclusion, outcome, signals):
    body = _variant(fixture_json, "github/check_suite_completed.payload.json", check_suite__conclusion=conclusion)
    event = parse_github(_headers("check_suite"), body)
    assert event.outcome == outcome
    assert [(s.name, s.value) for s in event.signals] == signals


def test_check_run_completed():
    body = json.dumps(
        {
            "action": "completed",
            "check_run": {
                "name": "lint",
                "head_sha": "a" * 40,
                "conclusion": "failure",
                "completed_at": "2024-01-01T00:00:00Z",
                "check_suite": {"head_branch": "release/1.2"},
                "app": {"slug": "github-actions"},
            },
            "repository": {"full_name": "acme/app"},
        }
    ).encode()
    event = parse_github(_headers("check_run"), body)
    assert (event.kind, event.branch, event.sha, event.outcome) == ("build_finished", "release/1.2", "a" * 40, "failure")
    assert event.labels == ["check:lint", "app:github-actions"]


def test_create_branch_event():
    body = json.dumps({"ref": "feature/x", "ref_type": "branch", "repository": {"full_name": "acme/app"}}).encode()
    event = parse_github(_headers("create"), body)
    assert (event.kind, event.branch, event.repository) == ("branch_created", "feature/x", "acme/app")


def test_create_tag_is_ignored():
    body = json.dumps({"ref": "v1.0", "ref_type": "tag", "repository": {"full_name": "acme/app"}}).encode()
    event = parse_github(_headers("create"), body)
    assert event.kind == "ignored" and "tag" in event.reason


def test_push_to_tag_is_ignored(fixture_json):
    body = _variant(fixture_json, "github/push_with-new-branch.payload.json", ref="refs/tags/v1.0")
    event = parse_github(_headers("push"), body)
    assert event.kind == "ignored" and "refs/tags/v1.0" in event.reason


def test_branch_deletion_is_ignored(fixture_json):
    body = _variant(fixture_json, "github/push_with-new-branch.payload.json", deleted=True, created=False, after="0" * 40, commits=[])
    event = parse_github(_headers("push"), body)
    assert event.kind == "ignored" and "deleted" in event.reason


def test_plain_push_has_no_branch_created_label(fixture_json):
    body = _variant(fixture_json, "github/push_with-new-branch.payload.json", created=False)
    event = parse_github(_headers("push"), body)
    assert event.kind == "branch_push" and "branch_created" not in event.labels


def test_unknown_event_is_ignored():
    event = parse_github(_headers("issues"), b'{"action": "opened"}')
    assert event.kind == "ignored"
    assert event.raw_type == "issues.opened"
    assert "issues" in event.reason


@pytest.mark.parametrize("missing", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_missing_event_headers(missing):
    headers = _headers("ping")
    del headers[missing]
    with pytest.raises(PayloadInvalid) as info:
        parse_github(headers, b"{}")
    assert info.value.field == missing


def test_completed_run_without_sha_names_the_field(fixture_json):
    payload = fixture_json("github/workflow_run_completed.payload.json")
    del payload["workflow_run"]["head_sha"]
    with pytest.raises(PayloadInvalid) as info:
        parse_github(_headers("workflow_run"), json.dumps(payload).encode())
    assert info.value.field == "workflow_run.head_sha"


def test_malformed_json():
    with pytest.raises(PayloadInvalid) as info:
        parse_github(_headers("push"), b'{"ref": "refs/heads/main",}')
    assert info.value.field == "body"
    assert "line 1 column 27" in str(info.value)


def test_push_commit_without_id_names_the_path(fixture_json):
    payload = fixture_json("github/push_with-new-branch.payload.json")
    del payload["commits"][0]["id"]
    with pytest.raises(PayloadInvalid) as info:
        parse_github(_headers("push"), json.dumps(payload).encode())
    assert info.value.field == "commits.0.id"


def test_tag_push_needs_only_ref_and_after(fixture_json):
    body = _variant(fixture_json, "github/push_with-new-branch.payload.json", ref="refs/tags/v1.0", commits=[{"id": 1}])
    assert parse_github(_headers("push"), body).kind == "ignored"


def test_push_commit_author_and_empty_strings(fixture_json):
    payload = fixture_json("github/push_with-new-branch.payload.json")
    payload["commits"][0]["author"] = {"username": "", "email": "c@example.com"}
    payload["commits"][0]["message"] = None
    event = parse_github(_headers("push"), json.dumps(payload).encode())
    assert [(c.message, c.author) for c in event.commits] == [("", "c@example.com")]


def test_wrong_typed_conclusion_names_the_field(fixture_json):
    body = _variant(fixture_json, "github/check_suite_completed.payload.json", check_suite__conclusion=1)
    with pytest.raises(PayloadInvalid) as info:
        parse_github(_headers("check_suite"), body)
    assert info.value.field == "check_suite.conclusion"
