"""Inbound events through the inbox: stored once, applied once, matched to the right release."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conductor.domain.errors import Forbidden
from conductor.service import Actor
from conductor.service.inbox import store_event
from conductor.sources.events import CommitInfo, InboundEvent, SignalIn
from conductor.store.models import AuditEntry, InboxEvent, SignalRow
from tests.conftest import apply_event
from tests.integration.test_service import BRANCH_DAY, RM, stage_of

REPO = "acme/music-android"
_n = iter(range(10**6))


def ev(kind="build_finished", branch="release/9.0.0", sha="c0ffee", signals=(), commits=(), labels=(), repo=REPO, delivery=None):
    return InboundEvent(
        source="github",
        delivery_id=delivery or f"d-{next(_n)}",
        kind=kind,
        raw_type=kind,
        repository=repo,
        branch=branch,
        sha=sha,
        signals=list(signals),
        commits=list(commits),
        labels=list(labels),
    )


def deliver(c, event):
    stored = store_event(c, event)
    return stored, apply_event(c, stored.event_id)


GREEN = [SignalIn(name="build_green", value=1.0)]
TESTS = [SignalIn(name="tests_pass_rate", value=1.0, samples=800), SignalIn(name="tests_total", value=800)]


def test_build_and_tests_events_advance_the_release(conductor, release):
    _, status = deliver(conductor, ev(signals=GREEN))
    assert status == "processed" and stage_of(conductor, release) == "branch"
    stored, status = deliver(conductor, ev(kind="tests_finished", signals=TESTS))
    assert status == "processed"
    assert stage_of(conductor, release) == "nightly"
    with conductor.db.read() as s:
        row = s.get(InboxEvent, stored.event_id)
        assert row.release_id == release and "tests_total is not a signal" in row.note
        sig = s.scalars(select(SignalRow).where(SignalRow.name == "tests_pass_rate")).one()
        assert (sig.sha, sig.source, sig.samples, sig.event_id) == ("c0ffee", "github", 800, stored.event_id)
        moved = s.scalars(select(AuditEntry).where(AuditEntry.kind == "transitioned", AuditEntry.to_stage == "nightly")).one()
        assert moved.event_id == stored.event_id


def test_an_event_with_signals_is_one_signals_recorded_row_on_the_timeline(conductor, release):
    """Webhook signals were stored without an audit row, so the timeline never showed them (REST's did)."""
    stored, _ = deliver(conductor, ev(kind="tests_finished", signals=[*GREEN, *TESTS]))
    deliver(conductor, ev(kind="branch_push", signals=[]))  # no signals: no row
    rows = [a for a in conductor.snapshot(release).audit if a.kind == "signals_recorded"]
    assert len(rows) == 1
    (row,) = rows
    assert (row.actor, row.event_id, row.reason) == ("github", stored.event_id, "signals from github: build_green, tests_pass_rate")
    assert row.data == {"values": {"build_green": 1.0, "tests_pass_rate": 1.0}, "sha": "c0ffee", "role": "ci"}
    conductor.record_signal(release, "open_blockers", 0, source="jira", evaluate=False)  # the CLI's path
    last = conductor.snapshot(release).audit[-1]
    assert (last.kind, last.actor, last.reason) == ("signals_recorded", "conductor", "signal from jira: open_blockers")
    assert last.data["values"] == {"open_blockers": 0}


def test_redelivery_is_stored_once_and_applied_once(conductor, release, database):
    e = ev(signals=GREEN, delivery="same-delivery")
    first, _ = deliver(conductor, e)
    again = store_event(conductor, e)
    assert (again.event_id, again.created, again.status) == (first.event_id, False, "processed")
    with database.read() as s:
        audit_before = s.scalar(select(func.count()).select_from(AuditEntry))
    assert apply_event(conductor, first.event_id) == "processed"
    with database.read() as s:
        assert s.scalar(select(func.count()).select_from(InboxEvent)) == 1
        assert s.scalar(select(func.count()).select_from(SignalRow)) == 1
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == audit_before


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"repo": "acme/other"}, "no track for repository acme/other"),
        ({"branch": "main"}, "matches no release branch pattern"),
        ({"branch": "release/7.0.0"}, "release 7.0.0 of music-android, which was not started"),
        ({"repo": None}, "names no repository"),
    ],
)
def test_unmatched_events_are_kept_with_the_reason(conductor, release, kwargs, words):
    stored, status = deliver(conductor, ev(signals=GREEN, **kwargs))
    assert status == "unmatched"
    with conductor.db.read() as s:
        assert words in s.get(InboxEvent, stored.event_id).note


def test_ping_and_unknown_types_are_ignored_with_a_reason(conductor, release):
    _, status = deliver(conductor, ev(kind="ping"))
    assert status == "ignored"
    stored, status = deliver(
        conductor,
        InboundEvent(source="github", delivery_id="x1", kind="ignored", raw_type="issues.opened", reason="unsupported event issues"),
    )
    with conductor.db.read() as s:
        assert s.get(InboxEvent, stored.event_id).note == "unsupported event issues"


def test_branch_created_cuts_the_branch_before_branch_day(conductor):
    rid = conductor.start_release("music-android", "9.0.0", RM)
    deliver(conductor, ev(kind="branch_created", sha="abc123"))
    snap = conductor.snapshot(rid)
    assert snap.release.stage == "branch" and snap.release.head_sha == "abc123"
    assert snap.audit[-1].actor == "github" and "release/9.0.0 created" in snap.audit[-1].reason


def test_bad_value_in_an_authentic_event_fails_visibly(conductor, release):
    stored, status = deliver(conductor, ev(signals=[SignalIn(name="build_green", value=0.5)]))
    assert status == "failed"
    with conductor.db.read() as s:
        row = s.get(InboxEvent, stored.event_id)
        assert "'build_green' is a boolean" in row.note
        assert s.scalar(select(func.count()).select_from(SignalRow)) == 0


def test_push_without_critical_fix_marker_needs_a_human(conductor, clock, release):
    conductor.ensure_track("music-android", "mobile_weekly")
    deliver(conductor, ev(signals=GREEN, sha="s1"))
    deliver(conductor, ev(kind="tests_finished", signals=TESTS, sha="s1"))
    assert stage_of(conductor, release) == "nightly"
    fix = CommitInfo(sha="s2", message="Fix crash in player\n\nRelease-Fix: critical", author="dana")
    sneaky = CommitInfo(sha="s3", message="Add new onboarding flow", author="eve")
    deliver(conductor, ev(kind="branch_push", sha="s3", commits=[fix, sneaky]))
    snap = conductor.snapshot(release)
    assert snap.release.head_sha == "s3"
    assert [c["sha"] for c in snap.release.unreviewed_commits] == ["s3"]
    assert snap.audit[-1].kind == "unreviewed_change"
    # The new head needs its own green build and tests; then the soak ends and a human is asked.
    deliver(conductor, ev(signals=GREEN, sha="s3"))
    deliver(conductor, ev(kind="tests_finished", signals=TESTS, sha="s3"))
    conductor.record_signal(release, "open_blockers", 0, source="jira")
    clock.advance(timedelta(hours=12))
    conductor.tick()
    snap = conductor.snapshot(release)
    assert snap.pending is not None and "critical_fixes_only" in snap.pending.evidence["summary"]
    assert conductor.approve(release, RM, "onboarding flag is off by default") == "alpha"
    assert conductor.snapshot(release).release.unreviewed_commits == []


def test_four_eyes_refuses_the_author(conductor, clock, database):
    from conductor.store.models import Track

    with database.transaction() as s:
        s.get(Track, "music-android").four_eyes = True
    rid = conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY
    conductor.tick()
    deliver(conductor, ev(kind="branch_push", sha="s9", commits=[CommitInfo(sha="s9", message="tweak", author="eve")]))
    deliver(conductor, ev(signals=GREEN, sha="s9"))
    deliver(conductor, ev(kind="tests_finished", signals=TESTS, sha="s9"))
    pending = conductor.snapshot(rid).pending
    assert pending is not None
    with pytest.raises(Forbidden, match="four-eyes"):
        conductor.approve(rid, Actor("eve", "release_manager"), "my own change is fine")
    assert conductor.approve(rid, Actor("rita", "release_manager"), "reviewed eve's tweak") == "nightly"


def test_labelled_push_is_a_critical_fix(conductor, release):
    deliver(
        conductor,
        ev(kind="branch_push", sha="s5", commits=[CommitInfo(sha="s5", message="hotfix", author="x")], labels=["Release-Fix: critical"]),
    )
    assert conductor.snapshot(release).release.unreviewed_commits == []
