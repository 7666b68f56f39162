"""Pulled signals end to end: a release advances on values Conductor fetched itself from (a
contract fake of) Sentry, with nothing pushed, and halts when Sentry's crash-free rate drops; an
unchanged value asks nothing again; a vendor fault is a source error, never a pass."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conductor.domain.errors import DefinitionError
from conductor.service import Actor
from tests.fakes.sentry import FakeSentry, ReleaseHealth
from tests.fakes.server import FakeServer

RM = Actor("rita", "release_manager")
ADMIN = Actor("ada", "admin")
TOKEN = "sntrys_secret_abc123"

PULLED = """\
name: pulled
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
  - {from: beta, to: rollout_1, gates: [crash]}
  - {from: rollout_1, to: rollout_100, min_soak: 1h, gates: [crash], on_fail: halt}
  - {from: rollout_100, to: released, min_soak: 1d, gates: [crash], on_fail: halt}
"""


@pytest.fixture
def sentry(monkeypatch):
    with FakeServer() as server:
        monkeypatch.setenv("SENTRY_TOKEN", TOKEN)
        fake = FakeSentry(server, token=TOKEN)
        fake.releases["com.acme.app@2.0"] = ReleaseHealth(sessions=40_000, crash_free_sessions=0.9980, users=9_000, crash_free_users=0.997)
        yield fake


@pytest.fixture
def app(database, clock, tmp_path, sentry):
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.service.sources import set_sources
    from tests.conftest import inline

    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "pulled.yaml").write_text(PULLED)
    c = Conductor(database, DefinitionCatalog(defs), clock)
    c.ensure_track("shop", "pulled")
    sources = {"release_name": "com.acme.app@{version}",
               "sources": [{"kind": "sentry", "base_url": sentry.server.url, "organization": "acme", "project": 42,
                            "token": {"env": "SENTRY_TOKEN"}, "signals": {"crash_free_sessions": "crash_free_sessions"}}]}  # fmt: skip
    set_sources(c, "shop", ADMIN, sources)
    return inline(c)


def poll(app):
    from conductor.service.jobs import poll_sources, relay_outbox, tick

    n = poll_sources(app.runtime)
    tick(app.runtime)
    relay_outbox(app.runtime)
    return n


def test_a_release_advances_on_pulled_values_alone_and_halts_when_sentry_drops(app, sentry, clock):
    c = app.conductor
    rid = c.start_release("shop", "2.0", RM)
    assert poll(app) == 1
    snap = c.snapshot(rid)
    assert snap.release.stage == "rollout_1"
    pulled = [a for a in snap.audit if a.kind == "signals_recorded"]
    assert pulled and pulled[-1].actor == "sources" and "pulled from sentry" in pulled[-1].reason
    assert poll(app) == 0  # not due again before the source's interval
    clock.advance(timedelta(minutes=6))
    evaluations = len([a for a in c.snapshot(rid).audit])
    assert poll(app) == 1  # polled; the same value is not new evidence
    assert len(c.snapshot(rid).audit) == evaluations
    clock.advance(timedelta(hours=1))
    poll(app)
    assert c.snapshot(rid).release.stage == "rollout_100"
    sentry.releases["com.acme.app@2.0"] = ReleaseHealth(sessions=90_000, crash_free_sessions=0.985, users=20_000, crash_free_users=0.98)
    clock.advance(timedelta(minutes=6))
    poll(app)
    snap = c.snapshot(rid)
    assert (snap.release.stage, snap.release.halted_from) == ("halted", "rollout_100")
    assert sentry.server.violations == []


def test_a_vendor_fault_is_a_source_error_and_the_poll_backs_off(app, sentry, clock):
    from conductor.store.statements import SOURCE_POLLS

    c = app.conductor
    rid = c.start_release("shop", "2.0", RM)
    sentry.server.fault("GET", r"/api/0/", status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    poll(app)
    snap = c.snapshot(rid)
    assert snap.release.stage == "beta"
    (light,) = snap.lights
    assert light.outcome == "inconclusive"
    with c.db.engine.connect() as conn:
        row = conn.execute(SOURCE_POLLS.select()).one()
    assert row.failures == 1 and row.errors == 1 and "HTTP 502" in row.last_error and row.last_success_at is None
    from conductor.api.metrics import ApiMetrics

    shown = ApiMetrics(c).render().decode()
    assert 'conductor_source_errors_total{kind="sentry",source="sentry",track="shop"} 1.0' in shown
    assert 'conductor_source_polls_total{kind="sentry",source="sentry",track="shop"} 1.0' in shown
    assert "conductor_source_latency_seconds{" in shown
    assert row.due_at - clock.now >= timedelta(minutes=10)  # backed off: twice the 5-minute interval
    sentry.server.fault("GET", r"/api/0/", status=429, headers={"Retry-After": "7200"})
    clock.now = row.due_at
    poll(app)
    with c.db.engine.connect() as conn:
        row = conn.execute(SOURCE_POLLS.select()).one()
    assert row.due_at - clock.now >= timedelta(hours=2)  # Sentry asked for two hours
    clock.now = row.due_at
    poll(app)
    assert c.snapshot(rid).release.stage == "rollout_1"  # recovered: the value came in


def test_sources_are_checked_against_the_pipeline_with_file_and_line(app):
    from conductor.service.sources import set_sources
    from conductor.sources.pull.config import load_sources

    text = (
        "sources:\n  - kind: sentry\n    organization: acme\n    project: 42\n    token: {env: T}\n"
        "    signals: {crash_rate: crash_free_sessions}\n"
    )
    with pytest.raises(DefinitionError) as exc:
        set_sources(app.conductor, "shop", ADMIN, load_sources(text, "sources.yaml"), "sources.yaml")
    assert "sources.0.signals.crash_rate: pulled declares no signal 'crash_rate'" in str(exc.value)
    with pytest.raises(DefinitionError) as exc:
        load_sources(text.replace("project: 42", "project: [42]"), "sources.yaml")
    assert str(exc.value.problems[0]).startswith("sources.yaml:4: sources.0.project:")


def test_sources_check_fetches_once_and_writes_nothing(app, sentry):
    from conductor.service.sources import check_sources

    c = app.conductor
    rid = c.start_release("shop", "2.0", RM)
    before = c.snapshot(rid)
    ((name, result),) = check_sources(c, app.runtime.adapters.client, "shop", "2.0")
    assert name == "sentry" and result.readings[0].value == pytest.approx(99.8) and result.readings[0].samples == 40_000
    after = c.snapshot(rid)
    assert (after.release.version_id, len(after.audit)) == (before.release.version_id, len(before.audit))


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_cli_checks_the_sources_against_the_fakes_and_sets_them_from_a_file(app, sentry, tmp_path):
    import os
    import subprocess
    import sys

    app.conductor.start_release("shop", "2.0", RM)
    env = {
        **os.environ,
        "CONDUCTOR_DATABASE_URL": app.conductor.db.url,
        "CONDUCTOR_DEFINITIONS_DIR": str(tmp_path / "defs"),
        "COLUMNS": "200",
    }

    def cli(*args, ok=True):
        p = subprocess.run([sys.executable, "-m", "conductor.cli", *args], env=env, capture_output=True, text=True, timeout=60)
        assert (p.returncode == 0) == ok, (p.stdout, p.stderr)
        return p

    checked = cli("sources", "check", "shop", "2.0").stdout
    assert "sentry" in checked and "crash_free_sessions" in checked and "99.8" in checked and "40000" in checked
    assert TOKEN not in checked  # what was asked is shown without the token
    bad = tmp_path / "sources.yaml"
    bad.write_text("sources:\n  - kind: sentry\n    organization: acme\n    project: nope\n    token: {env: SENTRY_TOKEN}\n"
                   "    signals: {crash_free_sessions: crash_free_sessions}\n")  # fmt: skip
    refused = cli("track", "sources", "shop", "--file", str(bad), ok=False)
    assert f"{bad}:4: sources.0.project" in refused.stderr and "Traceback" not in refused.stderr
    sentry.server.fault("GET", r"/api/0/", status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    failing = cli("sources", "check", "shop", ok=False)
    assert "HTTP 502" in failing.stdout
