"""Four-eyes holds by identity: nobody approves a decision behind a change they authored.

Each case was an approval that went through (200) before tokens declared the identities they
commit as and every commit pushed since the last approval counted, marked or not."""

from __future__ import annotations

import pytest

from conductor.domain.errors import ConductorError, Forbidden
from conductor.service import Actor
from conductor.service.tokens import authenticate, create_token, set_identities
from conductor.sources.events import CommitInfo
from tests.integration.test_inbox import GREEN, TESTS, deliver, ev
from tests.integration.test_service import BRANCH_DAY, RM


@pytest.fixture
def four_eyes_release(conductor, clock, database):
    """music-android/9.0.0 on its branch, four-eyes on."""
    from conductor.store.models import Track

    with database.transaction() as s:
        s.get(Track, "music-android").four_eyes = True
    rid = conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY
    conductor.tick()
    return rid


def ask_behind(conductor, rid, *commits: CommitInfo, sha: str = "s9") -> None:
    """Push `commits` to the release branch, then green CI on it: the robot asks about the unmarked one."""
    deliver(conductor, ev(kind="branch_push", sha=sha, commits=list(commits)))
    deliver(conductor, ev(signals=GREEN, sha=sha))
    deliver(conductor, ev(kind="tests_finished", signals=TESTS, sha=sha))
    assert conductor.snapshot(rid).pending is not None


def test_a_login_matches_whatever_its_case(conductor, four_eyes_release):
    ask_behind(conductor, four_eyes_release, CommitInfo(sha="s9", message="tweak the player", author="dave"))
    with pytest.raises(Forbidden, match="four-eyes: Dave authored s9"):
        conductor.approve(four_eyes_release, Actor("Dave", "release_manager"), "looks fine")


def test_a_commit_known_only_by_its_email_is_matched_to_the_identities_the_token_declares(conductor, four_eyes_release):
    token = create_token(conductor, "erin", "release_manager", ["erin", "Erin@Example.com"])
    erin = authenticate(conductor, token)
    assert erin is not None and erin.identities == ("erin", "Erin@Example.com")
    commit = CommitInfo(sha="s9", message="quick fix", author="erin@example.com", author_email="erin@example.com")
    ask_behind(conductor, four_eyes_release, commit)
    with pytest.raises(Forbidden, match="four-eyes"):
        conductor.approve(four_eyes_release, erin.actor, "fine")
    assert conductor.approve(four_eyes_release, Actor("rita", "release_manager"), "reviewed erin's fix") == "nightly"


def test_an_authors_own_marked_commit_counts_too(conductor, four_eyes_release):
    """Erin's own commit carries the critical-fix marker; someone else's unmarked commit raises the
    question; Erin may not approve: every commit since the last approval counts, marked or not."""
    erins = CommitInfo(sha="e1", message="fix crash\n\nRelease-Fix: critical", author="erin", author_email="erin@example.com")
    franks = CommitInfo(sha="f1", message="bump a dependency", author="frank")
    ask_behind(conductor, four_eyes_release, erins, franks, sha="f1")
    with pytest.raises(Forbidden, match="erin authored e1"):
        conductor.approve(four_eyes_release, Actor("erin", "release_manager"), "frank's bump is harmless")
    assert conductor.approve(four_eyes_release, Actor("rita", "release_manager"), "reviewed both") == "nightly"


def test_an_approval_starts_the_count_again(conductor, four_eyes_release):
    ask_behind(conductor, four_eyes_release, CommitInfo(sha="d1", message="tweak", author="dave"), sha="d1")
    assert conductor.approve(four_eyes_release, Actor("rita", "release_manager"), "reviewed dave's tweak") == "nightly"
    assert conductor.snapshot(four_eyes_release).release.commits_since_approval == []


def test_identities_are_checked_when_a_token_is_created_or_changed(conductor):
    with pytest.raises(ConductorError, match="no spaces"):
        create_token(conductor, "gus", "release_manager", ["gus smith"])
    create_token(conductor, "gus", "release_manager")
    assert set_identities(conductor, "gus", ["gus", "GUS", "gus@example.com"]) == ["gus", "gus@example.com"]
