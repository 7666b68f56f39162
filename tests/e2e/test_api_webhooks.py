"""Webhook receivers over HTTP: every shared fixture accepted and mapped, every forgery refused with
nothing stored, duplicates collapsed (also ten at once against a real server), limits and outages.

Tests whose outcome is decided before anything reaches the database (signatures, limits, parsing)
run on SQLite only; storing, matching and concurrency run on both backends."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from threading import Barrier

import httpx
import pytest
import structlog
from sqlalchemy.exc import OperationalError

from tests.e2e.conftest import (
    GITHUB_SECRET,
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    bearer,
    cloudevent_request,
    cut_branch,
    event_outcome,
    generic_body,
    github_headers,
    gitlab_headers,
    inbox_rows,
    live_server,
    standard_headers,
)

GITHUB_FIXTURES = {
    "check_suite_completed.payload.json": ("check_suite", "build_finished", "unmatched"),
    "ping_payload.json": ("ping", "ping", "ignored"),
    "push_with-new-branch.payload.json": ("push", "branch_push", "unmatched"),
    "workflow_job_completed.failure.with-organization.payload.json": ("workflow_job", "build_finished", "unmatched"),
    "workflow_run_completed.payload.json": ("workflow_run", "build_finished", "unmatched"),
}
CDEVENT_FIXTURES = {
    "pipelinerun_finished.json": "pipeline_finished",
    "build_finished.json": "build_finished",
    "testsuiterun_finished.json": "tests_finished",
    "artifact_published.json": "artifact_published",
    "branch_created.json": "branch_created",
}


@pytest.mark.parametrize("name", sorted(GITHUB_FIXTURES))
def test_github_fixture_is_accepted_and_mapped(client, database, tokens, fixtures_root, name):
    event, kind, status = GITHUB_FIXTURES[name]
    body = (fixtures_root / "github" / name).read_bytes()
    r = client.post("/webhooks/github", content=body, headers=github_headers(body, event, f"gh-{name}"))
    assert r.status_code == 202, r.text
    out = r.json()
    answer = "ignored" if kind == "ping" else "accepted"  # matching is the worker's: the 202 cannot know it
    assert (out["kind"], out["status"], out["duplicate"], out["delivery_id"]) == (kind, answer, False, f"gh-{name}")
    outcome = event_outcome(client, out, tokens["viewer"])
    assert (outcome["status"], outcome["release_id"]) == (status, None)
    assert outcome["note"]  # why it matches no release (the fixtures' repositories have no track) or is ignored
    [row] = inbox_rows(database)
    assert (row.id, row.source, row.kind, row.delivery_id) == (out["event_id"], "github", kind, f"gh-{name}")
    assert row.status == status


def test_gitlab_fixture_is_accepted_and_mapped(client, database, tokens, fixtures_root):
    body = (fixtures_root / "gitlab" / "pipeline_hook__pipeline_succeeded.json").read_bytes()
    r = client.post("/webhooks/gitlab", content=body, headers=gitlab_headers("Pipeline Hook", "gl-1"))
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "pipeline_finished"
    assert "TomaszKolek/my-awesome-project" in event_outcome(client, r.json(), tokens["viewer"])["note"]
    [row] = inbox_rows(database)
    assert (row.source, row.kind, row.delivery_id, row.status) == ("gitlab", "pipeline_finished", "gl-1", "unmatched")


def test_check_run_and_gitlab_job_hook_map_to_the_release(client, conductor, clock, database, tokens):
    rid = cut_branch(conductor, clock)
    check_run = json.dumps(
        {
            "action": "completed",
            "repository": {"full_name": "acme/music-android"},
            "check_run": {"name": "unit", "head_sha": "e" * 40, "conclusion": "success", "check_suite": {"head_branch": "release/9.0.0"}},
        }
    ).encode()
    r = client.post("/webhooks/github", content=check_run, headers=github_headers(check_run, "check_run", "cr-1"))
    assert r.status_code == 202 and (r.json()["kind"], event_outcome(client, r.json(), tokens["viewer"])["release_id"]) == (
        "build_finished",
        rid,
    )
    job = json.dumps(
        {
            "object_kind": "build",
            "ref": "release/9.0.0",
            "sha": "e" * 40,
            "build_status": "failed",
            "build_name": "lint",
            "project": {"path_with_namespace": "acme/music-android"},
        }
    ).encode()
    headers = {**gitlab_headers("Job Hook", "uuid-1"), "Idempotency-Key": "idem-1"}
    r = client.post("/webhooks/gitlab", content=job, headers=headers)
    assert r.status_code == 202 and (r.json()["kind"], r.json()["delivery_id"]) == ("build_finished", "idem-1")
    assert event_outcome(client, r.json(), tokens["viewer"])["release_id"] == rid
    # GitLab retries with a new event UUID but the same Idempotency-Key: one event
    again = client.post("/webhooks/gitlab", content=job, headers={**headers, "X-Gitlab-Event-UUID": "uuid-2"})
    assert again.json()["duplicate"] is True
    assert [(r.source, r.delivery_id, r.status) for r in inbox_rows(database)] == [
        ("github", "cr-1", "processed"),
        ("gitlab", "idem-1", "processed"),
    ]
    build = next(g for g in conductor.snapshot(rid).latest.evidence["gates"] if g["gate"] == "build_green")
    assert (build["outcome"], build["inputs"]["source"]) == ("fail", "gitlab")  # the latest build, GitLab's, failed


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_every_cdevent_fixture_is_accepted_in_both_modes(client, database, clock, fixtures_root, mode):
    ids = []
    for name, kind in CDEVENT_FIXTURES.items():
        cdevent = json.loads((fixtures_root / "cdevents" / name).read_text())
        # all five fixtures share one context.id: the webhook-id header is what tells them apart
        headers, body = cloudevent_request(cdevent, mode, f"ce-{mode}-{name}", clock.now)
        r = client.post("/webhooks/cloudevents", content=body, headers=headers)
        assert r.status_code == 202, (name, r.text)
        assert (r.json()["kind"], r.json()["duplicate"]) == (kind, False), name
        ids.append(r.json()["event_id"])
    rows = inbox_rows(database)
    assert [r.id for r in rows] == ids
    assert [r.kind for r in rows] == list(CDEVENT_FIXTURES.values())
    assert {r.source for r in rows} == {"cloudevents"}


@pytest.mark.parametrize("name", ["jest-junit.xml", "junit4-complete.xml", "python-xunit-pytest.xml", "swift-xunit.xml"])
def test_every_junit_fixture_becomes_signals(client, conductor, clock, tokens, fixtures_root, name):
    rid = cut_branch(conductor, clock)
    xml = (fixtures_root / "junit" / name).read_bytes()
    r = client.post(
        f"/releases/{rid}/test-reports?sha=abc1234",
        content=xml,
        headers={**bearer(tokens["release_manager"]), "Content-Type": "application/xml"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    # mobile_weekly declares tests_pass_rate and tests_failed; the other counts are not stored
    assert out["recorded"] == ["tests_failed", "tests_pass_rate"]
    assert set(out["ignored"]) == {"tests_total", "tests_errors", "tests_skipped"}
    assert out["summary"]["failed"] >= 1 and 0 < out["summary"]["pass_rate"] < 1
    snap = conductor.snapshot(rid)
    gate = next(g for g in snap.latest.evidence["gates"] if g["gate"] == "tests_green")
    assert gate["inputs"]["value"] == pytest.approx(out["summary"]["pass_rate"])
    assert gate["inputs"]["samples"] == out["summary"]["total"] - out["summary"]["skipped"]
    audit = [a for a in snap.audit if a.kind == "signals_recorded"]
    assert audit[-1].actor == "rita" and audit[-1].data["sha"] == "abc1234"


def test_generic_event_drives_the_release(client, conductor, clock, database, tokens):
    rid = cut_branch(conductor, clock)
    body = generic_body(
        id="run-1",
        repository="acme/music-android",
        branch="release/9.0.0",
        sha="3484a3f",
        signals=[{"name": "tests_pass_rate", "value": 1.0, "samples": 400}],
    )
    r = client.post("/webhooks/generic", content=body, headers=standard_headers(body, "gen-1", clock.now))
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["kind"]) == ("accepted", "build_finished")
    assert event_outcome(client, r.json(), tokens["viewer"])["release_id"] == rid
    [row] = inbox_rows(database)
    assert (row.status, row.release_id) == ("processed", rid)
    assert conductor.snapshot(rid).release.stage == "nightly"  # build green + tests green, processed after the 202


def test_release_branch_push_without_marker_asks_a_human(client, conductor, clock):
    rid = cut_branch(conductor, clock)
    conductor.record_signal(rid, "build_green", True, source="ci")
    push = {
        "ref": "refs/heads/release/9.0.0",
        "before": "a" * 40,
        "after": "b" * 40,
        "created": False,
        "deleted": False,
        "repository": {"full_name": "acme/music-android"},
        "commits": [{"id": "b" * 40, "message": "tweak the player", "author": {"username": "dave"}}],
    }
    body = json.dumps(push).encode()
    r = client.post("/webhooks/github", content=body, headers=github_headers(body, "push", "push-1"))
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    conductor.record_signal(rid, "tests_pass_rate", 1.0, samples=500, source="junit", sha="b" * 40)
    snap = conductor.snapshot(rid)
    assert snap.pending is not None and snap.release.stage == "branch"
    gate = next(g for g in snap.pending.evidence["gates"] if g["outcome"] == "inconclusive")
    assert "dave" in json.dumps(gate)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_unknown_event_type_is_stored_ignored_and_logged(client, database):
    body = b'{"action": "created", "repository": {"full_name": "acme/music-android"}}'
    with structlog.testing.capture_logs() as logs:
        r = client.post("/webhooks/github", content=body, headers=github_headers(body, "star", "star-1"))
    assert r.status_code == 202
    assert (r.json()["status"], r.json()["kind"]) == ("ignored", "ignored")
    assert "star" in r.json()["reason"]
    assert any(e["event"] == "event_ignored" and "star" in (e.get("reason") or "") for e in logs)
    [row] = inbox_rows(database)
    assert (row.kind, row.status) == ("ignored", "ignored")


def test_redelivery_is_stored_once(client, database):
    body = b'{"zen": "Keep it logically awesome.", "hook": {}}'
    first = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "same-id"))
    second = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "same-id"))
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["event_id"] == first.json()["event_id"]
    assert (first.json()["duplicate"], second.json()["duplicate"], second.json()["status"]) == (False, True, "duplicate")
    assert len(inbox_rows(database)) == 1
    metrics = client.get("/metrics").text
    assert 'conductor_webhook_events_received_total{source="github"} 2.0' in metrics
    assert 'conductor_webhook_events_deduplicated_total{source="github"} 1.0' in metrics


# ------------------------------------------------------------------ forgeries: 401 and nothing stored

PUSH = b'{"ref": "refs/heads/main", "after": "' + b"c" * 40 + b'", "commits": [], "repository": {"full_name": "acme/music-android"}}'


def _flip(body: bytes) -> bytes:
    b = bytearray(body)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def _reserialize(body: bytes) -> bytes:
    return json.dumps(json.loads(body), indent=2, sort_keys=True).encode()  # same JSON, other bytes


def _github_case(tamper: str):
    headers = github_headers(PUSH, "push", "forged")
    body = PUSH
    if tamper == "flipped_byte":
        body = _flip(PUSH)
    elif tamper == "reserialized":
        body = _reserialize(PUSH)
    elif tamper == "missing_header":
        del headers["X-Hub-Signature-256"]
    elif tamper == "unknown_header":  # the legacy SHA-1 header only
        headers["X-Hub-Signature"] = "sha1=" + headers.pop("X-Hub-Signature-256").removeprefix("sha256=")[:40]
    elif tamper == "wrong_secret":
        headers = github_headers(PUSH, "push", "forged", secret="not-the-secret")
    return "/webhooks/github", headers, body


def _gitlab_case(tamper: str):
    headers = gitlab_headers("Pipeline Hook", "forged")
    if tamper == "missing_header":
        del headers["X-Gitlab-Token"]
    elif tamper in ("wrong_secret", "flipped_byte"):
        headers["X-Gitlab-Token"] = headers["X-Gitlab-Token"][:-1] + "X"
    elif tamper == "unknown_header":
        headers["X-Gitlab-Secret"] = headers.pop("X-Gitlab-Token")
    return "/webhooks/gitlab", headers, b'{"object_kind": "pipeline"}'


def _standard_case(path: str, body: bytes, extra: dict[str, str]):
    def make(tamper: str, now):
        at = now - timedelta(seconds=301) if tamper == "301s_old" else now + timedelta(seconds=301) if tamper == "301s_ahead" else now
        headers = {**extra, **standard_headers(body, "forged", at)}
        sent = body
        if tamper == "flipped_byte":
            sent = _flip(body)
        elif tamper == "reserialized":
            sent = _reserialize(body)
        elif tamper == "missing_header":
            del headers["webhook-signature"]
        elif tamper == "unknown_header":  # only an unknown signature scheme
            headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
        elif tamper == "wrong_secret":
            headers = {**extra, **standard_headers(body, "forged", at, secret=OLD_WEBHOOK_SECRET)}
        return path, headers, sent

    return make


CDEVENT = json.dumps(
    {"context": {"id": "x", "source": "/ci", "type": "dev.cdevents.build.finished.0.2.0"}, "subject": {"id": "b1", "content": {}}}
).encode()
STANDARD = {
    "cloudevents": _standard_case(
        "/webhooks/cloudevents",
        CDEVENT,
        {
            "ce-specversion": "1.0",
            "ce-id": "x",
            "ce-source": "/ci",
            "ce-type": "dev.cdevents.build.finished.0.2.0",
            "Content-Type": "application/json",
        },
    ),
    "generic": _standard_case("/webhooks/generic", generic_body(repository="acme/music-android"), {"Content-Type": "application/json"}),
}
COMMON = ["flipped_byte", "missing_header", "unknown_header", "wrong_secret"]
CASES = (
    [("github", t) for t in [*COMMON, "reserialized"]]
    + [("gitlab", t) for t in COMMON]
    + [(s, t) for s in STANDARD for t in [*COMMON, "reserialized", "301s_old", "301s_ahead"]]
)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("source", "tamper"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_forged_delivery_is_401_and_nothing_is_stored(client, database, clock, source, tamper):
    if source == "github":
        path, headers, body = _github_case(tamper)
    elif source == "gitlab":
        path, headers, body = _gitlab_case(tamper)
    else:
        path, headers, body = STANDARD[source](tamper, clock.now)
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "SignatureInvalid"
    assert inbox_rows(database) == []
    assert f'conductor_webhook_events_rejected_total{{reason="signature",source="{source}"}} 1.0' in client.get("/metrics").text


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_exact_signed_bytes_pass_the_same_checks(client, clock, database):
    """The control for the forgeries above: untampered, each is accepted."""
    for source in STANDARD:
        path, headers, body = STANDARD[source]("none", clock.now)
        assert client.post(path, content=body, headers=headers).status_code == 202
    path, headers, body = _github_case("none")
    assert client.post(path, content=body, headers=headers).status_code == 202
    assert len(inbox_rows(database)) == 3


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_signature_rotation(make_api, api_settings, clock, database):
    from fastapi.testclient import TestClient

    settings = api_settings.model_copy(update={"webhook_secret": f"{WEBHOOK_SECRET} {OLD_WEBHOOK_SECRET}"})
    body = generic_body(id="rot")
    with TestClient(make_api(settings)) as client:
        # a sender still on the old secret
        assert (
            client.post(
                "/webhooks/generic", content=body, headers=standard_headers(body, "rot-1", clock.now, OLD_WEBHOOK_SECRET)
            ).status_code
            == 202
        )
    with TestClient(make_api()) as client:
        # a sender signing with both while the receiver has only the new one: any v1 signature may match
        old = standard_headers(body, "rot-2", clock.now, OLD_WEBHOOK_SECRET)
        new = standard_headers(body, "rot-2", clock.now, WEBHOOK_SECRET)
        both = {**new, "webhook-signature": f"{old['webhook-signature']} {new['webhook-signature']}"}
        assert client.post("/webhooks/generic", content=body, headers=both).status_code == 202
    assert len(inbox_rows(database)) == 2


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_per_track_secret_verifies_its_own_repository_only(client, tokens, database):
    r = client.post(
        "/tracks",
        headers=bearer(tokens["admin"]),
        json={"id": "web", "definition": "desktop", "repository": "acme/web", "secrets": {"github_secret": "web-only-secret"}},
    )
    assert r.status_code == 201, r.text
    assert r.json()["secrets"] == ["github_secret"] and "web-only-secret" not in r.text
    own = b'{"zen": "z", "hook": {}, "repository": {"full_name": "acme/web"}}'
    other = b'{"zen": "z", "hook": {}, "repository": {"full_name": "acme/music-android"}}'
    ok = client.post("/webhooks/github", content=own, headers=github_headers(own, "ping", "t-1", secret="web-only-secret"))
    assert ok.status_code == 202, ok.text
    refused = client.post("/webhooks/github", content=other, headers=github_headers(other, "ping", "t-2", secret="web-only-secret"))
    assert refused.status_code == 401
    again = own.replace(b'"z"', b'"y"')  # another body: the same one under a new id would be a replay
    assert (
        client.post("/webhooks/github", content=again, headers=github_headers(again, "ping", "t-3", secret=GITHUB_SECRET)).status_code
        == 202
    )
    assert [r.delivery_id for r in inbox_rows(database)] == ["t-1", "t-3"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_no_secret_configured_refuses_everything(make_api, api_settings, database):
    from fastapi.testclient import TestClient

    settings = api_settings.model_copy(update={"github_secret": None})
    body = b'{"zen": "z", "hook": {}}'
    with TestClient(make_api(settings)) as client:
        r = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "n-1"))
    assert r.status_code == 401 and "no github webhook secret" in r.json()["detail"]
    assert inbox_rows(database) == []


# ------------------------------------------------------------------ bad payloads, limits, outages


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_malformed_json_names_the_problem(client, database, clock):
    body = b'{"ref": "refs/heads/main",'
    r = client.post("/webhooks/github", content=body, headers=github_headers(body, "push", "bad-1"))
    assert r.status_code == 422
    assert (r.json()["error"], r.json()["field"]) == ("PayloadInvalid", "body")
    assert "malformed JSON" in r.json()["detail"]
    generic = b'{"type": "build.finished", "outcome": "green"}'
    r = client.post("/webhooks/generic", content=generic, headers=standard_headers(generic, "bad-2", clock.now))
    assert (r.status_code, r.json()["field"]) == (422, "outcome")
    assert inbox_rows(database) == []


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_oversized_webhook_is_refused_while_reading(make_api, database):
    from fastapi.testclient import TestClient

    body = b'{"zen": "' + b"z" * 5000 + b'"}'
    with TestClient(make_api(webhook_max_bytes=1000)) as client:
        r = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "big-1"))
        assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")

        def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(50):
                yield b" " * 100

        r = client.post("/webhooks/github", content=chunks(), headers=github_headers(body, "ping", "big-2"))
        assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")
        assert 'reason="too_large",source="github"} 2.0' in client.get("/metrics").text
    assert inbox_rows(database) == []


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_store_failure_is_503_never_2xx(client, database, monkeypatch):
    import conductor.api.webhooks as webhooks

    def broken(*args, **kwargs):
        raise OperationalError("INSERT INTO inbox", {}, Exception("connection refused"))

    monkeypatch.setattr(webhooks, "store_event", broken)
    body = b'{"zen": "z", "hook": {}}'
    r = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "down-1"))
    assert r.status_code == 503
    assert r.json()["error"] == "ServiceUnavailable"
    assert inbox_rows(database) == []


# ------------------------------------------------------------------ ten at once, real server


def test_same_delivery_ten_times_concurrently_stores_one_event(api_app, database):
    body = b'{"zen": "Design for failure.", "hook": {}, "repository": {"full_name": "acme/music-android"}}'
    headers = github_headers(body, "ping", "concurrent-1")
    barrier = Barrier(10)
    with live_server(api_app) as base, httpx.Client(base_url=base, timeout=30) as http:

        def send(_):
            barrier.wait()
            return http.post("/webhooks/github", content=body, headers=headers)

        with ThreadPoolExecutor(max_workers=10) as pool:
            responses = list(pool.map(send, range(10)))
    assert [r.status_code for r in responses] == [202] * 10
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    rows = inbox_rows(database)
    assert len(rows) == 1 and rows[0].delivery_id == "concurrent-1"


def test_a_tekton_style_run_matches_its_release_through_a_declared_mapping(make_api, api_settings, conductor, clock, tokens, fixtures_root):
    """A producer that names the run after the release (and the repository in its own customData)
    matches the release once the operator declares where to look (CONDUCTOR_CDEVENTS_MAP)."""
    from fastapi.testclient import TestClient

    from conductor.sources.cloudevents import CDEventMapping

    rid = cut_branch(conductor, clock, "9.0.0")
    cdevent = json.loads((fixtures_root / "cdevents" / "pipelinerun_finished.json").read_text())
    cdevent["subject"]["content"] |= {"pipelineName": "music-android-release-9.0.0", "outcome": "success"}
    cdevent["customData"] = {"git": {"repository": "acme/music-android"}}
    cdevent["context"]["timestamp"] = clock.now.isoformat()
    undeclared, declared = (
        api_settings,
        api_settings.model_copy(
            update={
                "cdevents_map": [
                    CDEventMapping(
                        path="subject.content.pipelineName", pattern=r"music-android-release-(?P<v>[0-9.]+)", value="release/{v}"
                    ),
                    CDEventMapping(field="repository", path="customData.git.repository"),
                ]
            }
        ),
    )
    outcomes = []
    for n, settings in enumerate((undeclared, declared)):
        with TestClient(make_api(settings)) as client:
            headers, body = cloudevent_request(cdevent, "structured", f"tekton-{n}", clock.now)
            r = client.post("/webhooks/cloudevents", content=body, headers=headers)
            assert r.status_code == 202, r.text
            outcomes.append(event_outcome(client, r.json(), tokens["viewer"]))
    assert outcomes[0]["release_id"] is None and "no repository" in outcomes[0]["note"]
    assert outcomes[1]["release_id"] == rid
    build = next(g for g in conductor.snapshot(rid).latest.evidence["gates"] if g["gate"] == "build_green")
    assert (build["outcome"], build["inputs"]["source"]) == ("pass", "cloudevents")
