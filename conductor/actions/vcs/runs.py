"""Recognising a dispatched workflow run when its `workflow_run` webhook comes back. Pure, and apart
from the GitHub client (importing githubkit takes ~0.35 s; the inbox needs only this)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

KEY_PREFIX = "conductor-"
CLOCK_SKEW = timedelta(seconds=60)  # GitHub's created_at against our clock


def _short_ref(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _same_workflow(workflow: str, run: dict[str, Any]) -> bool:
    if workflow.isdigit():
        return run.get("workflow_id") == int(workflow)
    path = str(run.get("path") or "").split("@", 1)[0]  # "path@ref" for some triggers
    return path == workflow or path.rsplit("/", 1)[-1] == workflow.rsplit("/", 1)[-1]


def matches_dispatch(dispatch_result: dict[str, Any], workflow_run_payload: dict[str, Any]) -> bool:
    """Whether a `workflow_run` webhook body is about the run `dispatch()` started (see the module docstring)."""
    run = workflow_run_payload.get("workflow_run") or {}
    if dispatch_result.get("run_id") is not None:
        return bool(run.get("id") == dispatch_result["run_id"])
    if run.get("event") != "workflow_dispatch" or not _same_workflow(str(dispatch_result.get("workflow", "")), run):
        return False
    if run.get("head_branch") != _short_ref(str(dispatch_result.get("ref", ""))):
        return False
    created, dispatched = _parse_time(run.get("created_at")), _parse_time(dispatch_result.get("dispatched_at"))
    if created is None or dispatched is None or created < dispatched - CLOCK_SKEW:
        return False
    key, title = dispatch_result.get("key"), str(run.get("display_title") or run.get("name") or "")
    if not key or title == key:
        return True
    return not title.startswith(KEY_PREFIX)  # another dispatch's key: not ours; no key shown: the weaker match
