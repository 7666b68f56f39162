"""The dashboard in a real browser (Debian's chromium via Playwright) against a real uvicorn server."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from conductor.service import Actor
from tests.e2e.dashboard.conftest import SCREENSHOTS, login

# Every visible form control must have an accessible name (a <label>, aria-label or aria-labelledby).
UNLABELLED = """() => Array.from(document.querySelectorAll('input, textarea, select'))
  .filter(el => el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)"""
UNNAMED_BUTTONS = """() => Array.from(document.querySelectorAll('button, a[href]'))
  .filter(el => !(el.textContent || '').trim() && !el.getAttribute('aria-label'))
  .map(el => el.outerHTML)"""


def mark_page(page) -> None:
    """A marker that survives only as long as the document does: a reload would drop it."""
    page.evaluate("window.__conductorMarker = 'same-document'")


def same_document(page) -> bool:
    return page.evaluate("window.__conductorMarker") == "same-document"


def test_release_manager_approves_a_paused_release_without_reload(page, site):
    rid = site.paused_release()
    key = site.conductor.snapshot(rid).release.key
    login(page, site)

    pending = page.get_by_role("region", name=re.compile("Pending approvals"))
    expect(pending.get_by_role("link", name=key)).to_be_visible()
    expect(pending).to_contain_text("beta → rollout")
    expect(pending).to_contain_text("ago")
    pending.get_by_role("link", name=key).click()
    page.wait_for_url(f"**/release/{rid}**")

    card = page.locator("#decision")
    expect(card).to_contain_text("waiting for your approval")
    row = card.locator("tr", has_text="crash_free_sessions")
    for text in ("inconclusive", "99.2", "passes ≥ 99.5, fails ≤ 99", "500", "min 100", "crashlytics", "max 6h"):
        expect(row).to_contain_text(text)
    fingerprint = site.conductor.snapshot(rid).pending.fingerprint
    expect(card.locator("#fingerprint")).to_have_text(fingerprint)
    page.locator("#diagram [data-drawn] svg").wait_for()
    expect(page.locator("#diagram svg g.node.active")).to_contain_text("beta")

    mark_page(page)
    card.get_by_label(re.compile("Reason for your decision")).fill("grey zone, known OEM crash cluster")
    card.get_by_role("button", name=re.compile("^Approve")).click()

    expect(page.locator("#current-stage")).to_have_text("rollout")
    expect(page.get_by_role("status").first).to_contain_text("Approved")
    entry = page.locator("#timeline li.ev-approved").first
    expect(entry).to_contain_text("rita")
    expect(entry).to_contain_text("grey zone, known OEM crash cluster")
    expect(page.locator("#diagram svg g.node.active")).to_contain_text("rollout")
    assert same_document(page), "approving reloaded the page"
    assert site.conductor.snapshot(rid).release.stage == "rollout"


def test_changes_made_elsewhere_appear_without_reload(page, site):
    rid = site.paused_release()
    login(page, site, next_path=f"/release/{rid}")
    mark_page(page)
    site.conductor.pause(rid, Actor("olga", "release_manager"), "store review outage")
    entry = page.locator("#timeline li.ev-paused").first
    expect(entry).to_contain_text("store review outage")
    expect(entry).to_contain_text("olga")
    expect(page.locator("#header .badge")).to_have_text("paused")
    site.conductor.record_signal(rid, "crash_free_sessions", 99.7, samples=900, source="crashlytics", evaluate=False)
    expect(page.locator("#signals")).to_contain_text("99.7")
    assert same_document(page)

    page.goto(f"{site.base_url}/")
    mark_page(page)
    fresh = site.conductor.start_release("app", site.next_version(), Actor("rita"))
    expect(page.get_by_role("link", name=site.conductor.snapshot(fresh).release.key)).to_be_visible()
    assert same_document(page)


def test_viewer_sees_no_actions_and_a_forged_post_is_refused(page, site):
    rid = site.paused_release()
    login(page, site, role="viewer", next_path=f"/release/{rid}")
    expect(page.locator("#decision")).to_contain_text("waiting for your approval")
    for name in ("Approve", "Reject", "Pause", "Resume", "Cancel release"):
        expect(page.get_by_role("button", name=re.compile(f"^{name}"))).to_have_count(0)
    expect(page.locator("#decision")).to_contain_text("approving needs a release manager")

    # The viewer's own session and CSRF token, posted by hand: the server refuses the role.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    pending = site.conductor.snapshot(rid).pending
    status = page.evaluate(
        """async ([url, csrf, ev, fp]) => {
            const body = new URLSearchParams({csrf_token: csrf, decision: 'approve', reason: 'forged', evaluation_id: ev, fingerprint: fp});
            const r = await fetch(url, {method: 'POST', body});
            return r.status;
        }""",
        [f"/release/{rid}/decision", csrf, str(pending.id), pending.fingerprint],
    )
    assert status == 403
    snap = site.conductor.snapshot(rid)
    assert snap.release.stage == "beta" and snap.pending is not None
    assert not any(a.kind == "approved" for a in snap.audit)


def test_a_form_posted_without_its_csrf_token_is_refused(page, site):
    rid = site.paused_release()
    login(page, site, next_path=f"/release/{rid}")
    page.evaluate("document.querySelectorAll('#decision-form input[name=csrf_token]').forEach(e => e.remove())")
    page.get_by_label(re.compile("Reason for your decision")).fill("looks fine")
    page.get_by_role("button", name=re.compile("^Approve")).click()
    expect(page.get_by_role("alert")).to_contain_text("CSRF")
    snap = site.conductor.snapshot(rid)
    assert snap.release.stage == "beta" and snap.pending is not None


def test_keyboard_only_approval_and_labelled_controls(page, site):
    rid = site.paused_release()
    login(page, site, next_path=f"/release/{rid}")
    page.locator("#diagram [data-drawn] svg").wait_for()
    assert page.evaluate(UNLABELLED) == []
    assert page.evaluate(UNNAMED_BUTTONS) == []

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    reason_id = f"reason-{site.conductor.snapshot(rid).pending.id}"
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == reason_id:
            break
    else:
        raise AssertionError("the reason field cannot be reached with Tab")
    page.keyboard.type("approved from the keyboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "approve-button"
    page.keyboard.press("Enter")
    expect(page.locator("#current-stage")).to_have_text("rollout")
    # The confirmation takes the focus so a screen reader announces it.
    expect(page.locator(":focus")).to_contain_text("Approved")

    for path in ("/", "/insights"):
        page.goto(site.base_url + path)
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate(UNNAMED_BUTTONS) == [], path


def test_status_ping_copies_a_plain_text_summary(page, site, context):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base_url)
    rid = site.paused_release()
    key = site.conductor.snapshot(rid).release.key
    login(page, site, next_path=f"/release/{rid}")
    page.get_by_role("button", name="Copy status ping").click()
    expect(page.locator("#ping-status")).to_have_text("Copied to the clipboard.")
    text = page.evaluate("navigator.clipboard.readText()")
    assert text.startswith(f"{key}: beta (awaiting approval)")
    assert "crash inconclusive (99.2 is between 99 and 99.5)" in text
    assert "Waiting for: approval to move to rollout" in text
    assert text.rstrip().endswith(f"/release/{rid}")


FITS = "(sel) => { const e = document.querySelector(sel); return e ? e.scrollWidth <= e.clientWidth : null; }"
DIAGRAM_SCALE = """(() => { const s = document.querySelector('#diagram svg');
  return s.getBoundingClientRect().width / s.viewBox.baseVal.width; })()"""


def failed_requests(page) -> list[str]:
    """The URLs of the page's requests answered 4xx/5xx (a missing favicon was one on every page)."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    return failed


def shoot(page, name: str, width: int) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    # Nothing wider than the viewport: the tables wrap or stack, the diagram fits (scrolls only inside itself).
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"{name} is {overflow}px wide at {width}px"


def test_screenshots_of_the_overview_a_halted_and_a_paused_release(browser, site):
    """test-output/screenshots/{overview,release-halted,release-paused,insights}-{1280,390}.png, and
    what they must show: the reason for a halt, an evidence table that is not clipped, the approve
    button near the top at 390 px, a readable state diagram."""
    paused, halted = site.showcase()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        ctx = browser.new_context(viewport={"width": width, "height": 900}, device_scale_factor=1)
        page = ctx.new_page()
        failed = failed_requests(page)
        login(page, site)
        card = page.locator("article.card.st-halted").last
        expect(card.locator(".why")).to_contain_text("crash failed: 98.4 ≤ 99")
        shoot(page, "overview", width)

        page.goto(f"{site.base_url}/release/{halted}")
        page.locator("#diagram [data-drawn] svg").wait_for()
        expect(page.locator("#decision h2")).to_contain_text("Why it halted")
        expect(page.locator("#decision .why")).to_contain_text("crash failed: 98.4 ≤ 99")
        expect(page.locator("#decision tr.row-fail")).to_contain_text("passes ≥ 99.5, fails ≤ 99")
        assert page.evaluate(FITS, "#decision .table-wrap"), f"the evidence table is clipped at {width}px"
        # Diagram labels stay readable: drawn at (nearly) their own size, not shrunk to fit.
        scale = page.evaluate(DIAGRAM_SCALE)
        assert scale > 0.85, f"the state diagram is drawn at {scale:.0%} of its size at {width}px"
        expect(page.locator("#diagram svg")).not_to_contain_text("halted_from")  # no guard names
        shoot(page, "release-halted", width)

        page.goto(f"{site.base_url}/release/{paused}")
        page.locator("#diagram [data-drawn] svg").wait_for()
        approve = page.locator("#approve-button").bounding_box()
        assert approve is not None and approve["y"] + approve["height"] < 1000, f"the approve button is {approve}px down at {width}px"
        assert page.evaluate(FITS, "#decision .table-wrap"), f"the evidence table is clipped at {width}px"
        shoot(page, "release-paused", width)

        page.goto(f"{site.base_url}/insights")
        shoot(page, "insights", width)
        assert not failed, f"requests that failed: {failed}"
        ctx.close()
    for name in ("overview", "release-halted", "release-paused", "insights"):
        for width in (1280, 390):
            assert (SCREENSHOTS / f"{name}-{width}.png").stat().st_size > 10_000


def test_api_docs_render_from_vendored_swagger_ui(page, site):
    """No CDN and no inline script: Swagger UI draws the schema under the CSP (a violation is a
    console error, an offsite request is refused and recorded: both fail the test)."""
    page.goto(f"{site.base_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Conductor")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()


def test_a_question_unanswered_by_its_deadline_is_answered_late_in_the_browser(browser, site):
    """test-output/screenshots/release-late-{1280,390}.png: the card says the question went
    unanswered and still offers the approve form, which a release manager uses."""
    from datetime import timedelta

    c, clock = site.conductor, site.clock
    rid = site.paused_release()
    for _ in range(2):  # the same grey value again (fresh, not new evidence), then the deadline passes
        clock.advance(timedelta(hours=5))
        c.record_signal(rid, "crash_free_sessions", 99.2, samples=500, source="crashlytics")
    clock.advance(timedelta(hours=3))
    c.tick()
    assert c.snapshot(rid).late is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        ctx = browser.new_context(viewport={"width": width, "height": 900}, device_scale_factor=1)
        page = ctx.new_page()
        login(page, site, next_path=f"/release/{rid}")
        expect(page.locator("#decision h2")).to_contain_text("unanswered by its deadline, you can still answer it")
        expect(page.locator("#approve-button")).to_be_visible()
        shoot(page, "release-late", width)
        ctx.close()
    page = browser.new_page()
    login(page, site, next_path=f"/release/{rid}")
    page.get_by_label("Reason for your decision").fill("read the crash clusters this morning")
    page.locator("#approve-button").click()
    expect(page.locator("body")).to_contain_text("Approved.")
    assert c.snapshot(rid).release.stage == "rollout"
    page.close()
