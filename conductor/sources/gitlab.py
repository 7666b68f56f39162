"""GitLab webhooks: shared-token check and normalization into ``InboundEvent``.

GitLab does not sign bodies: ``X-Gitlab-Token`` carries the shared token verbatim, so it must be
compared in constant time and the endpoint must be served over TLS.

Handled events (``X-Gitlab-Event``):

- ``Pipeline Hook``: final ``object_attributes.status`` (success, failed, canceled, skipped) ->
  ``pipeline_finished``; non-final statuses (created, pending, running, manual, ...) -> ignored.
- ``Job Hook``: final ``build_status`` -> ``build_finished``; non-final -> ignored.
- Anything else -> ignored with a reason.

Dedupe key: ``Idempotency-Key`` (stable across GitLab's retries), else ``X-Gitlab-Event-UUID``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
from conductor.sources.events import InboundEvent, OutcomeName, outcome_signals

TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"
IDEMPOTENCY_HEADER = "Idempotency-Key"
UUID_HEADER = "X-Gitlab-Event-UUID"

_FINAL: dict[str, OutcomeName] = {
    "success": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "skipped": "skipped",
}


def verify_gitlab(token: str, headers: Mapping[str, str]) -> None:
    """Check ``X-Gitlab-Token`` equals ``token`` (constant-time).

    Raises SignatureInvalid when the header is missing or differs; ValueError when ``token`` is
    empty (a configuration error).
    """
    if not token:
        raise ValueError("GitLab webhook token is empty")
    value = lower_headers(headers).get(TOKEN_HEADER.lower())
    if not value:
        raise SignatureInvalid(f"missing {TOKEN_HEADER} header")
    if not hmac.compare_digest(token.encode(), value.encode("utf-8", "replace")):
        raise SignatureInvalid(f"{TOKEN_HEADER} does not match")


def parse_gitlab(headers: Mapping[str, str], body: bytes) -> InboundEvent:
    """Normalize a GitLab delivery (call ``verify_gitlab`` first).

    Raises PayloadInvalid naming the header when ``X-Gitlab-Event`` is missing or when neither
    ``Idempotency-Key`` nor ``X-Gitlab-Event-UUID`` is present (field ``X-Gitlab-Event-UUID``);
    ``field="body"`` for malformed JSON; the dotted JSON path when a needed field is missing.
    """
    h = lower_headers(headers)
    event = require_header(h, EVENT_HEADER)
    delivery = h.get(IDEMPOTENCY_HEADER.lower()) or h.get(UUID_HEADER.lower())
    if not delivery:
        raise PayloadInvalid(f"missing header {IDEMPOTENCY_HEADER} or {UUID_HEADER}", field=UUID_HEADER)
    payload = load_json_object(body)
    base: dict[str, Any] = {"source": "gitlab", "delivery_id": delivery, "raw_type": event}
    if event == "Pipeline Hook":
        return _pipeline(payload, base)
    if event == "Job Hook":
        return _job(payload, base)
    return InboundEvent(
        **base,
        kind="ignored",
        repository=opt_str(payload, "project.path_with_namespace"),
        reason=f"unsupported GitLab event {event!r}",
    )


def _branch(ref: str | None, is_tag: bool, payload: dict[str, Any]) -> tuple[str | None, list[str]]:
    """Branch name and extra labels for a ref: tags are not branches; MR refs use the source branch."""
    if ref is None:
        return None, []
    if is_tag:
        return None, [f"tag:{ref}"]
    if ref.startswith("refs/merge-requests/"):
        return opt_str(payload, "merge_request.source_branch"), ["merge_request"]
    return strip_heads(ref), []


def _pipeline(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    attrs = req_dict(payload, "object_attributes")
    status = req_str(payload, "object_attributes.status")
    repository = opt_str(payload, "project.path_with_namespace")
    outcome = _FINAL.get(status)
    if outcome is None:
        return InboundEvent(
            **base, kind="ignored", repository=repository, reason=f"pipeline status {status!r} is not final"
        )
    branch, labels = _branch(req_str(payload, "object_attributes.ref"), attrs.get("tag") is True, payload)
    if source := opt_str(payload, "object_attributes.source"):
        labels.append(f"trigger:{source}")
    return InboundEvent(
        **base,
        kind="pipeline_finished",
        repository=repository,
        branch=branch,
        sha=req_str(payload, "object_attributes.sha"),
        outcome=outcome,
        signals=outcome_signals(outcome),
        labels=labels,
        occurred_at=parse_time(attrs.get("finished_at")),
    )


def _job_repository(payload: dict[str, Any]) -> str | None:
    """``project.path_with_namespace`` if present, else the path of ``repository.homepage``,
    else ``project_name`` ("Group / Project") with the spaces removed."""
    if path := opt_str(payload, "project.path_with_namespace"):
        return path
    if homepage := opt_str(payload, "repository.homepage"):
        path = urlsplit(homepage).path.strip("/")
        if path:
            return path
    if name := opt_str(payload, "project_name"):
        return "/".join(part.strip() for part in name.split("/"))
    return None


def _job(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    status = req_str(payload, "build_status")
    repository = _job_repository(payload)
    outcome = _FINAL.get(status)
    if outcome is None:
        return InboundEvent(**base, kind="ignored", repository=repository, reason=f"job status {status!r} is not final")
    branch, labels = _branch(req_str(payload, "ref"), payload.get("tag") is True, payload)
    if name := opt_str(payload, "build_name"):
        labels.append(f"job:{name}")
    if stage := opt_str(payload, "build_stage"):
        labels.append(f"stage:{stage}")
    if payload.get("build_allow_failure") is True:
        labels.append("allow_failure")
    return InboundEvent(
        **base,
        kind="build_finished",
        repository=repository,
        branch=branch,
        sha=req_str(payload, "sha"),
        outcome=outcome,
        signals=outcome_signals(outcome),
        labels=labels,
        occurred_at=parse_time(get(payload, "build_finished_at")),
    )
