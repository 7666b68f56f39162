"""Which adapter performs an action for a track, or why nothing does (then the action is skipped).

`notify` goes to the track's notification channels. Store actions (submit_to_store, set_rollout,
halt_rollout, resume_rollout, and distribute to a ring the store connection maps) go to the
track's store (conductor.actions.stores). Anything else, and store actions of a track with no
store connection, go to the track's generic `actions_url`. Nothing configured means "skipped"
with the reason on the release, never a pretend success. Tests and embedders may register their
own adapters by action name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from conductor.actions.base import ActionAdapter, ActionFailed, ActionOutcome, ActionRequest
from conductor.actions.cdevents import CDEventsSink
from conductor.actions.connections import flag_client, parse_connections, store_client, vcs_client
from conductor.actions.endpoint import EndpointAdapter
from conductor.actions.hands import FlagActions, VcsActions
from conductor.actions.notify import Notifier
from conductor.actions.settings import parse_action_settings
from conductor.actions.store_actions import StoreActions
from conductor.clock import Clock, system_clock
from conductor.domain.actions import FLAG_ACTIONS, STORE_ACTIONS
from conductor.domain.errors import ConductorError


def _nobody(action: str, track_id: str) -> str:
    """Why nothing performs `action` for the track (the skip reason on the release)."""
    if action in STORE_ACTIONS:
        return f"store not connected: rollout actions are not performed (connect one: conductor track store {track_id} ...)"
    if action in FLAG_ACTIONS:
        return f"no feature-flag service connected (conductor track flags {track_id} ...)"
    if action in ("cut_branch", "tag_release", "distribute"):
        return f"no VCS/CI connected and no actions_url (conductor track vcs {track_id} ...)"
    return f"track {track_id} has no actions_url configured (settings.actions_url)"


class ActionAdapters:
    """Resolves and runs adapters; holds the one HTTP client they share."""

    def __init__(self, client: httpx.Client, overrides: Mapping[str, ActionAdapter] | None = None, clock: Clock = system_clock):
        self.client = client
        self.overrides = dict(overrides or {})
        self.clock = clock

    def resolve(
        self, action: str, track_id: str, settings: dict[str, Any] | None, params: Mapping[str, Any] | None = None
    ) -> ActionAdapter | str:
        """The adapter for `action` on this track, or the reason there is none."""
        if action in self.overrides:
            return self.overrides[action]
        cfg = parse_action_settings(track_id, settings)
        if action == "notify":
            return Notifier(self.client, cfg.notify, track_id)
        conns = parse_connections(track_id, settings)
        ring = (params or {}).get("ring")
        if conns.store is not None and (action in STORE_ACTIONS or (action == "distribute" and ring in conns.store.rings)):
            return StoreActions(store_client(conns.store, self.client, clock=self.clock), conns.store)
        if conns.vcs is not None and (action in ("cut_branch", "tag_release") or (action == "distribute" and ring in conns.vcs.workflows)):
            return VcsActions(vcs_client(conns.vcs, self.client), conns.vcs)
        if conns.flags is not None and action in FLAG_ACTIONS:
            return FlagActions(flag_client(conns.flags, self.client), conns.flags)
        if action == "emit_cdevent":
            if conns.cdevents is None:
                return f"track {track_id} has no CDEvents sink connected"
            return CDEventsSink(self.client, conns.cdevents)
        if not cfg.actions_url:
            return _nobody(action, track_id)
        secret = cfg.signing_secret
        if not secret:
            return f"track {track_id} has an actions_url but no actions_secret to sign with"
        return EndpointAdapter(self.client, cfg.actions_url, secret)

    def run(self, request: ActionRequest, track_id: str, settings: dict[str, Any] | None) -> ActionOutcome:
        """Run one attempt; ActionFailed when it did not happen (a settings error is not retryable)."""
        try:
            adapter = self.resolve(request.action, track_id, settings, request.params)
        except ConductorError as exc:  # invalid settings: a human must fix them
            raise ActionFailed(str(exc), retryable=False) from None
        if isinstance(adapter, str):
            return ActionOutcome("skipped", adapter)
        return adapter.run(request)

    def close(self) -> None:
        self.client.close()
