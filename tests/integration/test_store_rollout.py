"""Store rollouts for real: a release's store actions move its build on (a contract fake of) Google
Play through the real PlayStore client; a halt halts at the store; someone changing the rollout
in the console is drift, and the robot stops until a release manager decides."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conductor.domain.errors import ConductorError, IllegalTransition
from conductor.service import Actor
from tests.fakes.google_oauth import GoogleOAuthFake, new_rsa_key
from tests.fakes.play import PlayFake
from tests.fakes.server import FakeServer

PACKAGE = "com.acme.shop"
ACCOUNT = "release-robot@acme.iam.gserviceaccount.com"
RM = Actor("rita", "release_manager")
ADMIN = Actor("ada", "admin")
PREVIOUS = {"name": "1.9", "versionCodes": ["190"], "status": "completed"}

TRAIN = """\
name: storetrain
timezone: UTC
signals:
  crash_free_sessions: {type: percent}
gates:
  crash: {kind: threshold, signal: crash_free_sessions, better: higher, pass: 99.5, fail: 99.0, min_samples: 1000}
stages:
  beta: {}
  rollout_1: {kind: rollout, percent: 1}
  rollout_100: {kind: rollout, percent: 100}
  released: {kind: final}
  halted: {kind: halted}
transitions:
  - {from: beta, to: rollout_1, gates: [crash], actions: [{action: distribute, ring: beta}, {action: submit_to_store}]}
  - {from: rollout_1, to: rollout_100, min_soak: 1h, gates: [crash], on_fail: halt, actions: [{action: set_rollout}]}
  - {from: rollout_100, to: released, min_soak: 1h, gates: [crash], on_fail: halt}
"""


@pytest.fixture(scope="module")
def rsa_key():
    return new_rsa_key()


@pytest.fixture
def play(rsa_key, monkeypatch):
    with FakeServer() as server:
        oauth = GoogleOAuthFake(server)
        fake = PlayFake(server, oauth)
        monkeypatch.setenv("PLAY_KEY", json.dumps(oauth.service_account(rsa_key, ACCOUNT)))
        monkeypatch.setenv("CONDUCTOR_PLAY_API_ENDPOINT", server.url)
        fake.app(PACKAGE, users=(ACCOUNT,), bundles=("190", "200"))
        fake.seed(PACKAGE, "production", [PREVIOUS])
        fake.server = server
        yield fake


@pytest.fixture
def world(database, clock, tmp_path, play):
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.service.tracks import connect_store
    from tests.conftest import inline

    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "storetrain.yaml").write_text(TRAIN)
    c = Conductor(database, DefinitionCatalog(defs), clock)
    c.ensure_track("shop", "storetrain")
    shown = connect_store(
        c, "shop", ADMIN, {"kind": "play", "package": PACKAGE, "credentials": {"env": "PLAY_KEY"}, "rings": {"beta": "beta"}}
    )
    assert shown == f"Google Play {PACKAGE} (service account from env PLAY_KEY)"
    return inline(c)


def crash(app, rid, value, samples=50_000):
    from conductor.service.jobs import relay_outbox

    app.conductor.record_signal(rid, "crash_free_sessions", value, samples=samples, source="sentry")
    relay_outbox(app.runtime)


def production(play):
    return play.track(PACKAGE, "production")


def outbox(app, rid):
    return {(o.action, o.status): o for o in app.conductor.snapshot(rid).outbox}


def test_the_build_goes_to_beta_then_1_then_100_percent_at_the_store(world, play, clock):
    from conductor.service.jobs import relay_outbox, tick

    c = world.conductor
    rid = c.start_release("shop", "2.0", RM)
    c.set_build(rid, "200", RM)
    crash(world, rid, 99.8)
    assert c.snapshot(rid).release.stage == "rollout_1"
    assert play.track(PACKAGE, "beta") == [{"name": "2.0", "versionCodes": ["200"], "status": "completed"}]
    assert production(play) == [{"name": "2.0", "versionCodes": ["200"], "status": "inProgress", "userFraction": 0.01}, PREVIOUS]
    clock.advance(timedelta(hours=1))
    tick(world.runtime)
    relay_outbox(world.runtime)
    assert c.snapshot(rid).release.stage == "rollout_100"
    assert production(play) == [{"name": "2.0", "versionCodes": ["200"], "status": "completed"}]
    done = outbox(world, rid)
    assert done[("set_rollout", "done")].result["detail"] == "play: completed build 200"
    assert play.server.violations == []


def test_an_unknown_build_is_found_at_the_store_or_asked_for_never_guessed(world, play):
    c = world.conductor
    rid = c.start_release("shop", "2.0", RM)
    crash(world, rid, 99.8)  # nobody said the build, and no testing track has a release named 2.0
    failed = outbox(world, rid)[("distribute", "failed")]
    assert "the store build of 2.0 is unknown" in failed.last_error and "conductor build" in failed.last_error
    assert production(play) == [PREVIOUS]
    play.seed(PACKAGE, "internal", [{"name": "2.1", "versionCodes": ["200"], "status": "completed"}])
    rid2 = c.start_release("shop", "2.1", RM)
    crash(world, rid2, 99.8)
    assert c.snapshot(rid2).release.build == "200"  # found on the internal track, by its name
    assert production(play)[0] == {"name": "2.1", "versionCodes": ["200"], "status": "inProgress", "userFraction": 0.01}


def test_a_halt_halts_at_the_store_and_a_resume_resumes_there(world, play):
    c = world.conductor
    rid = c.start_release("shop", "2.0", RM)
    c.set_build(rid, "200", RM)
    crash(world, rid, 99.8)
    crash(world, rid, 98.0)
    snap = c.snapshot(rid)
    assert (snap.release.stage, snap.release.halted_from) == ("halted", "rollout_1")
    assert production(play)[0] == {"name": "2.0", "versionCodes": ["200"], "status": "halted", "userFraction": 0.01}
    assert outbox(world, rid)[("halt_rollout", "done")].result["store"]["status"] == "halted"
    c.resume(rid, RM, "the crash was a bad server config, fixed")
    from conductor.service.jobs import relay_outbox

    relay_outbox(world.runtime)
    assert production(play)[0] == {"name": "2.0", "versionCodes": ["200"], "status": "inProgress", "userFraction": 0.01}


def test_a_change_in_the_console_is_drift_and_the_robot_waits_for_a_release_manager(world, play, clock):
    from conductor.service.jobs import relay_outbox, sync_stores, tick
    from conductor.service.store_state import accept_drift, reapply

    c = world.conductor
    rid = c.start_release("shop", "2.0", RM)
    c.set_build(rid, "200", RM)
    crash(world, rid, 99.8)
    assert sync_stores(world.runtime) == 0  # the store says what Conductor set
    # Someone raises the rollout to 50 % in the Play Console.
    play.seed(PACKAGE, "production", [{"name": "2.0", "versionCodes": ["200"], "status": "inProgress", "userFraction": 0.5}, PREVIOUS])
    assert sync_stores(world.runtime) == 1
    snap = c.snapshot(rid)
    assert snap.release.paused and snap.release.pause_reason == "store drift: the store rolls out to 50%, Conductor set 1%"
    assert [a.kind for a in snap.audit].count("store_drift") == 1
    assert sync_stores(world.runtime) == 0  # marked once
    clock.advance(timedelta(hours=2))
    tick(world.runtime)
    assert c.snapshot(rid).release.stage == "rollout_1"  # the robot does not act while in drift
    action = reapply(c, rid, RM, "50 % was a slip of the mouse")
    relay_outbox(world.runtime)
    assert action == "set_rollout" and production(play)[0]["userFraction"] == 0.01
    assert not c.snapshot(rid).release.paused
    play.seed(PACKAGE, "production", [{"name": "2.0", "versionCodes": ["200"], "status": "inProgress", "userFraction": 0.05}, PREVIOUS])
    assert sync_stores(world.runtime) == 1
    accept_drift(c, rid, RM, "5 % agreed with the team")
    assert sync_stores(world.runtime) == 0  # 5 % is what Conductor wants now
    with pytest.raises(IllegalTransition, match="not in store drift"):
        accept_drift(c, rid, RM, "again")


def test_a_store_connection_is_checked_before_it_is_kept(database, clock, tmp_path):
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.service.tracks import connect_store

    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "storetrain.yaml").write_text(
        TRAIN.replace("rollout_1: {kind: rollout, percent: 1}", "rollout_1: {kind: rollout, percent: 25}")
    )
    c = Conductor(database, DefinitionCatalog(defs), clock)
    c.ensure_track("shop", "storetrain")
    with pytest.raises(ConductorError, match=r"settings\.store\.package: String should match"):
        connect_store(c, "shop", ADMIN, {"kind": "play", "package": "not a package", "credentials": {"env": "X"}})
    with pytest.raises(ConductorError, match=r"exactly one of env .* or file"):
        connect_store(c, "shop", ADMIN, {"kind": "play", "package": PACKAGE, "credentials": {}})
    apple = {"kind": "appstore", "app_id": "1", "key_id": "ABC123", "issuer_id": "12345678-aaaa", "private_key": {"env": "K"}}
    with pytest.raises(ConductorError, match=r"sets rollout_1 25%: the App Store's phased release is fixed at 1, 2, 5, 10, 20, 50, 100%"):
        connect_store(c, "shop", ADMIN, apple)
    assert c.snapshot(c.start_release("shop", "1.0", RM)).release.stage == "beta"  # nothing was kept
    from conductor.read.tracks import get_track

    assert "store" not in get_track(c, "shop").settings


def test_a_rollout_delayed_by_a_store_outage_never_undoes_the_halt_that_followed_it(world, play, clock):
    """Found by bench/gameday.py: a set_rollout refused during a Play outage (503, Retry-After) was
    retried after the halt that followed it and rolled the halted build out again."""
    from conductor.service.jobs import relay_outbox, sync_stores, tick

    c = world.conductor
    rid = c.start_release("shop", "2.0", RM)
    c.set_build(rid, "200", RM)
    crash(world, rid, 99.8)
    assert production(play)[0]["userFraction"] == 0.01
    play.server.fault("POST", r"/edits$", status=503, headers={"Retry-After": "7200"})  # Play is down for the next call
    clock.advance(timedelta(hours=1))
    tick(world.runtime)
    assert c.snapshot(rid).release.stage == "rollout_100"
    assert outbox(world, rid)[("set_rollout", "pending")].attempts == 1  # refused: back in two hours
    crash(world, rid, 98.0)  # the drop: halted, and the halt reaches Play
    assert production(play)[0] == {"name": "2.0", "versionCodes": ["200"], "status": "halted", "userFraction": 0.01}
    clock.advance(timedelta(hours=3))
    relay_outbox(world.runtime)  # the delayed rollout is due now
    assert production(play)[0] == {"name": "2.0", "versionCodes": ["200"], "status": "halted", "userFraction": 0.01}
    skipped = outbox(world, rid)[("set_rollout", "skipped")]
    assert skipped.last_error.startswith("superseded by halt_rollout")
    assert sync_stores(world.runtime) == 0  # what Conductor last set is what Play says: halted
    assert c.snapshot(rid).release.stage == "halted"
    assert play.server.violations == []


def test_one_apps_store_actions_go_in_order_so_a_late_rollout_never_replaces_the_next_release(world, play, clock):
    """2.0's rise to 100 % is held up by a Play outage while 2.1 reaches its 1 %: 2.1's submit waits
    until 2.0's rollout has landed, then goes out beside it (done the other way round, 2.0's
    completed release would have taken 2.1 off the production track)."""
    from conductor.service.jobs import relay_outbox, tick

    c = world.conductor
    play.apps[PACKAGE].bundles.add("210")
    first = c.start_release("shop", "2.0", RM)
    c.set_build(first, "200", RM)
    crash(world, first, 99.8)
    play.server.fault("POST", r"/edits$", status=503, headers={"Retry-After": "7200"})
    clock.advance(timedelta(hours=1))
    tick(world.runtime)
    assert outbox(world, first)[("set_rollout", "pending")].attempts == 1  # refused: back in two hours
    second = c.start_release("shop", "2.1", RM)
    c.set_build(second, "210", RM)
    crash(world, second, 99.8)
    assert c.snapshot(second).release.stage == "rollout_1"
    waiting = outbox(world, second)[("submit_to_store", "pending")]
    assert waiting.attempts == 0 and waiting.last_error.startswith("waits for set_rollout of shop/2.0")
    assert production(play)[0] == {"name": "2.0", "versionCodes": ["200"], "status": "inProgress", "userFraction": 0.01}
    clock.advance(timedelta(hours=3))
    relay_outbox(world.runtime)  # 2.0's rollout lands; 2.1's submit looks again a little later
    clock.advance(timedelta(minutes=1))
    relay_outbox(world.runtime)
    assert production(play) == [
        {"name": "2.1", "versionCodes": ["210"], "status": "inProgress", "userFraction": 0.01},
        {"name": "2.0", "versionCodes": ["200"], "status": "completed"},
    ]
    assert outbox(world, second)[("submit_to_store", "done")].attempts == 1
    assert play.server.violations == []
