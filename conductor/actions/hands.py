"""The robot's other hands: actions performed through the track's VCS/CI host and flag service.

    cut_branch(from_ref)      the release branch (the track's pattern) from from_ref's head   VCS
    distribute(ring)          the ring's CI workflow on the release branch                      VCS
    tag_release(tag)          a tag at the release's head and a release with generated notes    VCS
    set_flag(flag, enabled)   a feature flag on or off (on for percent %)                       flags
    kill_switch(enabled)      the track's kill-switch flags off (the robot, on a halt) or back
                              on (a release manager's resume with restore_flags)                 flags

Every client call reads before it writes, so the outbox may retry any of these safely. A
dispatched workflow is recognised when its run comes back (conductor.actions.vcs.github
matches_dispatch): the key it carries is kept in the action's result.
"""

from __future__ import annotations

from typing import Any

from conductor.actions.base import ActionFailed, ActionOutcome, ActionRequest
from conductor.actions.connections import FlagsmithConnection, GitHubConnection, GitLabConnection, UnleashConnection
from conductor.actions.flags.base import FlagClient
from conductor.actions.vcs.base import VcsClient


class VcsActions:
    """cut_branch, distribute (to a CI ring) and tag_release through the track's VCS (an ActionAdapter)."""

    def __init__(self, client: VcsClient, connection: GitHubConnection | GitLabConnection):
        self.client, self.connection = client, connection

    def run(self, request: ActionRequest) -> ActionOutcome:
        r, params = request.release, request.params
        if not r.branch:
            raise ActionFailed(f"{request.action}: the release has no branch name", retryable=False)
        if request.action == "cut_branch":
            result = self.client.cut_branch(r.branch, str(params.get("from_ref") or self.connection.main_branch))
            return ActionOutcome("done", f"{self.client.kind}: branch {r.branch} {result.get('status', 'done')}", result)
        if request.action == "distribute":
            ring = str(params.get("ring"))
            workflow = self.connection.workflows.get(ring)
            if workflow is None:
                raise ActionFailed(f"distribute: the VCS connection maps no workflow to ring {ring!r}", retryable=False)
            inputs = {"ring": ring, "version": r.version, "ref": r.branch}
            result = self.client.dispatch(workflow, r.branch, inputs)
            return ActionOutcome("done", f"{self.client.kind}: {workflow} started on {r.branch} for {ring}", {**result, "ring": ring})
        if request.action == "tag_release":
            if not r.head_sha:
                raise ActionFailed("tag_release: the release's head commit is unknown (no push or build reported one)", retryable=False)
            tag = str(params.get("tag") or "v{version}").format(version=r.version)
            result = self.client.tag_release(tag, r.head_sha, f"{r.track} {r.version}")
            return ActionOutcome("done", f"{self.client.kind}: {tag} at {r.head_sha[:10]}", result)
        raise ActionFailed(f"{request.action} is not a VCS action", retryable=False)


class FlagActions:
    """set_flag and kill_switch through the track's flag service (an ActionAdapter)."""

    def __init__(self, client: FlagClient, connection: UnleashConnection | FlagsmithConnection):
        self.client, self.connection = client, connection

    def run(self, request: ActionRequest) -> ActionOutcome:
        params = request.params
        env = str(params.get("environment") or self.connection.environment)
        if request.action == "set_flag":
            flag, enabled = str(params["flag"]), bool(params["enabled"])
            result = self.client.set(flag, env, enabled, params.get("percent"))
            return ActionOutcome("done", f"{self.client.kind}: {flag} {'on' if enabled else 'off'} in {env}", result)
        if request.action == "kill_switch":
            enabled = bool(params.get("enabled", False))
            flags = self.connection.kill_switch
            if not flags:
                return ActionOutcome("skipped", f"the {self.client.kind} connection declares no kill-switch flags")
            results: dict[str, Any] = {flag: self.client.set(flag, env, enabled) for flag in flags}
            return ActionOutcome(
                "done", f"{self.client.kind}: {', '.join(flags)} {'on' if enabled else 'off'} in {env}", {"flags": results}
            )
        raise ActionFailed(f"{request.action} is not a flag action", retryable=False)
