"""What Conductor does on a VCS/CI host: cut the release branch, start a ring's build workflow,
tag the release. Idempotent by state (read, then write only what is missing); failures are
ActionFailed, retryable or not (see conductor.actions.http.failure)."""

from __future__ import annotations

from typing import Any, Protocol


class VcsClient(Protocol):
    kind: str  # github, gitlab

    def check(self) -> str:
        """One read-only call (the repository): a sentence, or ActionFailed naming the credential problem."""

    def cut_branch(self, branch: str, from_ref: str) -> dict[str, Any]:
        """Create `branch` at the head of `from_ref`. Done if it exists at that sha already;
        ActionFailed (not retryable, naming both shas) if it exists at another."""

    def dispatch(self, workflow: str, ref: str, inputs: dict[str, str]) -> dict[str, Any]:
        """Start the workflow (GitHub workflow_dispatch; GitLab a pipeline with variables) on `ref`."""

    def tag_release(self, tag: str, sha: str, name: str, notes: str | None = None) -> dict[str, Any]:
        """Tag `sha` and publish a release with (generated, unless given) notes; done if both exist."""
