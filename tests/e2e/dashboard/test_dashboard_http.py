"""The dashboard over HTTP without a browser: sessions, CSRF, roles, actions, live-update marks,
vendored assets and security headers. Runs on SQLite and PostgreSQL (the `database` fixture)."""

from __future__ import annotations

import json
import re
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conductor.api.dashboard.render import STATIC, TEMPLATES
from conductor.service import Actor
from conductor.service.tokens import create_token, revoke_token
from tests.conftest import inline
from tests.e2e.dashboard.conftest import drive_to_approval, make_app

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Visitor:
    """A TestClient that signs in through the login form like a browser would."""

    def __init__(self, conductor, https: bool = False):
        self.client = TestClient(make_app(conductor), base_url="https://testserver" if https else "http://testserver")
        self.csrf = ""

    def login(self, token: str, next_path: str = "/"):
        form = self.client.get("/login")
        login_csrf = CSRF.search(form.text).group(1)
        r = self.client.post("/login", data={"token": token, "csrf_token": login_csrf, "next": next_path}, follow_redirects=False)
        page = self.client.get("/")
        if page.status_code == 200:
            self.csrf = CSRF.search(page.text).group(1)
        return r

    def post(self, path: str, **data):
        return self.client.post(path, data=data, follow_redirects=False)


@pytest.fixture
def role_tokens(quick):
    return {"rm": create_token(quick, "rita", "release_manager"), "viewer": create_token(quick, "vic", "viewer")}


@pytest.fixture
def rm(quick, role_tokens):
    v = Visitor(quick)
    assert v.login(role_tokens["rm"]).status_code == 303
    return v


def test_pages_need_a_session(quick):
    v = Visitor(quick)
    for path in ("/", "/insights", "/release/1"):
        r = v.client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    r = v.client.get("/dashboard/pulse?scope=board", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login"
    assert v.post("/release/1/decision", decision="approve", reason="x").status_code == 401


def test_a_link_from_another_site_is_reloaded_from_ours_to_send_the_strict_cookie(quick):
    v = Visitor(quick)
    r = v.client.get("/release/7?x=1", headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert r.status_code == 200 and 'http-equiv="refresh" content="0;url=/release/7?x=1"' in r.text
    r = v.client.get("/release/7", headers={"Sec-Fetch-Site": "same-origin"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_login_cookie_is_httponly_strict_and_secure_over_tls(quick, role_tokens):
    for https in (False, True):
        r = Visitor(quick, https=https).login(role_tokens["rm"])
        assert r.status_code == 303 and r.headers["location"] == "/"
        raw = next(h for h in r.headers.get_list("set-cookie") if h.startswith("conductor_session="))
        cookie = SimpleCookie(raw)["conductor_session"]
        assert cookie["httponly"] and cookie["samesite"].lower() == "strict"
        assert bool(cookie["secure"]) is https
        assert role_tokens["rm"] not in raw  # the API token never travels back in the cookie


def test_login_refuses_unknown_tokens_forged_forms_and_foreign_redirects(quick, role_tokens):
    v = Visitor(quick)
    r = v.login("cdt_not-a-token")
    assert r.status_code == 401 and "unknown or revoked" in r.text
    assert "conductor_session" not in v.client.cookies
    r = v.client.post("/login", data={"token": role_tokens["rm"], "csrf_token": "guessed"}, follow_redirects=False)
    assert r.status_code == 403 and "conductor_session" not in v.client.cookies
    r = Visitor(quick).login(role_tokens["rm"], next_path="//evil.example/steal")
    assert r.headers["location"] == "/"


def test_a_sign_in_is_audited_and_a_refused_one_writes_nothing(quick, role_tokens):
    from sqlalchemy import select

    from conductor.store.models import AuditEntry

    def sign_ins():
        with quick.db.read() as s:
            return s.scalars(select(AuditEntry).where(AuditEntry.kind == "signed_in").order_by(AuditEntry.id)).all()

    Visitor(quick).login("cdt_not-a-token")
    assert sign_ins() == []
    assert Visitor(quick).login(role_tokens["viewer"]).status_code == 303
    (row,) = sign_ins()
    assert (row.actor, row.release_id, row.track_id, row.reason) == ("vic", None, None, "dashboard sign-in as viewer")
    assert row.data == {"token": "vic", "token_id": row.data["token_id"], "role": "viewer", "via": "dashboard", "client": "testclient"}
    assert role_tokens["viewer"] not in str(row.data)


def test_revoking_the_token_ends_its_sessions(quick, role_tokens, rm):
    assert rm.client.get("/").status_code == 200
    revoke_token(quick, "rita")
    r = rm.client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_approve_through_the_form_uses_the_service(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    pending = quick.snapshot(rid).pending
    r = rm.post(
        f"/release/{rid}/decision",
        csrf_token=rm.csrf,
        decision="approve",
        reason="grey, but a known device",
        evaluation_id=str(pending.id),
        fingerprint=pending.fingerprint,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/release/{rid}?done=approved"
    snap = quick.snapshot(rid)
    assert snap.release.stage == "rollout"
    approved = next(a for a in snap.audit if a.kind == "approved")
    assert (approved.actor, approved.reason) == ("rita", "grey, but a known device")
    page = rm.client.get(r.headers["location"])
    assert "Approved." in page.text and "grey, but a known device" in page.text


def test_htmx_action_answers_with_the_page_and_errors_in_place(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    pending = quick.snapshot(rid).pending
    quick.record_signal(rid, "crash_free_sessions", 99.3, samples=800, source="crashlytics")  # fresher evidence, the same question
    assert quick.snapshot(rid).pending.fingerprint == pending.fingerprint
    # A new question: the crash reporter now fails (another reason than the grey value asked about).
    quick.record_signal(rid, "crash_free_sessions", None, error="crashlytics timed out", source="crashlytics")
    hx = {"HX-Request": "true"}
    r = rm.client.post(
        f"/release/{rid}/decision",
        headers=hx,
        data={
            "csrf_token": rm.csrf,
            "decision": "approve",
            "reason": "ok",
            "evaluation_id": str(pending.id),
            "fingerprint": pending.fingerprint,
        },
    )
    assert r.status_code == 409 and 'role="alert"' in r.text and "superseded" in r.text
    assert quick.snapshot(rid).release.stage == "beta"
    r = rm.client.post(f"/release/{rid}/decision", headers=hx, data={"csrf_token": rm.csrf, "decision": "reject", "reason": "  "})
    assert r.status_code == 400 and "needs a reason" in r.text
    r = rm.client.post(
        f"/release/{rid}/decision", headers=hx, data={"csrf_token": rm.csrf, "decision": "reject", "reason": "new crash cluster"}
    )
    assert r.status_code == 200 and 'id="main"' in r.text and "Rejected." in r.text
    assert quick.snapshot(rid).pending is None


def test_csrf_is_required_on_every_form(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    for path, extra in (
        (f"/release/{rid}/decision", {"decision": "approve"}),
        (f"/release/{rid}/pause", {}),
        (f"/release/{rid}/resume", {}),
        (f"/release/{rid}/cancel", {}),
    ):
        assert rm.post(path, reason="r", **extra).status_code == 403, path
        assert rm.post(path, reason="r", csrf_token="x" * 43, **extra).status_code == 403, path
    assert rm.post("/logout").status_code == 403
    snap = quick.snapshot(rid)
    assert snap.release.stage == "beta" and snap.pending is not None and not snap.release.paused


def test_viewer_sees_no_buttons_and_cannot_act(quick, clock, role_tokens):
    rid = drive_to_approval(quick, clock, "1.0")
    v = Visitor(quick)
    v.login(role_tokens["viewer"])
    page = v.client.get(f"/release/{rid}").text
    assert "waiting for your approval" in page
    for control in ('value="approve"', 'value="reject"', "pause-button", "resume-button", "cancel-button"):
        assert control not in page
    for path, extra in (
        (f"/release/{rid}/decision", {"decision": "approve"}),
        (f"/release/{rid}/pause", {}),
        (f"/release/{rid}/cancel", {}),
    ):
        r = v.post(path, reason="forged", csrf_token=v.csrf, **extra)
        assert r.status_code == 403 and "vic is a viewer" in r.text, path
    snap = quick.snapshot(rid)
    assert snap.release.stage == "beta" and snap.pending is not None and not snap.release.paused


def test_pause_resume_cancel(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    assert rm.post(f"/release/{rid}/pause", csrf_token=rm.csrf, reason="store outage").status_code == 303
    assert quick.snapshot(rid).release.paused
    assert rm.post(f"/release/{rid}/resume", csrf_token=rm.csrf, reason="store back").status_code == 303
    assert not quick.snapshot(rid).release.paused
    assert rm.post(f"/release/{rid}/cancel", csrf_token=rm.csrf, reason="superseded by 1.1").status_code == 303
    snap = quick.snapshot(rid)
    assert snap.release.stage == "cancelled"
    assert [(a.kind, a.actor, a.reason) for a in snap.audit if a.kind in ("paused", "resumed", "cancelled")] == [
        ("paused", "rita", "store outage"),
        ("resumed", "rita", "store back"),
        ("cancelled", "rita", "superseded by 1.1"),
    ]
    page = rm.client.get(f"/release/{rid}").text
    assert "nothing to control" in page and "pause-button" not in page


def test_pulse_is_204_until_something_changes(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    page = rm.client.get(f"/release/{rid}").text
    pulse_url = re.search(r'id="pulse" hidden hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert rm.client.get(pulse_url).status_code == 204
    quick.pause(rid, Actor("olga"), "hold on")
    r = rm.client.get(pulse_url)
    assert r.status_code == 200 and 'id="pulse"' in r.text
    events = json.loads(r.headers["HX-Trigger"])
    assert {"cd-timeline", "cd-release"} <= set(events) and "cd-signals" not in events
    part = rm.client.get(f"/release/{rid}/part/timeline")
    assert part.text.lstrip().startswith('<section id="timeline"') and "hold on" in part.text
    board = rm.client.get("/").text
    board_pulse = re.search(r'id="pulse" hidden hx-get="([^"]+)"', board).group(1).replace("&amp;", "&")
    assert rm.client.get(board_pulse).status_code == 204
    quick.start_release("app", "1.1", Actor("rita"))
    assert "cd-board" in json.loads(rm.client.get(board_pulse).headers["HX-Trigger"])


def test_release_page_and_status_ping(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    snap = quick.snapshot(rid)
    page = rm.client.get(f"/release/{rid}").text
    for text in (
        snap.pending.fingerprint,
        "99.2",
        "min 100",
        "crashlytics",
        "passes ≥ 99.5, fails ≤ 99",
        "qa: signed by quinn",
        "class beta active",
        'aria-current="step"',
        "Release started",
        "Approval requested",
    ):
        assert text in page, text
    ping = rm.client.get(f"/release/{rid}/ping.txt")
    assert ping.headers["content-type"].startswith("text/plain")
    lines = ping.text.splitlines()
    assert lines[0] == "app/1.0: beta (awaiting approval), 1h in stage"
    assert lines[1] == "Gates: build pass, qa pass, crash inconclusive (99.2 is between 99 and 99.5), blockers pass"
    assert lines[2].startswith("Waiting for: approval to move to rollout")
    assert lines[-1] == f"http://testserver/release/{rid}"
    assert rm.client.get("/release/999").status_code == 404


def test_overview_and_insights_render(quick, clock, rm):
    drive_to_approval(quick, clock, "1.0")
    quick.start_release("app", "1.1", Actor("rita"))
    page = rm.client.get("/")
    assert page.status_code == 200 and "Server-Timing" in page.headers
    assert 'Pending approvals <span class="count">1</span>' in page.text
    assert page.text.count('class="card ') == 2
    insights = rm.client.get("/insights")
    assert insights.status_code == 200 and "Robot saved" in insights.text and "Time per stage" in insights.text


def test_pages_show_times_in_one_human_format_and_stage_names_as_written(quick, clock, rm):
    """A soaking release: its summary was 'soak until 2026-11-23T...+00:00' beside 'Mon 23 Nov 10:00 CET'."""
    rid = quick.start_release("app", "1.0", Actor("rita"))
    quick.record_signal(rid, "build_green", True, source="ci")
    quick.sign_off(rid, "qa", Actor("quinn"))
    quick.record_signal(rid, "open_blockers", 0, source="jira")
    quick.record_signal(rid, "crash_free_sessions", 99.9, samples=900, source="crashlytics")
    assert quick.snapshot(rid).latest.summary.startswith("soak until 2026-11-23T")
    iso_in_text = re.compile(r'(?<!datetime=")\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}')
    for path in ("/", f"/release/{rid}", f"/release/{rid}/ping.txt"):
        text = rm.client.get(path).text
        assert not iso_in_text.search(text), (path, iso_in_text.search(text))
        assert "the soak to end" in text and "at Mon 23 Nov 10:00 CET" in text, path
    page = rm.client.get(f"/release/{rid}").text
    assert "soak until Mon 23 Nov 10:00 CET" in page and "rollout 1" not in page


def test_security_headers_and_vendored_assets(quick, rm):
    page = rm.client.get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["Cache-Control"] == "no-store"
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert srcs and all(s.startswith("/") or s.startswith("#") for s in srcs), srcs
    for rel in ("vendor/htmx.min.js", "vendor/mermaid.min.js", "dashboard.js", "dashboard.css"):
        r = rm.client.get(f"/dashboard/static/{rel}?v=1")
        assert r.status_code == 200 and "immutable" in r.headers["Cache-Control"], rel
    assert rm.client.get("/dashboard/static/../routes.py").status_code == 404


def test_every_page_links_a_favicon_and_favicon_ico_is_served(quick, rm):
    for path in ("/", "/insights", "/login"):
        text = rm.client.get(path).text
        icons = re.findall(r'<link rel="icon" href="([^"]+)"', text)
        assert len(icons) == 2, path
        for href in icons:
            r = rm.client.get(href)
            assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), href
    r = rm.client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/vnd.microsoft.icon"
    assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_templates_and_scripts_load_nothing_from_the_internet():
    pattern = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
    for f in [*Path(TEMPLATES).glob("*.html"), Path(STATIC) / "dashboard.js", Path(STATIC) / "docs.js", Path(STATIC) / "dashboard.css"]:
        assert not pattern.search(f.read_text()), f
    assert "@import" not in (Path(STATIC) / "dashboard.css").read_text()


def test_api_docs_are_served_from_vendored_files_under_the_csp(quick):
    from tests.e2e.dashboard.conftest import product_app

    client = TestClient(product_app(quick))
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    assert "<script>" not in r.text and 'data-openapi-url="/openapi.json"' in r.text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert any("swagger-ui-bundle.js" in s for s in srcs) and any("swagger-ui.css" in s for s in srcs)
    for src in srcs:
        assert src.startswith("/"), src
        assert client.get(src).status_code == 200, src
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page loads its script from a CDN
    assert client.get("/openapi.json").json()["info"]["title"] == "Conductor"


def test_the_api_app_serves_the_dashboard(quick, clock, role_tokens):
    from tests.e2e.dashboard.conftest import product_app

    rid = drive_to_approval(quick, clock, "1.0")
    client = TestClient(product_app(quick))
    form = client.get("/login")
    csrf = CSRF.search(form.text).group(1)
    assert client.post("/login", data={"token": role_tokens["rm"], "csrf_token": csrf}, follow_redirects=False).status_code == 303
    page = client.get(f"/release/{rid}")
    assert page.status_code == 200 and "waiting for your approval" in page.text
    csrf = CSRF.search(page.text).group(1)
    pending = quick.snapshot(rid).pending
    r = client.post(
        f"/release/{rid}/decision",
        data={
            "csrf_token": csrf,
            "decision": "approve",
            "reason": "via the API app",
            "evaluation_id": str(pending.id),
            "fingerprint": pending.fingerprint,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and quick.snapshot(rid).release.stage == "rollout"


def test_api_processes_configured_with_one_session_secret_share_sessions(quick, role_tokens):
    """Settings.session_secret (CONDUCTOR_SESSION_SECRET) signs the cookies: a session made by one
    API process is valid in another with the same secret, and in none with another secret."""
    from conductor.api.app import create_app
    from conductor.config import Settings

    def app(secret):
        settings = Settings(database_url=quick.db.url, broker_url=None, session_secret=secret)
        return TestClient(create_app(settings, inline(quick, settings)))

    first = app("one-secret")
    csrf = CSRF.search(first.get("/login").text).group(1)
    assert first.post("/login", data={"token": role_tokens["rm"], "csrf_token": csrf}, follow_redirects=False).status_code == 303
    cookies = dict(first.cookies)
    assert cookies
    same, other = app("one-secret"), app("another-secret")
    same.cookies.update(cookies)
    other.cookies.update(cookies)
    assert same.get("/", follow_redirects=False).status_code == 200
    r = other.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_unicode_digits_and_overlong_reasons_are_refused_not_crashed(quick, clock, rm):
    """`str.isdigit()` took '²' (then int() failed: 500); dashboard reasons had no length limit."""
    rid = drive_to_approval(quick, clock, "1.0")
    assert rm.client.get("/dashboard/pulse", params={"scope": "²"}).status_code == 400
    r = rm.post(f"/release/{rid}/pause", csrf_token=rm.csrf, reason="x" * 200_000)
    assert r.status_code == 400 and "at most 2000 characters" in r.text
    assert not quick.snapshot(rid).release.paused
    before = quick.snapshot(rid)
    r = rm.post(f"/release/{rid}/decision", csrf_token=rm.csrf, decision="approve", reason="ok", evaluation_id="²",
                fingerprint=before.pending.fingerprint)  # fmt: skip
    assert r.status_code == 303  # no decision id given: the pending decision, checked by its fingerprint
    assert quick.snapshot(rid).release.stage != before.release.stage


def test_the_release_page_says_what_happens_at_the_store_and_at_the_sources(quick, clock, rm, monkeypatch):
    from conductor.service.sources import set_sources
    from conductor.service.tracks import connect_store

    rid = drive_to_approval(quick, clock, "1.0")
    page = rm.client.get(f"/release/{rid}").text
    assert "store not connected: rollout actions are not performed" in page
    assert "No pulled sources for this release" in page
    connect_store(quick, "app", Actor("ada", "admin"), {"kind": "play", "package": "com.acme.app", "credentials": {"env": "PLAY_KEY"}})
    monkeypatch.setenv("T", "x")
    prometheus = {"kind": "prometheus", "base_url": "http://127.0.0.1:9", "token": {"env": "T"}, "signals": {"crash_free_sessions": "up"}}
    set_sources(quick, "app", Actor("ada", "admin"), {"sources": [prometheus]})
    from conductor.service.sources import _schedule

    _schedule(quick)
    page = rm.client.get(f"/release/{rid}").text
    assert "Google Play com.acme.app (service account from env PLAY_KEY): not rolled out yet" in page
    assert "prometheus" in page and "not yet" in page and "never" in page


def test_a_release_manager_stops_the_line_from_the_overview_and_lifts_it(quick, clock, rm):
    rid = drive_to_approval(quick, clock, "1.0")
    assert "Stop the line" in rm.client.get("/").text
    assert rm.post("/track/app/freeze", csrf_token=rm.csrf, reason="payments incident").status_code == 303
    page = rm.client.get("/").text
    assert "Frozen: payments incident" in page and "Lift the freeze" in page
    assert rm.post("/track/app/freeze", csrf_token="forged", reason="x").status_code == 403
    assert rm.post("/track/app/unfreeze", csrf_token=rm.csrf, reason="resolved").status_code == 303
    assert "Frozen:" not in rm.client.get("/").text
    kinds = [a.kind for a in quick.snapshot(rid).audit]
    assert "approval_requested" in kinds


def test_a_question_unanswered_by_its_deadline_is_offered_for_a_late_answer(quick, clock, rm):
    from datetime import timedelta

    rid = drive_to_approval(quick, clock, "1.0")
    clock.advance(timedelta(hours=5))
    quick.record_signal(rid, "crash_free_sessions", 99.2, samples=500, source="crashlytics")  # the same grey value
    clock.advance(timedelta(hours=5))
    quick.record_signal(rid, "crash_free_sessions", 99.2, samples=500, source="crashlytics")
    clock.advance(timedelta(hours=3))
    quick.tick()
    snap = quick.snapshot(rid)
    assert snap.pending is None and snap.late is not None, [a.kind for a in snap.audit]
    page = rm.client.get(f"/release/{rid}")
    assert "unanswered by its deadline, you can still answer it" in page.text and 'id="approve-button"' in page.text
    overview = rm.client.get("/")
    assert "a late answer" in overview.text  # the release's card
    assert 'Pending approvals <span class="count">1</span>' in overview.text and ", unanswered by its deadline</span>" in overview.text
    r = rm.post(
        f"/release/{rid}/decision",
        csrf_token=rm.csrf,
        decision="approve",
        reason="seen this morning: a known device",
        evaluation_id=str(snap.late.id),
        fingerprint=snap.late.fingerprint,
    )
    assert r.status_code == 303 and quick.snapshot(rid).release.stage == "rollout"
