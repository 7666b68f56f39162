"""Slack text: user-supplied and external text is escaped (&, <, >) so it can never become a link, mention or
control sequence; Conductor's own mrkdwn (bold key, code spans) still works. The generic webhook stays raw JSON."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from conductor.actions import ActionRequest, ReleaseRef
from conductor.actions.notify import Notifier, slack_text, webhook_payload
from conductor.actions.settings import NotifySettings

RELEASE = ReleaseRef(7, "music-android", "9.0.0", "beta", "release/9.0.0", "abc123")
PHISH = "<!channel> <https://evil.example|Approve here>"
MENTIONS = "a & b <@U123> <!here>"
HOSTILE = "<!subteam^S123|@oncall> <@U123> <!here> <https://evil.example|x> & &lt;"


def request(release=RELEASE, **params) -> ActionRequest:
    return ActionRequest("notify", {"release": release.key, **params}, "7:cancelled:notify", 1, release, ())


def assert_inert(text: str) -> None:
    """No Slack control syntax survives, and every & starts one of the three escapes."""
    assert "<" not in text and ">" not in text
    assert not re.search(r"&(?!amp;|lt;|gt;)", text)


def test_cancel_reason_with_a_channel_ping_and_a_disguised_link_is_escaped():
    text = slack_text("cancelled", request(event="cancelled", summary=PHISH))
    assert text == ":x: *music-android/9.0.0* was cancelled: &lt;!channel&gt; &lt;https://evil.example|Approve here&gt;"
    assert_inert(text)


def test_cancel_reason_with_ampersand_user_mention_and_here_is_escaped():
    text = slack_text("cancelled", request(event="cancelled", summary=MENTIONS))
    assert text == ":x: *music-android/9.0.0* was cancelled: a &amp; b &lt;@U123&gt; &lt;!here&gt;"
    assert_inert(text)


def test_already_escaped_looking_text_is_shown_literally_not_decoded():
    text = slack_text("cancelled", request(event="cancelled", summary="&lt;!here&gt;"))
    assert text.endswith("was cancelled: &amp;lt;!here&amp;gt;")


def test_the_cancel_reason_reaches_slack_escaped_through_the_notifier():
    sent: list[httpx.Request] = []

    def receive(req: httpx.Request) -> httpx.Response:
        sent.append(req)
        return httpx.Response(200, text="ok")

    client = httpx.Client(transport=httpx.MockTransport(receive))
    notifier = Notifier(client, NotifySettings(slack_url="https://hooks.slack.test/services/T/B/X"), "music-android")
    outcome = notifier.run(request(event="cancelled", summary=PHISH))
    assert outcome.status == "done" and len(sent) == 1
    assert json.loads(sent[0].content) == {
        "text": ":x: *music-android/9.0.0* was cancelled: &lt;!channel&gt; &lt;https://evil.example|Approve here&gt;"
    }


EVENTS = ["approval_requested", "halted", "action_failed", "released", "held", "cancelled", "approval_escalated"]


@pytest.mark.parametrize("event", EVENTS + ["some <!here> event"])
def test_every_inserted_value_is_escaped_for_every_event(event):
    release = ReleaseRef(7, f"track {HOSTILE}", f"9.0.0 {HOSTILE}", f"stage {HOSTILE}")
    text = slack_text(
        event,
        request(
            release,
            event=event,
            summary=HOSTILE,
            stage=f"stage {HOSTILE}",
            evaluation_id=HOSTILE,
            action=HOSTILE,
            attempts=HOSTILE,
            error=HOSTILE,
        ),
    )
    assert_inert(text)
    assert "&lt;!subteam^S123|@oncall&gt;" in text and "&amp;lt;" in text
    # Conductor's own formatting is untouched: the release key is still bold.
    assert text.count("*") == 2 and "*track &lt;" in text


def test_conductors_own_formatting_still_works_for_ordinary_text():
    text = slack_text("approval_requested", request(event="approval_requested", summary="crash_free 98.7 < 99.0", evaluation_id=12))
    assert text == (
        ":double_vertical_bar: *music-android/9.0.0* waits for approval at beta: crash_free 98.7 &lt; 99.0 "
        '— `conductor approve music-android/9.0.0 --decision 12 --reason "..."`'
    )
    failed = slack_text("action_failed", request(event="action_failed", action="set_rollout", attempts=8, error="HTTP 503"))
    assert failed == ":warning: *music-android/9.0.0*: action `set_rollout` failed after 8 attempt(s): HTTP 503"


def test_the_generic_webhook_carries_user_text_as_plain_json_data():
    payload = webhook_payload("cancelled", request(event="cancelled", summary=PHISH))
    assert payload["type"] == "release.cancelled" and payload["data"]["summary"] == PHISH
    assert json.loads(json.dumps(payload))["data"]["summary"] == PHISH
