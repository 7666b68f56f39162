"""Notifications: a Slack-compatible incoming-webhook message and a signed generic webhook.

Sent for the `notify` actions the engine queues: a release pauses for approval, halts, is held,
is cancelled, an approval deadline passes, an action fails, a release is released. A track picks
its channels in Track.settings["notify"]; `events` narrows what is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from conductor.actions.base import ActionFailed, ActionOutcome, ActionRequest
from conductor.actions.http import post_json, response_summary
from conductor.actions.settings import NotifySettings


def notification_event(request: ActionRequest) -> str:
    """The event a notify action announces; a definition's own `notify` on reaching the end is `released`."""
    p = request.params
    return str(p.get("event") or ("released" if p.get("message") == "released" else p.get("message") or "notice"))


def slack_escape(value: object) -> str:
    """Text for Slack mrkdwn: `&`, `<` and `>` escaped (and only those), so no link, mention or `<!...>` survives.

    Applied to every value Conductor did not write itself, at the point it is inserted; Conductor's own
    mrkdwn around it (the bold key, code spans) stays live. https://api.slack.com/reference/surfaces/formatting#escaping
    """
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(event: str, request: ActionRequest) -> str:
    """One line of Slack mrkdwn saying what happened to which release and what a human can do."""
    p, r, e = request.params, request.release, slack_escape
    summary = e(p.get("summary") or "")
    key, stage = e(r.key), e(r.stage)
    rel = f"*{key}*"
    if event == "approval_requested":
        return (
            f":double_vertical_bar: {rel} waits for approval at {stage}: {summary} "
            f'— `conductor approve {key} --decision {e(p.get("evaluation_id"))} --reason "..."`'
        )
    if event == "halted":
        # By the time it is sent the release is in its halted stage: name the rollout stage only when the action carries it.
        where = f" at {e(p['stage'])}" if p.get("stage") and p["stage"] != r.stage else ""
        return f":octagonal_sign: {rel} halted its rollout{where}: {summary}. Resuming needs a release manager."
    if event == "action_failed":
        return f":warning: {rel}: action `{e(p.get('action'))}` failed after {e(p.get('attempts'))} attempt(s): {e(p.get('error'))}"
    if event == "released":
        return f":white_check_mark: {rel} is released."
    if event == "held":
        return f":pause_button: {rel} is held at {stage}: {summary}"
    if event == "cancelled":
        return f":x: {rel} was cancelled: {summary}"
    if event == "digest":
        lines = e(p.get("summary") or "").splitlines()
        return "\n".join([f":sunrise: *{lines[0]}*" if lines else ":sunrise: *Morning digest*", *lines[1:]])
    if event == "approval_escalated":
        return f":alarm_clock: {rel}: nobody answered decision {e(p.get('evaluation_id'))} in time; the release is held at {stage}."
    return f"{rel}: {e(event)} {summary}".strip()


def webhook_payload(event: str, request: ActionRequest, now: datetime | None = None) -> dict[str, Any]:
    """The generic webhook body: {"type": "release.<event>", "timestamp", "data"}."""
    data = {k: v for k, v in request.params.items() if k != "release"}
    return {
        "type": f"release.{event}",
        "timestamp": (now or datetime.now(UTC)).isoformat(),
        "data": {"release": request.release.as_dict(), "event": event, **data},
    }


class Notifier:
    """Sends one notification to every configured channel it has not reached yet."""

    def __init__(self, client: httpx.Client, settings: NotifySettings, track_id: str):
        self.client, self.settings, self.track_id = client, settings, track_id

    def run(self, request: ActionRequest) -> ActionOutcome:
        event = notification_event(request)
        cfg = self.settings
        urls = {name: url for name, url in (("slack", cfg.slack_url), ("webhook", cfg.webhook_url)) if url}
        channels = list(urls)
        if not channels:
            return ActionOutcome(
                "skipped", f"no notification channel configured for track {self.track_id} (settings.notify.slack_url / webhook_url)"
            )
        if cfg.events is not None and event not in cfg.events:
            return ActionOutcome("skipped", f"{event} is not in settings.notify.events of track {self.track_id}")
        delivered = list(request.delivered)
        errors: list[ActionFailed] = []
        result: dict[str, Any] = {}
        for channel in channels:
            if channel in delivered:
                continue
            try:
                if channel == "slack":
                    resp = post_json(
                        self.client,
                        urls[channel],
                        {"text": slack_text(event, request)},
                        what="slack notification",
                        idempotency_key=request.idempotency_key,
                    )
                else:
                    if not cfg.webhook_secret:
                        raise ActionFailed(
                            f"track {self.track_id}: settings.notify.webhook_url is set but webhook_secret is not; "
                            "outgoing webhooks are always signed",
                            retryable=False,
                        )
                    resp = post_json(
                        self.client,
                        urls[channel],
                        webhook_payload(event, request),
                        what="webhook notification",
                        idempotency_key=request.idempotency_key,
                        secret=cfg.webhook_secret,
                    )
                delivered.append(channel)
                result[channel] = response_summary(resp)
            except ActionFailed as exc:
                errors.append(exc)
        if errors:
            raise ActionFailed("; ".join(str(e) for e in errors), retryable=all(e.retryable for e in errors), delivered=tuple(delivered))
        return ActionOutcome("done", f"{event} sent to {', '.join(delivered)}", {"channels": delivered, **result})
