"""Fixtures for the dashboard: a real uvicorn server on a free 127.0.0.1 port over a SQLite file,
tokens for a release manager and a viewer, releases driven to a grey-zone pause through the
service, and Debian's chromium driven by Playwright.

The browser tests skip with one line when /usr/bin/chromium is missing (CI=true fails instead).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import DEFINITIONS, MONDAY, ROOT, inline, service_unavailable

CHROMIUM = Path(os.environ.get("CONDUCTOR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
POLL_SECONDS = 0.3

# A small pipeline: one build gate, then a grey zone on the crash-free rate asks a human.
QUICK = """\
name: quick
timezone: Europe/Stockholm
signals:
  build_green: {type: boolean, description: CI build of the branch head}
  crash_free_sessions: {type: percent, description: crash-free sessions}
  open_blockers: {type: count}
gates:
  build: {kind: threshold, signal: build_green, better: higher, pass: 1, fail: 0}
  crash: {kind: threshold, signal: crash_free_sessions, better: higher, pass: 99.5, fail: 99, min_samples: 100, max_age: 6h}
  blockers: {kind: count, signal: open_blockers, max: 0}
  qa: {kind: signoff, teams: [qa]}
stages:
  branch: {description: release branch cut}
  beta: {description: public beta}
  rollout: {kind: rollout, description: store rollout}
  released: {kind: final}
  halted: {kind: halted}
  cancelled: {kind: cancelled}
transitions:
  - {from: branch, to: beta, gates: [build], actions: [{action: distribute, ring: beta}]}
  - {from: beta, to: rollout, min_soak: 1h, gates: [build, qa, crash, blockers]}
  - {from: rollout, to: released, gates: [crash, blockers], on_fail: halt}
"""


@dataclass
class Site:
    """A running dashboard: its URL, the service behind it, and tokens to sign in with."""

    base_url: str
    conductor: object
    clock: object
    tokens: dict[str, str]
    _versions: list[int] = field(default_factory=lambda: [0])

    def next_version(self) -> str:
        self._versions[0] += 1
        return f"2.{self._versions[0]}"

    def paused_release(self, track: str = "app") -> int:
        """A new release of `track` asking for approval at beta -> rollout (crash-free 99.2 is grey)."""
        from conductor.service import Actor

        c, clock = self.conductor, self.clock
        rid = c.start_release(track, self.next_version(), Actor("rita"))
        c.record_signal(rid, "build_green", True, source="github-actions", sha="a1b2c3d4e5")
        c.sign_off(rid, "qa", Actor("quinn"), reason="regression suite green")
        c.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)
        for value, samples in ((99.6, 80), (99.4, 160), (99.2, 500)):
            c.record_signal(rid, "crash_free_sessions", value, samples=samples, source="crashlytics", evaluate=False)
            clock.advance(timedelta(minutes=25))
        c.evaluate(rid)
        assert c.snapshot(rid).pending is not None, "the release should be waiting for approval"
        return rid

    def showcase(self) -> tuple[int, int]:
        """One release in each place on the board (for screenshots); returns the one awaiting approval and the halted one."""
        from conductor.service import Actor

        c, clock = self.conductor, self.clock
        rm = Actor("rita")
        released = self.paused_release()
        c.approve(released, rm, "known OEM crash cluster")
        c.record_signal(released, "crash_free_sessions", 99.9, samples=4000, source="crashlytics")
        halted = self.paused_release()
        c.approve(halted, rm, "grey but stable")
        c.record_signal(halted, "crash_free_sessions", 98.4, samples=5000, source="crashlytics")
        c.start_release("app", self.next_version(), rm)
        rid = self.paused_release()
        clock.advance(timedelta(minutes=40))
        c.record_signal(rid, "crash_free_sessions", 99.25, samples=700, source="crashlytics", evaluate=False)
        return rid, halted


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def make_app(conductor, **router_kwargs):
    """A minimal FastAPI app around the dashboard router (the API's create_app includes the same router)."""
    from fastapi import FastAPI

    from conductor.api.dashboard import build_router

    app = FastAPI()
    app.include_router(build_router(lambda: conductor, secret_key="test-secret", **router_kwargs))
    return app


def make_conductor(tmp: Path, sqlite_template: Path):
    from conductor.clock import ManualClock
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.store.db import Database

    defs = tmp / "defs"
    defs.mkdir()
    (defs / "quick.yaml").write_text(QUICK)
    shutil.copy(DEFINITIONS / "mobile_weekly.yaml", defs)
    db_path = tmp / "dashboard.db"
    shutil.copy(sqlite_template, db_path)
    clock = ManualClock(MONDAY)
    c = Conductor(Database(f"sqlite:///{db_path}"), DefinitionCatalog(defs), clock)
    c.ensure_track("app", "quick")
    return c, clock


def product_app(conductor):
    """The product's API app (conductor.api.app.create_app), which includes the dashboard router."""
    from conductor.api.app import create_app
    from conductor.config import Settings

    return create_app(Settings(database_url=conductor.db.url, broker_url=None), inline(conductor))


@pytest.fixture(scope="module")
def site(tmp_path_factory, sqlite_template):
    """A uvicorn server in a background thread serving the whole API app over a fresh SQLite file."""
    import uvicorn

    from conductor.service.tokens import create_token

    c, clock = make_conductor(tmp_path_factory.mktemp("dashboard"), sqlite_template)
    tokens = {"release_manager": create_token(c, "rita", "release_manager"), "viewer": create_token(c, "vic", "viewer")}
    sock = _free_socket()
    port = sock.getsockname()[1]
    mp = pytest.MonkeyPatch()
    mp.setenv("CONDUCTOR_DASHBOARD_POLL_SECONDS", str(POLL_SECONDS))
    mp.setenv("CONDUCTOR_SESSION_SECRET", "browser-test-secret")
    try:
        app = product_app(c)
    finally:
        mp.undo()
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.02)
    yield Site(f"http://127.0.0.1:{port}", c, clock, tokens)
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()
    c.db.dispose()


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        service_unavailable("Debian's chromium", f"{CHROMIUM} is missing; install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser, site):
    """A fresh browser context (own cookies) that refuses and records any request off 127.0.0.1."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(5000)
    offsite: list[str] = []

    def guard(route):
        if route.request.url.startswith(site.base_url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    ctx.route("**/*", guard)
    yield ctx
    ctx.close()
    assert not offsite, f"the page tried to reach the internet: {offsite}"


@pytest.fixture
def page(context):
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None)
    yield pg
    assert not errors, f"JavaScript errors on the page: {errors}"


def login(page, site: Site, role: str = "release_manager", next_path: str = "/") -> None:
    """Sign in through the login form as a user with `role`."""
    page.goto(f"{site.base_url}{next_path}")
    page.get_by_label("API token").fill(site.tokens[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(site.base_url) + re.escape(next_path) + r"(\?.*)?$"))


@pytest.fixture
def quick(database, clock, tmp_path):
    """A Conductor over the `database` fixture (SQLite and PostgreSQL) with the quick pipeline."""
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor

    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "quick.yaml").write_text(QUICK)
    c = Conductor(database, DefinitionCatalog(defs), clock)
    c.ensure_track("app", "quick")
    return c


def drive_to_approval(c, clock, version: str, track: str = "app") -> int:
    """Start a release of the quick pipeline and bring it to a grey-zone approval at beta -> rollout."""
    from conductor.service import Actor

    rid = c.start_release(track, version, Actor("rita"))
    c.record_signal(rid, "build_green", True, source="github-actions")
    c.sign_off(rid, "qa", Actor("quinn"))
    c.record_signal(rid, "open_blockers", 0, source="jira")
    clock.advance(timedelta(hours=1))
    c.record_signal(rid, "crash_free_sessions", 99.2, samples=500, source="crashlytics")
    assert c.snapshot(rid).pending is not None
    return rid
