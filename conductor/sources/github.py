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
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from conductor.sources._common import (
    Flag,
    LooseStr,
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
from conductor.sources.errors import SignatureInvalid
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


# --------------------------------------------------------------------------- payload models


class Repository(Payload):
    """``repository`` of every repository event (``pushed_at``: unix seconds in push payloads, an
    ISO string elsewhere). https://docs.github.com/en/webhooks/webhook-events-and-payloads"""

    full_name: OptStr = None
    pushed_at: Timestamp = None


class GitHubEvent(Payload):
    """The parts read from every event: ``action`` (most events have one) and ``repository``.
    https://docs.github.com/en/webhooks/webhook-events-and-payloads"""

    action: LooseStr = None
    repository: OptObject[Repository] = None


class App(Payload):
    """The GitHub App behind a check suite or check run."""

    slug: OptStr = None
    name: OptStr = None


# The completed build objects: each gives the commit (head_sha), the conclusion, a branch, names
# for labels and a time.


class WorkflowRun(Payload):
    head_branch: OptStr = None
    name: OptStr = None
    updated_at: Timestamp = None
    conclusion: OptStr = None
    head_sha: ReqStr
    # What recognises a run Conductor dispatched (conductor.actions.vcs.runs.matches_dispatch).
    id: int | None = None
    display_title: OptStr = None
    event: OptStr = None
    path: OptStr = None
    workflow_id: int | None = None
    created_at: OptStr = None


class Workflow(Payload):
    name: OptStr = None


class WorkflowRunPayload(Payload):
    """``workflow_run`` event, action ``completed``.
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_run"""

    workflow_run: WorkflowRun
    workflow: OptObject[Workflow] = None


class WorkflowJob(Payload):
    head_branch: OptStr = None  # absent in payloads from before 2022
    workflow_name: OptStr = None
    name: OptStr = None
    completed_at: Timestamp = None
    conclusion: OptStr = None
    head_sha: ReqStr


class WorkflowJobPayload(Payload):
    """``workflow_job`` event, action ``completed``.
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_job"""

    workflow_job: WorkflowJob


class CheckSuite(Payload):
    head_branch: OptStr = None
    app: OptObject[App] = None
    updated_at: Timestamp = None
    conclusion: OptStr = None
    head_sha: ReqStr


class CheckSuitePayload(Payload):
    """``check_suite`` event, action ``completed``.
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#check_suite"""

    check_suite: CheckSuite


class CheckRunSuite(Payload):
    head_branch: OptStr = None


class CheckRun(Payload):
    check_suite: OptObject[CheckRunSuite] = None
    name: OptStr = None
    app: OptObject[App] = None
    completed_at: Timestamp = None
    conclusion: OptStr = None
    head_sha: ReqStr


class CheckRunPayload(Payload):
    """``check_run`` event, action ``completed``.
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#check_run"""

    check_run: CheckRun


class CommitAuthor(Payload):
    username: OptStr = None
    email: OptStr = None


class Commit(Payload):
    id: ReqStr
    message: OptStr = None
    author: OptObject[CommitAuthor] = None


def _falsy_is_empty(value: Any) -> Any:
    return value or []


class PushHead(Payload):
    """The part of a ``push`` read first: whether it updates a branch (not a tag, not a deletion)."""

    ref: ReqStr
    after: ReqStr
    deleted: Flag = False


class PushPayload(PushHead):
    """``push`` event to a branch (``commits`` absent, null or empty: no commits).
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#push"""

    created: Flag = False
    forced: Flag = False
    commits: Annotated[list[Commit], BeforeValidator(_falsy_is_empty)] = Field(default_factory=list)
    repository: OptObject[Repository] = None


class CreatePayload(Payload):
    """``create`` event (a branch or tag was created).
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#create"""

    ref_type: OptStr = None
    ref: ReqStr


class Hook(Payload):
    updated_at: Timestamp = None


class PingPayload(Payload):
    """``ping`` event, sent when a webhook is created.
    https://docs.github.com/en/webhooks/webhook-events-and-payloads#ping"""

    hook: OptObject[Hook] = None


# --------------------------------------------------------------------------- parsing


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
    common = validate(GitHubEvent, payload)
    action = common.action
    base: dict[str, Any] = {
        "source": "github",
        "delivery_id": delivery,
        "raw_type": f"{event}.{action}" if action else event,
        "repository": common.repository.full_name if common.repository else None,
    }

    if event in _BUILD_EVENTS:
        if action != "completed":
            return InboundEvent(**base, kind="ignored", reason=f"{event} action {action!r} is not 'completed'")
        return _build_event(event, payload, base)
    if event == "push":
        return _push(payload, base)
    if event == "create":
        return _create(validate(CreatePayload, payload), base)
    if event == "ping":
        hook = validate(PingPayload, payload).hook
        return InboundEvent(**base, kind="ping", occurred_at=hook.updated_at if hook else None)
    return InboundEvent(**base, kind="ignored", reason=f"unsupported GitHub event {event!r}")


_BUILD_EVENTS = frozenset({"workflow_run", "workflow_job", "check_suite", "check_run"})


def _app_label(app: App | None) -> list[str]:
    name = (app.slug or app.name) if app else None
    return [f"app:{name}"] if name else []


RUN_FIELDS = ("id", "name", "display_title", "event", "path", "workflow_id", "head_branch", "created_at")


def _build_event(event: str, payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    """A completed workflow run / workflow job / check suite / check run."""
    obj: WorkflowRun | WorkflowJob | CheckSuite | CheckRun
    labels: list[str] = []
    if event == "workflow_run":
        run_payload = validate(WorkflowRunPayload, payload)
        obj = run = run_payload.workflow_run
        branch, occurred = run.head_branch, run.updated_at
        workflow = run_payload.workflow
        if name := (workflow.name if workflow else None) or run.name:
            labels.append(f"workflow:{name}")
    elif event == "workflow_job":
        obj = job = validate(WorkflowJobPayload, payload).workflow_job
        branch, occurred = job.head_branch, job.completed_at
        if job.workflow_name:
            labels.append(f"workflow:{job.workflow_name}")
        if job.name:
            labels.append(f"job:{job.name}")
    elif event == "check_suite":
        obj = suite = validate(CheckSuitePayload, payload).check_suite
        branch, occurred = suite.head_branch, suite.updated_at
        labels += _app_label(suite.app)
    else:  # check_run
        obj = check = validate(CheckRunPayload, payload).check_run
        branch = check.check_suite.head_branch if check.check_suite else None
        occurred = check.completed_at
        if check.name:
            labels.append(f"check:{check.name}")
        labels += _app_label(check.app)
    outcome = _CONCLUSIONS.get(obj.conclusion) if obj.conclusion else None
    if event == "workflow_run":
        base = {**base, "run": run.model_dump(include=set(RUN_FIELDS), exclude_none=True)}
    return InboundEvent(
        **base,
        kind="build_finished",
        branch=strip_heads(branch),
        sha=obj.head_sha,
        outcome=outcome,
        signals=outcome_signals(outcome),
        labels=labels,
        occurred_at=occurred,
    )


def _push(payload: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    head = validate(PushHead, payload)
    if not head.ref.startswith("refs/heads/"):
        return InboundEvent(**base, kind="ignored", reason=f"push to {head.ref!r} is not a branch push")
    branch = strip_heads(head.ref)
    if head.deleted or head.after == _ZERO_SHA:
        return InboundEvent(**base, kind="ignored", branch=branch, reason=f"branch {branch!r} was deleted")
    push = validate(PushPayload, payload)
    labels = [label for label, flag in (("branch_created", push.created), ("forced", push.forced)) if flag]
    commits = [
        CommitInfo(
            sha=c.id,
            message=c.message or "",
            author=(c.author.username or c.author.email) if c.author else None,
            author_email=c.author.email if c.author else None,
        )
        for c in push.commits
    ]
    return InboundEvent(
        **base,
        kind="branch_push",
        branch=branch,
        sha=push.after,
        commits=commits,
        labels=labels,
        occurred_at=push.repository.pushed_at if push.repository else None,
    )


def _create(create: CreatePayload, base: dict[str, Any]) -> InboundEvent:
    if create.ref_type != "branch":
        kind = create.ref_type or "unknown ref type"
        return InboundEvent(**base, kind="ignored", reason=f"create of a {kind} is not handled")
    return InboundEvent(**base, kind="branch_created", branch=strip_heads(create.ref))
