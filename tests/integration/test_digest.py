"""The morning digest: once per track at the start of its working day, riskiest first, to Slack and
kept as a track audit row; a failed send is tried again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from conductor.actions import ActionAdapters
from conductor.service import Actor
from tests.integration.test_service import beta_ready, feed_ring, to_beta, unanswered_overnight

RM = Actor("rita", "release_manager")
SLACK = {"notify": {"slack_url": "https://hooks.slack.test/services/T/B/x"}}


def slack(sent, status=200):
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(status, text="ok")

    return ActionAdapters(httpx.Client(transport=httpx.MockTransport(handle)))


def test_the_digest_ranks_a_halted_rollout_first_and_is_sent_once_a_morning(conductor, clock):
    from conductor.service.digest import digest, send_due
    from conductor.service.tracks import configure_actions

    configure_actions(conductor, "music-android", Actor("ada", "admin"), {"slack_url": SLACK["notify"]["slack_url"]})
    bad = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, bad)
    beta_ready(conductor, clock, bad, crash=99.8)
    clock.advance(timedelta(hours=3))
    feed_ring(conductor, bad, crash=97.0)  # halts at rollout_1
    paused = conductor.start_release("music-android", "9.1.0", RM)
    conductor.pause(paused, RM, "waiting for the legal review")
    now = conductor.now()
    d = digest(conductor, "music-android", now - timedelta(days=7), now)
    assert d.items[0].kind == "halted" and d.items[0].risk == 3.0  # 1 % of users x a failed gate
    assert d.items[0].release == "music-android/9.0.0" and "crash" in d.items[0].text
    assert any(i.kind == "moved" and "beta -> rollout_1" in i.text for i in d.items)
    clock.now = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)  # 08:30 in Stockholm: the working day has not started
    sent: list = []
    assert send_due(conductor, slack(sent)).sent == ["music-android"]  # yesterday's (Monday's) start has no digest yet
    clock.now = datetime(2026, 12, 1, 8, 5, tzinfo=UTC)  # 09:05 Stockholm, Tuesday
    assert send_due(conductor, slack(sent)).sent == ["music-android"]
    assert send_due(conductor, slack(sent)).sent == []  # once a morning
    assert len(sent) == 2 and sent[-1]["text"].startswith(":sunrise: *Morning digest for music-android")
    assert "music-android/9.0.0 halted" in sent[-1]["text"]
    from conductor.read.board import board

    (tb,) = board(conductor).tracks
    assert tb.digest.startswith("Morning digest for music-android") and "9.0.0 halted" in tb.digest  # the overview shows it


def test_a_digest_that_could_not_be_sent_is_tried_again(conductor, clock):
    from conductor.service.digest import send_due
    from conductor.service.tracks import configure_actions

    configure_actions(conductor, "music-android", Actor("ada", "admin"), {"slack_url": SLACK["notify"]["slack_url"]})
    clock.now = datetime(2026, 12, 1, 8, 5, tzinfo=UTC)
    sent: list = []
    assert send_due(conductor, slack(sent, status=503)).failed == ["music-android"]
    assert send_due(conductor, slack(sent)).sent == ["music-android"]


def test_a_question_left_unanswered_overnight_is_in_the_digest_and_can_still_be_answered(conductor, clock):
    from conductor.service.digest import digest

    rid, asked = unanswered_overnight(conductor, clock)  # escalated, held on the question
    now = conductor.now()
    (item,) = [i for i in digest(conductor, "music-android", now - timedelta(days=1), now).items if i.kind != "moved"]
    assert item.kind == "asking" and "unanswered by its deadline" in item.text and "late answer" in item.text
    conductor.approve(rid, RM, "fine, read it this morning", evaluation_id=asked.id, fingerprint=asked.fingerprint)
    assert [i.kind for i in digest(conductor, "music-android", now - timedelta(days=1), conductor.now()).items if i.kind != "moved"] == []


def test_a_release_held_on_a_failed_gate_is_in_the_digest(conductor, clock):
    from conductor.service.digest import digest

    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=97.5)  # fails in beta: held before the store
    assert conductor.snapshot(rid).status == "held"
    now = conductor.now()
    (item,) = [i for i in digest(conductor, "music-android", now - timedelta(days=1), now).items if i.kind != "moved"]
    assert item.kind == "held" and "held in beta" in item.text and "waits for a fix" in item.text and "crash" in item.text
