"""GitHub webhooks: signature check and normalization into ``InboundEvent``.

Handled events (``X-GitHub-Event``):

- ``workflow_run``, ``workflow_job``, ``check_suite``, ``check_run`` with action ``completed`` ->
  ``build_finished`` (outcome from ``conclusion``, ``build_green`` signal); other actions -> ignored.
- ``push`` -> ``branch_push`` with its commits; a push that creates the branch (``created: true``)
  also gets the label ``branch_created``; branch deletions and tag pushes -> ignored.
- ``create`` with ``ref_type: branch`` -> ``branch_created``; tags -> ignored.
- ``ping`` -> ``ping``. Anything else -> ignored with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from conductor.sources._common import (
    get,
    load_json_object,
    lower_headers,
    opt_str,
    parse_time,
    req_dict,
    req_str,
    require_header,
    strip_heads,
)
from conductor.sources.errors import PayloadInvalid, SignatureInvalid
from conductor.sources.events import (
    CommitInfo,
    InboundEvent,
    OutcomeName,
    outcome_signals,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"

# GitHub check / workflow conclusions -> our outcome. timed_out and startup_failure are failures;
# action_required and stale say nothing about the code, so they are neutral (no build_green signal).
_CONCLUSIONS: dict[str, OutcomeName] = {
    "success": "success",
    "failure": "failure",
    "timed_out": "failure",
    "startup_failure": "failure",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "neutral": "neutral",
    "action_required": "neutral",
    "stale": "neutral",
}

_ZERO_SHA = "0" * 40


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body`` (also used by tests)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Check ``X-Hub-Signature-256`` = ``sha256=`` + hex HMAC-SHA256(secret, raw body).

    Compares in constant time. Raises SignatureInvalid when the header is missing, does not start
    with ``sha256=``, or the digest does not match; ValueError when ``secret`` is empty (a
    configuration error, not the sender's fault).
    """
    if not secret:
        raise ValueError("GitHub webhook secret is empty")
    value = lower_headers(headers).get(SIGNATURE_HEADER.lower())
    if not value:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER} header")
    if not value.startswith("sha256="):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} must start with 'sha256='")
    expected = github_signature(secret, body)
    if not hmac.compare_digest(expected.encode(), value.lower().encode("utf-8", "replace")):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match the body")


def parse_github(headers: Mapping[str, str], body: bytes) -> InboundEvent:
    """Normalize a GitHub delivery (call ``verify_github`` first).

    Raises PayloadInvalid naming the header when ``X-GitHub-Event`` or ``X-GitHub-Delivery`` is
    missing, ``field="body"`` for malformed JSON or a non-object body, and the dotted JSON path
    when a field needed for a handled event is missing or has the wrong type. Unknown events and
    actions are not errors: they come back as ``kind="ignored"`` with a reason.
    """
    h = lower_headers(headers)
    event = require_header(h, EVENT_HEADER)
    delivery = require_header(h, DELIVERY_HEADER)
    payload = load_json_object(body)
    action = payload.get("action")
    raw_type = f"{event}.{action}" if isinstance(action, str) and action else event
    base: dict[str, Any] = {
        "source": "github",
        "delivery_id": delivery,
        "raw_type": raw_type,
        "repository": opt_str(payload, "repository.full_name"),
    }

    if event in _BUILD_EVENTS:
        return _build_event(event, action, payload, base)
    if event == "push":
        return _push(payload, base)
    if event == "create":
        return _create(payload, base)
    if event == "ping":
        return InboundEvent(**base, kind="ping", occurred_at=parse_time(get(payload, "hook.updated_at")))
    return InboundEvent(**base, kind="ignored", reason=f"unsupported GitHub event {event!r}")


def _outcome(conclusion: Any, field: str) -> OutcomeName | None:
    if conclusion is None:
        return None
    if not isinstance(conclusion, str):
        raise PayloadInvalid(f"expected a string, got {type(conclusion).__name__}", field=field)
    return _CONCLUSIONS.get(conclusion)


def _build_event(event: str, action: Any, payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    if action != "completed":
        return InboundEvent(**base, kind="ignored", reason=f"{event} action {action!r} is not 'completed'")
    obj = req_dict(payload, event)

    def field(path: str) -> str | None:  # errors name the full path, e.g. "check_run.check_suite.head_branch"
        return opt_str(payload, f"{event}.{path}")

    labels: list[str] = []
    if event == "workflow_run":
        branch = field("head_branch")
        occurred = obj.get("updated_at")
        if name := opt_str(payload, "workflow.name") or field("name"):
            labels.append(f"workflow:{name}")
    elif event == "workflow_job":
        branch = field("head_branch")  # absent in payloads from before 2022
        occurred = obj.get("completed_at")
        if workflow := field("workflow_name"):
            labels.append(f"workflow:{workflow}")
        if job := field("name"):
            labels.append(f"job:{job}")
    elif event == "check_suite":
        branch = field("head_branch")
        occurred = obj.get("updated_at")
        if app := field("app.slug") or field("app.name"):
            labels.append(f"app:{app}")
    else:  # check_run
        branch = field("check_suite.head_branch")
        occurred = obj.get("completed_at")
        if name := field("name"):
            labels.append(f"check:{name}")
        if app := field("app.slug") or field("app.name"):
            labels.append(f"app:{app}")
    outcome = _outcome(obj.get("conclusion"), f"{event}.conclusion")
    return InboundEvent(
        **base,
        kind="build_finished",
        branch=strip_heads(branch),
        sha=req_str(payload, f"{event}.head_sha"),
        outcome=outcome,
        signals=outcome_signals(outcome),
        labels=labels,
        occurred_at=parse_time(occurred),
    )


_BUILD_EVENTS = frozenset({"workflow_run", "workflow_job", "check_suite", "check_run"})


def _push(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    ref = req_str(payload, "ref")
    if not ref.startswith("refs/heads/"):
        return InboundEvent(**base, kind="ignored", reason=f"push to {ref!r} is not a branch push")
    branch = strip_heads(ref)
    after = req_str(payload, "after")
    if payload.get("deleted") is True or after == _ZERO_SHA:
        return InboundEvent(**base, kind="ignored", branch=branch, reason=f"branch {branch!r} was deleted")
    labels = []
    if payload.get("created") is True:
        labels.append("branch_created")
    if payload.get("forced") is True:
        labels.append("forced")
    commits_raw = payload.get("commits") or []
    if not isinstance(commits_raw, list):
        raise PayloadInvalid("expected a list", field="commits")
    commits = [_commit(payload, f"commits.{i}") for i in range(len(commits_raw))]
    return InboundEvent(
        **base,
        kind="branch_push",
        branch=branch,
        sha=after,
        commits=commits,
        labels=labels,
        # repository.pushed_at is unix seconds in push payloads (an ISO string elsewhere)
        occurred_at=parse_time(get(payload, "repository.pushed_at")),
    )


def _commit(payload: dict[str, Any], path: str) -> CommitInfo:
    """One push commit; errors name the full path (``commits.0.id``)."""
    req_dict(payload, path)
    return CommitInfo(
        sha=req_str(payload, f"{path}.id"),
        message=opt_str(payload, f"{path}.message") or "",
        author=opt_str(payload, f"{path}.author.username") or opt_str(payload, f"{path}.author.email"),
    )


def _create(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    ref_type = opt_str(payload, "ref_type")
    ref = req_str(payload, "ref")
    if ref_type != "branch":
        return InboundEvent(**base, kind="ignored", reason=f"create of a {ref_type or 'unknown ref type'} is not handled")
    return InboundEvent(**base, kind="branch_created", branch=strip_heads(ref))
