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
    Flag,
    OptObject,
    OptStr,
    Payload,
    ReqStr,
    Timestamp,
    load_json_object,
    lower_headers,
    require_header,
    strip_heads,
    validate,
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


# --------------------------------------------------------------------------- payload models


class Project(Payload):
    path_with_namespace: OptStr = None


class MergeRequest(Payload):
    source_branch: OptStr = None


class GitLabEvent(Payload):
    """What is read from an event Conductor does not handle: the project, for the record.
    https://docs.gitlab.com/user/project/integrations/webhook_events/"""

    project: OptObject[Project] = None


class PipelineState(Payload):
    status: ReqStr


class PipelineAttributes(PipelineState):
    ref: ReqStr
    tag: Flag = False
    source: OptStr = None
    sha: ReqStr
    finished_at: Timestamp = None


class PipelineHead(Payload):
    """The part of a ``Pipeline Hook`` read first: the status decides whether the rest is needed."""

    project: OptObject[Project] = None
    object_attributes: PipelineState


class PipelinePayload(PipelineHead):
    """``Pipeline Hook`` with a final status.
    https://docs.gitlab.com/user/project/integrations/webhook_events/#pipeline-events"""

    object_attributes: PipelineAttributes
    merge_request: OptObject[MergeRequest] = None


class JobRepository(Payload):
    homepage: OptStr = None


class JobHead(Payload):
    """The part of a ``Job Hook`` read first: the status decides whether the rest is needed."""

    build_status: ReqStr
    project: OptObject[Project] = None  # missing in older GitLab versions
    repository: OptObject[JobRepository] = None
    project_name: OptStr = None


class JobPayload(JobHead):
    """``Job Hook`` with a final status (a flat object: ``build_*`` fields).
    https://docs.gitlab.com/user/project/integrations/webhook_events/#job-events"""

    ref: ReqStr
    tag: Flag = False
    merge_request: OptObject[MergeRequest] = None
    build_name: OptStr = None
    build_stage: OptStr = None
    build_allow_failure: Flag = False
    sha: ReqStr
    build_finished_at: Timestamp = None


# --------------------------------------------------------------------------- parsing


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
        repository=_project_path(validate(GitLabEvent, payload).project),
        reason=f"unsupported GitLab event {event!r}",
    )


def _project_path(project: Project | None) -> str | None:
    return project.path_with_namespace if project else None


def _branch(ref: str, is_tag: bool, merge_request: MergeRequest | None) -> tuple[str | None, list[str]]:
    """Branch name and extra labels for a ref: tags are not branches; MR refs use the source branch."""
    if is_tag:
        return None, [f"tag:{ref}"]
    if ref.startswith("refs/merge-requests/"):
        return (merge_request.source_branch if merge_request else None), ["merge_request"]
    return strip_heads(ref), []


def _pipeline(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    head = validate(PipelineHead, payload)
    repository = _project_path(head.project)
    status = head.object_attributes.status
    outcome = _FINAL.get(status)
    if outcome is None:
        return InboundEvent(**base, kind="ignored", repository=repository, reason=f"pipeline status {status!r} is not final")
    pipeline = validate(PipelinePayload, payload)
    attrs = pipeline.object_attributes
    branch, labels = _branch(attrs.ref, attrs.tag, pipeline.merge_request)
    if attrs.source:
        labels.append(f"trigger:{attrs.source}")
    return InboundEvent(
        **base,
        kind="pipeline_finished",
        repository=repository,
        branch=branch,
        sha=attrs.sha,
        outcome=outcome,
        signals=outcome_signals(outcome),
        labels=labels,
        occurred_at=attrs.finished_at,
    )


def _job_repository(job: JobHead) -> str | None:
    """``project.path_with_namespace`` if present, else the path of ``repository.homepage``,
    else ``project_name`` ("Group / Project") with the spaces removed."""
    if path := _project_path(job.project):
        return path
    if job.repository and job.repository.homepage:
        path = urlsplit(job.repository.homepage).path.strip("/")
        if path:
            return path
    if job.project_name:
        return "/".join(part.strip() for part in job.project_name.split("/"))
    return None


def _job(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    head = validate(JobHead, payload)
    repository = _job_repository(head)
    outcome = _FINAL.get(head.build_status)
    if outcome is None:
        reason = f"job status {head.build_status!r} is not final"
        return InboundEvent(**base, kind="ignored", repository=repository, reason=reason)
    job = validate(JobPayload, payload)
    branch, labels = _branch(job.ref, job.tag, job.merge_request)
    if job.build_name:
        labels.append(f"job:{job.build_name}")
    if job.build_stage:
        labels.append(f"stage:{job.build_stage}")
    if job.build_allow_failure:
        labels.append("allow_failure")
    return InboundEvent(
        **base,
        kind="build_finished",
        repository=repository,
        branch=branch,
        sha=job.sha,
        outcome=outcome,
        signals=outcome_signals(outcome),
        labels=labels,
        occurred_at=job.build_finished_at,
    )
