"""Actions performed by the track's own automation: a signed POST to its `actions_url`.

Cutting a branch, distributing a build to a ring, submitting to a store, setting, halting or
resuming a staged rollout and publishing are done by systems Conductor cannot reach directly on
every installation (VCS hosts, store APIs, feature-flag services). The track names one endpoint
that does them; Conductor sends each action there signed per Standard Webhooks, with the
idempotency key as webhook-id, so the receiver can verify it and act on it once.

    POST actions_url
    {"type": "action.set_rollout", "timestamp": "...",
     "data": {"action": "set_rollout", "idempotency_key": "42:rollout_1->rollout_100:311:0:set_rollout",
              "attempt": 1, "release": {...}, "params": {"stage": "rollout_100", "percent": 100}}}

A 2xx answer means done (a JSON body is kept as the action's result).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from conductor.actions.base import ActionOutcome, ActionRequest
from conductor.actions.http import post_json, response_summary

# Actions the shipped definitions use; any other action name is sent the same way.
KNOWN_ACTIONS = ("cut_branch", "distribute", "submit_to_store", "set_rollout", "halt_rollout", "resume_rollout", "publish")


def action_payload(request: ActionRequest, now: datetime | None = None) -> dict[str, Any]:
    params = {k: v for k, v in request.params.items() if k != "release"}
    return {
        "type": f"action.{request.action}",
        "timestamp": (now or datetime.now(UTC)).isoformat(),
        "data": {
            "action": request.action,
            "idempotency_key": request.idempotency_key,
            "attempt": request.attempt,
            "release": request.release.as_dict(),
            "params": params,
        },
    }


class EndpointAdapter:
    """Performs any action by POSTing it, signed, to the track's actions_url."""

    def __init__(self, client: httpx.Client, url: str, secret: str):
        self.client, self.url, self.secret = client, url, secret

    def run(self, request: ActionRequest) -> ActionOutcome:
        resp = post_json(
            self.client,
            self.url,
            action_payload(request),
            what=f"{request.action} via actions_url",
            idempotency_key=request.idempotency_key,
            secret=self.secret,
        )
        return ActionOutcome("done", f"accepted by {httpx.URL(self.url).host}", response_summary(resp))
