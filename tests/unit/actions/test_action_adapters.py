"""Outbound adapters against httpx.MockTransport: what is sent, how it is signed, how failures are classed."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from conductor.actions import ActionAdapters, ActionFailed, ActionRequest, ReleaseRef
from conductor.actions.notify import Notifier, slack_text
from conductor.actions.settings import NotifySettings
from conductor.service.outbox import backoff

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RELEASE = ReleaseRef(7, "music-android", "9.0.0", "beta", "release/9.0.0", "abc123")


def request(action="notify", attempt=1, delivered=(), **params) -> ActionRequest:
    return ActionRequest(action, {"release": RELEASE.key, **params}, f"7:ask:12:{action}", attempt, RELEASE, tuple(delivered))


class Receiver:
    """A fake HTTP world: answers per host, records every request."""

    def __init__(self, answers: dict[str, object] | None = None):
        self.answers = answers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        answer = self.answers.get(req.url.host, 200)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(answer, json={"ok": answer < 300})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def by_host(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]


SETTINGS = {
    "notify": {"slack_url": "https://hooks.slack.test/services/T/B/X", "webhook_url": "https://ops.test/hook", "webhook_secret": SECRET},
    "actions_url": "https://deploy.test/conductor",
    "actions_secret": SECRET,
}


def test_approval_request_reaches_slack_and_a_signed_webhook():
    rx = Receiver()
    outcome = ActionAdapters(rx.client()).run(
        request(event="approval_requested", summary="crash_free in the grey zone", evaluation_id=12), "music-android", SETTINGS
    )
    assert outcome.status == "done" and outcome.result["channels"] == ["slack", "webhook"]
    slack = json.loads(rx.by_host("hooks.slack.test")[0].content)
    assert "music-android/9.0.0" in slack["text"] and "--decision 12" in slack["text"] and "grey zone" in slack["text"]
    hook = rx.by_host("ops.test")[0]
    # The receiver verifies it with the standardwebhooks library itself.
    payload = Webhook(SECRET).verify(hook.content, dict(hook.headers))
    assert payload["type"] == "release.approval_requested"
    assert payload["data"]["release"]["key"] == "music-android/9.0.0" and payload["data"]["evaluation_id"] == 12
    assert hook.headers["webhook-id"] == hook.headers["idempotency-key"] == "7:ask:12:notify"


@pytest.mark.parametrize("event,words", [("halted", "halted"), ("released", "released"), ("action_failed", "failed after 8")])
def test_every_notified_event_has_a_message(event, words):
    text = slack_text(event, request(event=event, summary="crash_free 98.7 < 99.0", action="set_rollout", attempts=8, error="HTTP 503"))
    assert words in text and "music-android/9.0.0" in text


def test_a_halt_message_never_says_it_halted_at_the_halted_stage():
    halted = ReleaseRef(7, "music-android", "9.0.0", "halted")
    ask = ActionRequest("notify", {"event": "halted", "summary": "failed: crash_free (98.2 ≤ 99)"}, "7:halt", 1, halted)
    assert slack_text("halted", ask) == (
        ":octagonal_sign: *music-android/9.0.0* halted its rollout: failed: crash_free (98.2 ≤ 99). Resuming needs a release manager."
    )
    named = ActionRequest("notify", {"event": "halted", "summary": "x", "stage": "rollout_1"}, "7:halt", 1, halted)
    assert "halted its rollout at rollout_1: x." in slack_text("halted", named)


def test_nothing_configured_is_skipped_with_the_reason_never_done():
    rx = Receiver()
    adapters = ActionAdapters(rx.client())
    notify = adapters.run(request(event="halted"), "music-android", {})
    assert notify.status == "skipped" and "no notification channel" in notify.detail
    rollout = adapters.run(request("set_rollout", percent=100), "music-android", {"notify": SETTINGS["notify"]})
    assert rollout.status == "skipped" and rollout.detail.startswith("store not connected: rollout actions are not performed")
    cut = adapters.run(request("cut_branch"), "music-android", {"notify": SETTINGS["notify"]})
    assert cut.status == "skipped" and "no actions_url" in cut.detail
    unsigned = adapters.run(request("set_rollout", percent=100), "music-android", {"actions_url": "https://deploy.test/x"})
    assert unsigned.status == "skipped" and "no actions_secret" in unsigned.detail
    assert rx.requests == []


def test_events_filter_skips_what_the_track_does_not_want():
    rx = Receiver()
    cfg = {"notify": {"slack_url": "https://hooks.slack.test/x", "events": ["halted"]}}
    assert ActionAdapters(rx.client()).run(request(event="held"), "t", cfg).status == "skipped"
    assert ActionAdapters(rx.client()).run(request(event="halted"), "t", cfg).status == "done"


def test_action_goes_signed_to_the_actions_url_with_its_idempotency_key():
    rx = Receiver({"deploy.test": httpx.Response(200, json={"rollout": "100%"})})
    outcome = ActionAdapters(rx.client()).run(request("set_rollout", stage="rollout_100", percent=100), "music-android", SETTINGS)
    assert outcome.status == "done" and outcome.result["body"] == {"rollout": "100%"}
    sent = rx.by_host("deploy.test")[0]
    payload = Webhook(SECRET).verify(sent.content, dict(sent.headers))
    assert payload["type"] == "action.set_rollout"
    assert payload["data"]["params"] == {"stage": "rollout_100", "percent": 100}
    assert payload["data"]["idempotency_key"] == "7:ask:12:set_rollout"


@pytest.mark.parametrize(
    "answer,retryable",
    [
        (503, True),
        (500, True),
        (429, True),
        (408, True),
        (400, False),
        (401, False),
        (404, False),
        (409, False),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
    ],
)
def test_failures_say_whether_trying_again_can_help(answer, retryable):
    rx = Receiver({"deploy.test": answer})
    with pytest.raises(ActionFailed) as err:
        ActionAdapters(rx.client()).run(request("cut_branch"), "music-android", SETTINGS)
    assert err.value.retryable is retryable
    assert "cut_branch" in str(err.value)


def test_a_channel_that_took_the_message_is_not_sent_it_again():
    rx = Receiver({"ops.test": 503})
    adapters = ActionAdapters(rx.client())
    with pytest.raises(ActionFailed) as err:
        adapters.run(request(event="halted"), "music-android", SETTINGS)
    assert err.value.delivered == ("slack",) and err.value.retryable
    rx.answers = {}
    outcome = adapters.run(request(event="halted", attempt=2, delivered=err.value.delivered), "music-android", SETTINGS)
    assert outcome.status == "done"
    assert len(rx.by_host("hooks.slack.test")) == 1 and len(rx.by_host("ops.test")) == 2


def test_bad_settings_fail_without_retry_naming_the_field():
    rx = Receiver()
    with pytest.raises(ActionFailed) as err:
        ActionAdapters(rx.client()).run(request("cut_branch"), "music-android", {"actions_url": "ftp://nope", "actions_secret": SECRET})
    assert not err.value.retryable and "settings.actions_url" in str(err.value)
    notifier = Notifier(rx.client(), NotifySettings(webhook_url="https://ops.test/hook"), "music-android")
    with pytest.raises(ActionFailed, match="webhook_secret"):
        notifier.run(request(event="halted"))


def test_adapters_can_be_swapped_by_action_name():
    class Store:
        def __init__(self):
            self.seen = []

        def run(self, req):
            from conductor.actions import ActionOutcome

            self.seen.append(req.idempotency_key)
            return ActionOutcome("done", "stand-in")

    store = Store()
    adapters = ActionAdapters(Receiver().client(), overrides={"submit_to_store": store})
    assert adapters.run(request("submit_to_store"), "music-android", {}).status == "done"
    assert store.seen == ["7:ask:12:submit_to_store"]


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(3)
    waits = [backoff(n, rng) for n in range(1, 12)]
    assert timedelta(seconds=24) <= waits[0] <= timedelta(seconds=36)
    assert waits[3] > waits[1] > waits[0]
    assert max(waits) <= timedelta(hours=1.2)
