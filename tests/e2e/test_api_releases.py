"""REST over HTTP: tracks, releases driven by CI webhooks, decisions with evidence, approvals, versions."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import (
    ask_for_approval,
    bearer,
    cut_branch,
    event_outcome,
    github_headers,
)


def junit(passed: int = 60, failed: int = 0) -> bytes:
    cases = "".join(f'<testcase classname="suite" name="ok{i}"/>' for i in range(passed))
    cases += "".join(f'<testcase classname="suite" name="bad{i}"><failure message="boom"/></testcase>' for i in range(failed))
    return f'<?xml version="1.0"?><testsuite name="app">{cases}</testsuite>'.encode()


@pytest.fixture
def rm(tokens):
    return bearer(tokens["release_manager"])


@pytest.fixture
def admin(tokens):
    return bearer(tokens["admin"])


def test_tracks_are_created_listed_and_changed_by_admins(client, admin, tokens, conductor):
    body = {
        "id": "music-ios",
        "definition": "mobile_weekly",
        "repository": "acme/music-ios",
        "four_eyes": True,
        "secrets": {"webhook_secret": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="},
    }
    r = client.post("/tracks", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "/tracks/music-ios"
    assert r.json()["secrets"] == ["webhook_secret"] and "whsec_" not in r.text
    assert client.post("/tracks", json=body, headers=admin).status_code == 409
    listed = client.get("/tracks", headers=bearer(tokens["viewer"])).json()
    assert [t["id"] for t in listed] == ["music-android", "music-ios"]
    r = client.patch("/tracks/music-ios", json={"four_eyes": False, "secrets": {"webhook_secret": None}}, headers=admin)
    assert r.status_code == 200 and r.json()["four_eyes"] is False and r.json()["secrets"] == []
    assert client.get("/tracks/music-ios", headers=bearer(tokens["viewer"])).json()["repository"] == "acme/music-ios"
    r = client.post("/tracks", json={**body, "id": "x", "definition": "nope"}, headers=admin)
    assert (r.status_code, r.json()["error"]) == (404, "NotFound")
    r = client.post("/tracks", json={**body, "id": "y", "branch_pattern": "release/{major}"}, headers=admin)
    assert (r.status_code, r.json()["field"]) == (422, "branch_pattern")
    r = client.post("/tracks", json={**body, "id": "z", "secrets": {"webhook_secret": "not-base64!"}}, headers=admin)
    assert r.status_code == 400 and "whsec_" in r.json()["detail"]
    assert client.get("/tracks/nope", headers=admin).status_code == 404
    # Track writes are audited with the token's name; secrets appear by name only.
    from sqlalchemy import select

    from conductor.store.models import AuditEntry

    with conductor.db.read() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.track_id == "music-ios").order_by(AuditEntry.id)).all()
    assert [(a.kind, a.release_id) for a in rows] == [("track_created", None), ("track_updated", None)]
    assert rows[0].data["secrets"] == ["webhook_secret"] and "whsec_" not in str(rows[0].data)
    assert rows[1].reason == "four_eyes, secrets" and rows[0].actor == rows[1].actor != ""


def test_a_track_patch_audits_old_and_new_values_and_an_empty_one_writes_nothing(client, admin, conductor):
    from sqlalchemy import select

    from conductor.store.models import AuditEntry

    def track_rows():
        with conductor.db.read() as s:
            return s.scalars(select(AuditEntry).where(AuditEntry.kind == "track_updated").order_by(AuditEntry.id)).all()

    assert client.patch("/tracks/music-android", json={}, headers=admin).status_code == 200
    assert client.patch("/tracks/music-android", json={"four_eyes": False}, headers=admin).status_code == 200  # as it was
    assert track_rows() == []
    r = client.patch(
        "/tracks/music-android", json={"branch_pattern": "rel/{version}", "secrets": {"github_secret": "gh-s3cret"}}, headers=admin
    )
    assert r.status_code == 200 and r.json()["branch_pattern"] == "rel/{version}"
    (row,) = track_rows()
    assert (row.actor, row.track_id, row.release_id) == ("ada", "music-android", None)
    assert row.data == {
        "fields": ["branch_pattern", "secrets"],
        "branch_pattern": {"from": "release/{version}", "to": "rel/{version}"},
        "secrets": {"set": ["github_secret"], "removed": []},
    }


def test_a_release_walks_to_nightly_on_ci_webhooks(client, rm, tokens, conductor, clock, database):
    r = client.post("/releases", json={"track": "music-android", "release_version": "9.0.0"}, headers=rm)
    assert r.status_code == 201, r.text
    rid, created = r.json()["id"], r.json()
    assert (created["stage"], created["status"], created["key"]) == ("trunk", "waiting", "music-android/9.0.0")
    assert r.headers["ETag"] == f'"{created["version"]}"'
    assert created["timeline"][0]["kind"] == "release_started" and created["timeline"][0]["actor"] == "rita"

    def github(event, payload, delivery):
        body = json.dumps(payload).encode()
        r = client.post("/webhooks/github", content=body, headers=github_headers(body, event, delivery))
        assert r.status_code == 202, r.text
        return r.json()

    repo = {"full_name": "acme/music-android"}
    out = github("create", {"ref": "release/9.0.0", "ref_type": "branch", "repository": repo}, "d-create")
    assert out["status"] == "accepted" and event_outcome(client, out, tokens["viewer"])["release_id"] == rid
    assert client.get(f"/releases/{rid}", headers=rm).json()["stage"] == "branch"
    sha = "3484a3fb816e0859fd6e1cea078d76385ff50625"
    github(
        "workflow_run",
        {
            "action": "completed",
            "repository": repo,
            "workflow": {"name": "ci"},
            "workflow_run": {"head_branch": "release/9.0.0", "head_sha": sha, "conclusion": "success"},
        },
        "d-run",
    )
    r = client.post(f"/releases/{rid}/test-reports?sha={sha}", content=junit(passed=120), headers={**rm, "Content-Type": "application/xml"})
    assert r.status_code == 200, r.text
    assert r.json()["release"]["stage"] == "nightly"
    detail = client.get(f"/releases/{rid}", headers=rm).json()
    assert detail["stage"] == "nightly" and detail["status"] == "waiting"
    moves = [(e["kind"], e["from_stage"], e["to_stage"], e["actor"]) for e in detail["timeline"] if e["kind"] == "transitioned"]
    assert moves == [("transitioned", "trunk", "branch", "github"), ("transitioned", "branch", "nightly", "conductor")]
    assert {g["gate"] for g in detail["gates"]} == {"build_green", "tests_green", "no_blockers"}
    assert [a["action"] for a in detail["actions"]][:2] == ["cut_branch", "distribute"]
    metrics = client.get("/metrics").text
    assert 'conductor_transitions_total{stage="nightly"} 1.0' in metrics
    assert 'conductor_gates_to_transition_seconds_count{via="robot"} 1.0' in metrics


def test_list_filters_and_pagination(client, rm, conductor, clock):
    from conductor.service import Actor

    ids = [conductor.start_release("music-android", f"9.{i}.0", Actor("rita")) for i in range(4)]
    asking = ask_for_approval(conductor, clock, "10.0.0")  # branch day: the four are cut too
    later = conductor.start_release("music-android", "11.0.0", Actor("rita"))  # waits for next week's cut
    r = client.get("/releases?limit=2", headers=rm).json()
    assert [i["id"] for i in r["items"]] == [later, asking]
    seen = [i["id"] for i in r["items"]]
    while r["next_cursor"] is not None:
        r = client.get(f"/releases?limit=2&cursor={r['next_cursor']}", headers=rm).json()
        seen += [i["id"] for i in r["items"]]
    assert seen == [later, asking, *reversed(ids)]
    r = client.get("/releases?awaiting_approval=true", headers=rm).json()
    assert [(i["id"], i["status"]) for i in r["items"]] == [(asking, "awaiting_approval")]
    assert [i["id"] for i in client.get("/releases?stage=trunk&track=music-android", headers=rm).json()["items"]] == [later]
    assert len(client.get("/releases?stage=branch&awaiting_approval=false", headers=rm).json()["items"]) == 4
    assert client.get("/releases?track=other", headers=rm).json() == {"items": [], "next_cursor": None}
    assert client.get("/releases?limit=0", headers=rm).status_code == 422


def test_pending_decision_shows_its_evidence_and_is_approved_once(client, rm, conductor, clock, database):
    rid = ask_for_approval(conductor, clock)
    detail = client.get(f"/releases/{rid}", headers=rm).json()
    pending = detail["pending_decision"]
    assert detail["status"] == "awaiting_approval" and detail["pending_decision_id"] == pending["id"]
    tests = next(g for g in pending["gates"] if g["gate"] == "tests_green")
    assert (tests["outcome"], tests["reason"], tests["inputs"]["value"], tests["inputs"]["samples"]) == (
        "inconclusive",
        "grey_zone",
        0.99,
        900,
    )
    assert client.get(f"/releases/{rid}/decisions/{pending['id']}", headers=rm).json()["fingerprint"] == pending["fingerprint"]
    url = f"/releases/{rid}/decisions/{pending['id']}/approve"
    r = client.post(url, json={}, headers=rm)
    assert (r.status_code, r.json()["field"]) == (422, "reason")
    assert client.post(url, json={"reason": "   "}, headers=rm).status_code == 422
    r = client.post(url, json={"reason": "flaky test, known", "fingerprint": "0" * 32}, headers=rm)
    assert (r.status_code, r.json()["error"]) == (409, "StaleApproval")
    r = client.post(url, json={"reason": "flaky test, known", "fingerprint": pending["fingerprint"]}, headers=rm)
    assert r.status_code == 200, r.text
    assert (r.json()["outcome"], r.json()["release"]["stage"]) == ("nightly", "nightly")
    timeline = client.get(f"/releases/{rid}", headers=rm).json()["timeline"]
    approved = next(e for e in timeline if e["kind"] == "approved")
    assert (approved["actor"], approved["reason"], approved["decision_id"]) == ("rita", "flaky test, known", pending["id"])
    r = client.post(url, json={"reason": "again"}, headers=rm)
    assert (r.status_code, r.json()["error"]) == (409, "NotPaused")
    assert client.post(f"/releases/{rid}/decisions/999999/approve", json={"reason": "x"}, headers=rm).status_code == 404


def test_reject_holds_the_release(client, rm, conductor, clock):
    rid = ask_for_approval(conductor, clock)
    d = conductor.snapshot(rid).pending.id
    r = client.post(f"/releases/{rid}/decisions/{d}/reject", json={"reason": "too many failures"}, headers=rm)
    assert r.status_code == 200, r.text
    assert (r.json()["outcome"], r.json()["release"]["pending_decision_id"]) == ("branch", None)
    assert conductor.snapshot(rid).audit[-1].kind == "rejected"


def test_a_stale_version_is_409(client, rm, conductor, clock):
    rid = cut_branch(conductor, clock)
    version = client.get(f"/releases/{rid}", headers=rm).json()["version"]
    from conductor.service import Actor

    conductor.pause(rid, Actor("olle"), "quick look")  # someone else changes the release meanwhile
    conductor.resume(rid, Actor("olle"), "done")
    r = client.post(f"/releases/{rid}/pause", json={"reason": "look", "expected_version": version}, headers=rm)
    assert (r.status_code, r.json()["error"]) == (409, "ConcurrentUpdate")
    r = client.post(f"/releases/{rid}/pause", json={"reason": "look"}, headers={**rm, "If-Match": f'"{version}"'})
    assert r.status_code == 409
    fresh = client.get(f"/releases/{rid}", headers=rm)
    assert fresh.json()["version"] > version
    r = client.post(f"/releases/{rid}/pause", json={"reason": "look"}, headers={**rm, "If-Match": fresh.headers["ETag"]})
    assert r.status_code == 200 and r.json()["outcome"] == "paused"
    assert r.headers["ETag"] == f'"{r.json()["release"]["version"]}"'
    r = client.post(f"/releases/{rid}/resume", json={"reason": "ok"}, headers={**rm, "If-Match": "yesterday"})
    assert (r.status_code, r.json()["field"]) == (422, "If-Match")
    assert client.post(f"/releases/{rid}/resume", json={"reason": "ok"}, headers={**rm, "If-Match": "*"}).status_code == 200


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/releases", {"track": "music-android", "release_version": "9.9.9", "stage": "released"}, "stage"),
        ("/releases/{rid}/signals", {"signals": [{"name": "build_green", "value": 1}], "actor": "someone-else"}, "actor"),
        (
            "/releases/{rid}/signals",
            {"signals": [{"name": "build_green", "value": 1, "recorded_at": "2020-01-01T00:00:00Z"}]},
            "signals.0.recorded_at",
        ),
        ("/releases/{rid}/pause", {"reason": "x", "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ("/releases/{rid}/signoffs", {"team": "playback", "state": "approved"}, "state"),
        ("/releases/{rid}/cancel", {"reason": "x", "version": 1}, "version"),
    ],
)
def test_a_body_cannot_set_server_owned_fields(client, rm, conductor, clock, path, body, field):
    rid = cut_branch(conductor, clock)
    before = conductor.snapshot(rid)
    r = client.post(path.format(rid=rid), json=body, headers=rm)
    assert r.status_code == 422, r.text
    assert (r.json()["error"], r.json()["field"]) == ("ValidationError", field)
    after = conductor.snapshot(rid)
    assert (after.release.version_id, len(after.audit)) == (before.release.version_id, len(before.audit))


def test_four_eyes_forbids_approving_ones_own_change(client, conductor, clock, admin, tokens):
    from conductor.service.tokens import create_token

    assert client.patch("/tracks/music-android", json={"four_eyes": True}, headers=admin).status_code == 200
    rid = cut_branch(conductor, clock)
    push = {
        "ref": "refs/heads/release/9.0.0",
        "after": "d" * 40,
        "repository": {"full_name": "acme/music-android"},
        "commits": [{"id": "d" * 40, "message": "quick fix without marker", "author": {"username": "rita"}}],
    }
    body = json.dumps(push).encode()
    assert client.post("/webhooks/github", content=body, headers=github_headers(body, "push", "p-1")).status_code == 202
    conductor.record_signal(rid, "build_green", True, sha="d" * 40)
    conductor.record_signal(rid, "tests_pass_rate", 1.0, samples=500, sha="d" * 40)
    pending = conductor.snapshot(rid).pending
    assert pending is not None
    url = f"/releases/{rid}/decisions/{pending.id}/approve"
    r = client.post(url, json={"reason": "my own fix is fine"}, headers=bearer(tokens["release_manager"]))
    assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
    assert "four-eyes" in r.json()["detail"]
    other = create_token(conductor, "rob", "release_manager")
    r = client.post(url, json={"reason": "reviewed rita's fix"}, headers=bearer(other))
    assert r.status_code == 200, r.text
    assert r.json()["release"]["stage"] == "nightly"


def test_signals_are_checked_against_the_pipeline(client, rm, conductor, clock):
    rid = cut_branch(conductor, clock)
    url = f"/releases/{rid}/signals"
    r = client.post(url, json={"signals": [{"name": "moon_phase", "value": 1}]}, headers=rm)
    assert (r.status_code, r.json()["error"]) == (422, "InvalidSignal")
    r = client.post(url, json={"signals": [{"name": "tests_pass_rate", "value": 7}]}, headers=rm)
    assert r.status_code == 422 and "outside 0..1" in r.json()["detail"]
    r = client.post(
        url,
        json={
            "signals": [{"name": "build_green", "value": True}, {"name": "tests_pass_rate", "value": 1.0, "samples": 300}],
            "source": "ci",
        },
        headers=rm,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["recorded"], r.json()["verdict"], r.json()["release"]["stage"]) == (
        ["build_green", "tests_pass_rate"],
        "wait",
        "nightly",
    )
    audit = [a for a in conductor.snapshot(rid).audit if a.kind == "signals_recorded"]
    assert audit[0].actor == "rita" and audit[0].data["values"] == {"build_green": 1.0, "tests_pass_rate": 1.0}
    counts = {"name": "tests_pass_rate", "value": 0.9, "samples": 300, "events": 301}
    r = client.post(url, json={"signals": [counts]}, headers=rm)
    assert (r.status_code, r.json()["field"]) == (422, "signals.0.events")
    r = client.post(url, json={"signals": [{**counts, "events": 270}]}, headers=rm)
    assert r.status_code == 200, r.text


def test_signoff_pause_resume_cancel(client, rm, conductor, clock):
    rid = cut_branch(conductor, clock)
    r = client.post(f"/releases/{rid}/signoffs", json={"team": "playback", "reason": "regression green"}, headers=rm)
    assert r.status_code == 200, r.text
    assert client.post(f"/releases/{rid}/signoffs", json={"team": "nobody"}, headers=rm).status_code == 422
    assert client.post(f"/releases/{rid}/pause", json={"reason": "hold on"}, headers=rm).json()["outcome"] == "paused"
    assert client.post(f"/releases/{rid}/pause", json={"reason": "hold on"}, headers=rm).json()["outcome"] == "already_paused"
    detail = client.get(f"/releases/{rid}", headers=rm).json()
    assert (detail["status"], detail["pause_reason"]) == ("paused", "hold on")
    assert client.post(f"/releases/{rid}/resume", json={"reason": "go"}, headers=rm).json()["release"]["paused"] is False
    r = client.post(f"/releases/{rid}/resume", json={"reason": "go"}, headers=rm)
    assert (r.status_code, r.json()["error"]) == (409, "NotPaused")
    assert client.post(f"/releases/{rid}/cancel", json={"reason": "scrapped"}, headers=rm).json()["outcome"] == "cancelled"
    r = client.post(f"/releases/{rid}/pause", json={"reason": "late"}, headers=rm)
    assert (r.status_code, r.json()["error"]) == (409, "IllegalTransition")
    kinds = [(e["kind"], e["actor"]) for e in client.get(f"/releases/{rid}", headers=rm).json()["timeline"]]
    assert [k for k in kinds if k[1] == "rita" and k[0] != "release_started"] == [
        ("signed_off", "rita"),
        ("paused", "rita"),
        ("resumed", "rita"),
        ("cancelled", "rita"),
    ]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<testsuite><testcase name="&lol3;"/></testsuite>"""


def test_hostile_test_reports_are_refused_before_they_cost_memory(make_api, tokens, conductor, clock):
    from fastapi.testclient import TestClient

    rid = cut_branch(conductor, clock)
    headers = {**bearer(tokens["release_manager"]), "Content-Type": "application/xml"}
    with TestClient(make_api(report_max_bytes=10_000)) as client:
        url = f"/releases/{rid}/test-reports"
        r = client.post(url, content=BILLION_LAUGHS, headers=headers)
        assert (r.status_code, r.json()["field"]) == (422, "xml.doctype")
        r = client.post(url, content=b"<testsuite><testcase", headers=headers)
        assert (r.status_code, r.json()["field"]) == (422, "xml")
        r = client.post(url, content=b"<html/>", headers=headers)
        assert (r.status_code, r.json()["field"]) == (422, "xml.root")
        r = client.post(url, content=junit(passed=500), headers=headers)  # declared Content-Length over the limit
        assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")

        def stream():  # chunked, no Content-Length: cut off while streaming
            yield b'<?xml version="1.0"?><testsuite name="s">'
            for i in range(10_000):
                yield f'<testcase classname="c" name="t{i}"/>'.encode()

        r = client.post(url, content=stream(), headers=headers)
        assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")
        assert client.post(url, content=junit(passed=100), headers=headers).status_code == 200
    assert [a.kind for a in conductor.snapshot(rid).audit].count("signals_recorded") == 1  # only the last one wrote


def test_errors_are_json_with_a_type(client, rm):
    r = client.get("/releases/424242", headers=rm)
    assert (r.status_code, r.json()["error"]) == (404, "NotFound")
    r = client.get("/nowhere")
    assert (r.status_code, r.json()["error"]) == (404, "NotFound")
    r = client.post("/releases", content=b'{"track": ', headers={**rm, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["field"]) == (422, "body")
    r = client.get("/releases?stgae=beta", headers=rm)  # a typo must not silently list everything
    assert (r.status_code, r.json()["field"]) == (422, "stgae")
    r = client.get("/releases?stage=beta&stage=alpha", headers=rm)
    assert (r.status_code, r.json()["field"]) == (422, "stage")
    r = client.get("/releases/99999999999", headers=rm)
    assert (r.status_code, r.json()["field"]) == (422, "release_id")
    r = client.post("/releases", json={"track": "music-android", "release_version": "1.0"}, headers={**rm, "X-Request-ID": "trace-me"})
    assert r.headers["X-Request-ID"] == "trace-me"
