"""The robot's other hands, end to end against contract fakes: the branch cut on branch day creates
one ref on GitHub; a branch already at another commit is a failure a person sees; a ring's CI
workflow is dispatched and its finished run recognised; a halt turns the kill-switch flags off in
Unleash, and only a resume that says so turns them back on."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conductor.service import Actor
from tests.conftest import FIXTURES
from tests.fakes.github import GitHubFake, sha_of
from tests.fakes.server import FakeServer
from tests.fakes.unleash import UnleashFake
from tests.integration.test_service import BRANCH_DAY, beta_ready, feed_ring, to_beta

RM = Actor("rita", "release_manager")
ADMIN = Actor("ada", "admin")
GH_TOKEN = "ghp_faketoken0001"
UNLEASH_TOKEN = "*:*.unleash-admin-fake-0001"


@pytest.fixture
def fakes(monkeypatch):
    with FakeServer() as server:
        gh = GitHubFake(server)
        gh.add_workflow("nightly.yml", "Nightly to employees", inputs={"conductor_key": False, "ring": True, "version": True, "ref": True},
                        run_name_input="conductor_key")  # fmt: skip
        unleash = UnleashFake(server)
        unleash.add_feature("new_player", production=True)
        unleash.add_feature("lyrics_v2", production=True)
        monkeypatch.setenv("GH_TOKEN", GH_TOKEN)
        monkeypatch.setenv("UNLEASH_TOKEN", UNLEASH_TOKEN)
        yield server, gh, unleash


@pytest.fixture
def app(conductor, fakes):
    from conductor.service.tracks import connect
    from tests.conftest import inline

    server, _, _ = fakes
    vcs = {"kind": "github", "owner": "acme", "repo": "app", "base_url": server.url, "token": {"env": "GH_TOKEN"},
           "workflows": {"employees": "nightly.yml"}}  # fmt: skip
    flags = {"kind": "unleash", "base_url": server.url, "token": {"env": "UNLEASH_TOKEN"}, "environment": "production",
             "kill_switch": ["new_player", "lyrics_v2"]}  # fmt: skip
    assert connect(conductor, "music-android", ADMIN, "vcs", vcs) == "GitHub acme/app (token from env GH_TOKEN)"
    assert connect(conductor, "music-android", ADMIN, "flags", flags).startswith("Unleash project default")
    return inline(conductor)


def relay(app):
    from conductor.service.jobs import relay_outbox, tick

    tick(app.runtime)
    relay_outbox(app.runtime)


def test_branch_day_cuts_exactly_one_branch_on_github(app, fakes, clock):
    server, gh, _ = fakes
    rid = app.conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY
    relay(app)
    relay(app)  # a second pass (a redelivered task) changes nothing
    assert app.conductor.snapshot(rid).release.stage == "branch"
    assert gh.created_refs == ["heads/release/9.0.0"] and gh.refs["heads/release/9.0.0"] == sha_of("main")
    (cut,) = [o for o in app.conductor.snapshot(rid).outbox if o.action == "cut_branch"]
    assert cut.status == "done" and cut.result["status"] == "created"
    assert server.violations == []


def test_a_branch_already_at_another_commit_fails_for_a_person_to_see(app, fakes, clock):
    _, gh, _ = fakes
    other = gh.add_commit("someone's experiment")
    gh.refs["heads/release/9.0.0"] = other
    rid = app.conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY
    relay(app)
    snap = app.conductor.snapshot(rid)
    (cut,) = [o for o in snap.outbox if o.action == "cut_branch"]
    assert cut.status == "failed" and other in cut.last_error and sha_of("main") in cut.last_error
    assert any(a.kind == "action_failed" for a in snap.audit)
    assert [o.params.get("event") for o in snap.outbox if o.action == "notify"] == ["action_failed"]


def test_a_rings_workflow_is_dispatched_and_its_finished_run_recognised(app, fakes, clock):
    from conductor.service.inbox import process_events, store_event
    from conductor.sources.github import parse_github

    server, gh, _ = fakes
    c = app.conductor
    rid = c.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY
    relay(app)
    head = gh.refs["heads/release/9.0.0"]
    c.record_signal(rid, "build_green", True, sha=head)
    c.record_signal(rid, "tests_pass_rate", 1.0, samples=500, sha=head)
    relay(app)
    assert c.snapshot(rid).release.stage == "nightly"
    (dispatch,) = gh.dispatches
    assert dispatch["ref"] == "release/9.0.0" and dispatch["inputs"]["ring"] == "employees" and dispatch["inputs"]["version"] == "9.0.0"
    run = gh.runs[-1]
    body = gh.workflow_run_payload(json.loads((FIXTURES / "github" / "workflow_run_completed.payload.json").read_text()), run)
    body["repository"]["full_name"] = "acme/music-android"
    event = parse_github({"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": "d-run-1"}, json.dumps(body).encode())
    event_id = store_event(c, event).event_id
    process_events(c, [event_id], wait=True)
    from conductor.read.tracks import get_event

    stored = get_event(c, event_id)
    assert stored.status == "processed" and "the run Conductor dispatched for ring employees (nightly.yml) finished: success" in stored.note
    assert server.violations == []


def test_a_halt_turns_the_kill_switch_off_and_only_an_explicit_resume_turns_it_on(app, fakes, clock):
    _, _, unleash = fakes
    c = app.conductor
    rid = c.start_release("music-android", "9.0.0", RM)
    to_beta(c, clock, rid)
    beta_ready(c, clock, rid, crash=99.8)
    relay(app)
    assert c.snapshot(rid).release.stage == "rollout_1"
    clock.advance(timedelta(hours=3))
    feed_ring(c, rid, crash=97.0)
    relay(app)
    assert c.snapshot(rid).release.stage == "halted"
    assert [unleash.features[f]["environments"]["production"]["enabled"] for f in ("new_player", "lyrics_v2")] == [False, False]
    c.resume(rid, RM, "server-side fix deployed")
    relay(app)
    assert unleash.features["new_player"]["environments"]["production"]["enabled"] is False  # not without being asked
    feed_ring(c, rid, crash=95.0, samples=70_000)
    relay(app)
    assert c.snapshot(rid).release.stage == "halted"
    c.resume(rid, RM, "fixed for real", restore_flags=True)
    relay(app)
    assert [unleash.features[f]["environments"]["production"]["enabled"] for f in ("new_player", "lyrics_v2")] == [True, True]
    kills = [o for o in c.snapshot(rid).outbox if o.action == "kill_switch"]
    assert [o.params["enabled"] for o in kills] == [False, False, True] and all(o.status == "done" for o in kills)
