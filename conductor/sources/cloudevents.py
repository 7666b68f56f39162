"""CloudEvents 1.0 over HTTP carrying CDEvents, authenticated with Standard Webhooks.

Signature: ``verify_standard_webhook`` (``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` headers; HMAC-SHA256 over ``id.timestamp.body``; several secrets for rotation).

Envelope: binary mode (``ce-specversion``, ``ce-id``, ``ce-type``, ``ce-source`` headers, body =
data) or structured mode (``Content-Type: application/cloudevents+json``, the envelope is the
body). The CDEvent (``context`` + ``subject``) is the CloudEvent's data.

CDEvent type -> kind:
``pipelinerun.finished`` -> pipeline_finished, ``build.finished`` -> build_finished,
``testsuiterun.finished`` -> tests_finished, ``artifact.published`` -> artifact_published,
``branch.created`` -> branch_created; any other type -> ignored.

What matches a run to its release is its repository and branch. The branch is taken from, in
order: the operator's declared mappings (``CDEventMapping``, CONDUCTOR_CDEVENTS_MAP),
``customData.branch`` (or ``ref``), a ``refs/heads/...`` subject id; the repository from the
subject's ``content.repository``, a declared mapping, ``customData.repository``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import string
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import quote, unquote

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from conductor.sources._common import (
    LooseStr,
    OptObject,
    OptStr,
    Payload,
    ReqStr,
    Timestamp,
    load_json,
    load_json_object,
    lower_headers,
    parse_time,
    strip_heads,
    validate,
)
from conductor.sources.errors import PayloadInvalid, SignatureInvalid
from conductor.sources.events import InboundEvent, Kind, OutcomeName, outcome_signals

TOLERANCE_SECONDS = 5 * 60  # the same window standardwebhooks enforces, both directions
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

_CDEVENT_TYPE = re.compile(r"^dev\.cdevents\.(?P<subject>[a-z]+)\.(?P<predicate>[a-z]+)\.(?P<version>\d+\.\d+\.\d+\S*)$")

_KINDS: dict[tuple[str, str], Kind] = {
    ("pipelinerun", "finished"): "pipeline_finished",
    ("build", "finished"): "build_finished",
    ("testsuiterun", "finished"): "tests_finished",
    ("artifact", "published"): "artifact_published",
    ("branch", "created"): "branch_created",
}

# CDEvents outcomes: pipelineRun / taskRun use success|error|failure, testSuiteRun / testCaseRun use
# pass|fail|cancel|error (and testcase "skip"). "error" is an infrastructure failure: still not green.
_OUTCOMES: dict[str, OutcomeName] = {
    "success": "success",
    "pass": "success",
    "passed": "success",
    "failure": "failure",
    "fail": "failure",
    "failed": "failure",
    "error": "failure",
    "cancel": "cancelled",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "skip": "skipped",
    "skipped": "skipped",
}


# --------------------------------------------------------------------------- Standard Webhooks


def standard_webhook_headers(secret: str, msg_id: str, body: bytes, timestamp: datetime | int) -> dict[str, str]:
    """The ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature`` headers a Standard
    Webhooks sender would add for ``body`` (used by tests and demo senders)."""
    ts = int(timestamp.timestamp()) if isinstance(timestamp, datetime) else int(timestamp)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body.decode("utf-8"))
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def verify_standard_webhook(secrets: list[str], body: bytes, headers: Mapping[str, str], now: datetime | None = None) -> None:
    """Authenticate a Standard Webhooks delivery against any of ``secrets`` (rotation).

    The signature is computed with ``standardwebhooks.Webhook.sign``; verification is done here
    rather than with ``Webhook.verify`` because that reads the wall clock (no injectable ``now``) and
    lets malformed headers escape as ValueError / binascii.Error. Semantics are the library's:
    the timestamp may be at most 5 minutes old or ahead of ``now`` (default: current UTC time), and
    ``webhook-signature`` may hold several space-separated ``v1,<base64>`` entries, any one of which
    may match (unknown versions such as ``v1a`` and malformed entries are skipped).

    Raises SignatureInvalid naming the header when a header is missing, the timestamp is not
    integer seconds or is outside the tolerance, the body is not UTF-8 (the library signs text), or
    no signature matches any secret; ValueError when ``secrets`` is empty or a secret is not valid ``whsec_`` base64 (configuration).
    """
    webhooks = _webhooks(secrets)
    h = lower_headers(headers)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not h.get(name):
            raise SignatureInvalid(f"missing {name} header")
    msg_id, timestamp, signature = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    if not timestamp.isascii() or not timestamp.isdigit():
        raise SignatureInvalid("webhook-timestamp is not integer unix seconds")
    ts = int(timestamp)
    now = now or datetime.now(UTC)
    now_ts = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()  # naive = UTC
    if ts < now_ts - TOLERANCE_SECONDS:
        raise SignatureInvalid("webhook-timestamp is too old (more than 5 minutes)")
    if ts > now_ts + TOLERANCE_SECONDS:
        raise SignatureInvalid("webhook-timestamp is too far in the future (more than 5 minutes)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureInvalid("body is not UTF-8, so no Standard Webhooks signature can match it") from None

    offered = []
    for entry in signature.split():
        version, sep, b64 = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            offered.append(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not offered:
        raise SignatureInvalid("webhook-signature has no v1 signature")
    when = datetime.fromtimestamp(ts, tz=UTC)
    for webhook in webhooks:
        expected = base64.b64decode(webhook.sign(msg_id, when, text).partition(",")[2])
        if any(hmac.compare_digest(expected, sig) for sig in offered):
            return
    raise SignatureInvalid("webhook-signature does not match the body for any configured secret")


def _webhooks(secrets: list[str]) -> list[Webhook]:
    if not secrets:
        raise ValueError("no Standard Webhooks secret configured")
    out = []
    for i, secret in enumerate(secrets):
        try:
            out.append(Webhook(secret))
        except (EmptyWebhookSecretError, ValueError, RuntimeError) as exc:  # ValueError: binascii.Error
            raise ValueError(f"Standard Webhooks secret #{i} is invalid: {type(exc).__name__}") from None
    return out


# --------------------------------------------------------------------------- payload models


class StructuredEnvelope(Payload):
    """A structured-mode CloudEvent: the attributes and the data in one JSON object (``data`` or,
    for binary data, ``data_base64``; the time is informative, so a malformed one is dropped).
    https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md#3-envelope"""

    specversion: ReqStr
    id: ReqStr
    source: ReqStr
    type: ReqStr
    time: LooseStr = None
    data_base64: ReqStr | None = None
    data: Any = None

    @field_validator("data_base64", mode="before")
    @classmethod
    def _present_means_data(cls, value: Any) -> Any:
        if value is None:  # a data_base64 member, when sent, is the data: null is not "no data"
            raise PydanticCustomError("data_base64_null", "data_base64 is null")
        return value


def _repository_id(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    ident = value.get("id") if isinstance(value, dict) else None
    if isinstance(ident, str) and ident:
        return ident
    return None


RepositoryRef = Annotated[str | None, BeforeValidator(_repository_id)]
"""CDEvents reference a repository as ``{"id": ..., "source": ...}`` (or, older, a plain string);
anything else counts as no repository."""


class CDEventContext(Payload):
    """https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/spec.md#cdevent-context"""

    type: ReqStr
    timestamp: Timestamp = None


class Content(Payload):
    """What Conductor reads from any subject's content: an outcome and a repository reference.
    Used as is for ``artifact.published`` and ``branch.created``:
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/continuous-integration.md#artifact-published
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/source-code-version-control.md#branch-created
    """

    outcome: OptStr = None
    repository: RepositoryRef = None


class RunContent(Content):
    """Content of ``pipelineRun.finished`` (``pipelineName``) and ``build.finished`` (``artifactId``);
    either field is read from both.
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/core.md#pipelinerun-finished
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/continuous-integration.md#build-finished
    """

    pipelineName: OptStr = None
    artifactId: OptStr = None


class TestSuite(Payload):
    name: OptStr = None


class Environment(Payload):
    id: OptStr = None


class TestSuiteRunContent(Content):
    """Content of ``testSuiteRun.finished``.
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/testing-events.md#testsuiterun-finished
    """

    testSuite: OptObject[TestSuite] = None
    environment: OptObject[Environment] = None


C = TypeVar("C", bound=Content)


def _null_is_empty(value: Any) -> Any:
    return {} if value is None else value


class CDEventSubject(Payload, Generic[C]):
    """``content`` may be absent or null (no content), otherwise must be an object.
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/spec.md#cdevent-subject"""

    id: ReqStr
    content: Annotated[C, BeforeValidator(_null_is_empty)] = Field(default=None, validate_default=True)


class CDEvent(Payload, Generic[C]):
    """A CDEvent (the CloudEvent's data), with the content model of its subject type.
    https://github.com/cdevents/spec/blob/8917b1843528f0d28402db2dedc0673243437eb7/spec.md"""

    context: CDEventContext
    subject: CDEventSubject[C]
    # Free-form data the producer adds (CDEvents spec, "customData"); Conductor reads `branch` (or
    # `ref`) and `sha` from it, so a run on a release branch can be matched to its release.
    customData: Any = None


_MODELS: dict[Kind, type[CDEvent[Any]]] = {
    "pipeline_finished": CDEvent[RunContent],
    "build_finished": CDEvent[RunContent],
    "tests_finished": CDEvent[TestSuiteRunContent],
    "artifact_published": CDEvent[Content],
    "branch_created": CDEvent[Content],
}


# --------------------------------------------------------------------------- envelopes


def _ce_header_value(value: str) -> str:
    """Percent-encode a CloudEvents HTTP header value (space, '"', '%' and non-printable/non-ASCII)."""
    return quote(value, safe="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%'))


def cloudevent_structured(cdevent: dict[str, Any]) -> bytes:
    """Wrap a bare CDEvent in a structured-mode CloudEvents 1.0 JSON envelope.

    CE ``id`` / ``source`` / ``type`` / ``time`` are the CDEvent's ``context`` values. Send it with
    ``Content-Type: application/cloudevents+json``.
    """
    ctx = cdevent["context"]
    envelope = {
        "specversion": "1.0",
        "id": ctx["id"],
        "source": ctx["source"],
        "type": ctx["type"],
        "datacontenttype": "application/json",
        "data": cdevent,
    }
    if ctx.get("timestamp"):
        envelope["time"] = ctx["timestamp"]
    return json.dumps(envelope).encode()


def cloudevent_binary_headers(cdevent: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """Binary-mode CloudEvents 1.0: the ``ce-*`` headers (plus Content-Type) and the body (the CDEvent)."""
    ctx = cdevent["context"]
    headers = {
        "ce-specversion": "1.0",
        "ce-id": _ce_header_value(ctx["id"]),
        "ce-source": _ce_header_value(ctx["source"]),
        "ce-type": _ce_header_value(ctx["type"]),
        "Content-Type": "application/json",
    }
    if ctx.get("timestamp"):
        headers["ce-time"] = _ce_header_value(ctx["timestamp"])
    return headers, json.dumps(cdevent).encode()


def _content_type(h: Mapping[str, str]) -> str:
    return h.get("content-type", "").split(";", 1)[0].strip().lower()


def _envelope(h: dict[str, str], body: bytes) -> tuple[dict[str, str], Any]:
    """(attributes, data) from either mode. Raises PayloadInvalid naming the attribute."""
    ctype = _content_type(h)
    if ctype == STRUCTURED_CONTENT_TYPE:
        env = validate(StructuredEnvelope, load_json_object(body))
        attrs = {"specversion": env.specversion, "id": env.id, "source": env.source, "type": env.type}
        if env.time:
            attrs["time"] = env.time
        if env.data_base64 is None:
            return attrs, env.data
        try:
            raw = base64.b64decode(env.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadInvalid("not valid base64", field="data_base64") from None
        return attrs, load_json(raw, field="data_base64")
    if ctype.startswith("application/cloudevents"):
        raise PayloadInvalid(f"unsupported CloudEvents content type {ctype!r} (batch mode is not accepted)", field="Content-Type")
    if "ce-specversion" not in h:
        raise PayloadInvalid(
            "neither binary mode (ce-specversion header) nor structured mode (application/cloudevents+json)",
            field="ce-specversion",
        )
    attrs = {}
    for name in ("specversion", "id", "source", "type"):
        value = unquote(h.get(f"ce-{name}", ""))
        if not value:
            raise PayloadInvalid(f"missing header ce-{name}", field=f"ce-{name}")
        attrs[name] = value
    if "ce-time" in h:
        attrs["time"] = unquote(h["ce-time"])
    data = load_json(body) if body.strip() else None
    return attrs, data


class CDEventMapping(BaseModel):
    """Where a producer puts a run's branch (or repository), declared by the operator
    (CONDUCTOR_CDEVENTS_MAP, a JSON list of these), for producers that neither put it in
    ``customData`` nor use a branch ref as the subject id (Tekton names the PipelineRun).

    ``field``: ``branch`` (the default) or ``repository`` (``owner/name`` as the track names it).

    ``path``: a dotted path into the CDEvent (the CloudEvent's data), e.g. ``customData.git.branch``
    or ``subject.content.pipelineName``. ``pattern``: a regular expression the whole value must
    match (``re.fullmatch``); without ``branch`` the branch is its first group (or the whole value
    when it has none). ``value``: a template of the pattern's named groups, e.g.
    ``release/{version}`` for ``android-release-(?P<version>[0-9.]+)``. ``types``: the CDEvent
    types (``pipelinerun.finished``, ...) it applies to; empty: all. A value that is missing, not a
    string or does not match gives nothing and the next mapping (then the built-in places) is tried.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: Literal["branch", "repository"] = "branch"
    path: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
    pattern: re.Pattern[str] | None = None
    value: str | None = Field(default=None, min_length=1)
    types: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _template_names_groups(self) -> CDEventMapping:
        if self.value is None:
            return self
        if self.pattern is None:
            raise ValueError("value (a template) needs a pattern whose named groups it uses")
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"value template {self.value!r}: {exc}") from None
        unknown = sorted(n for n in names if n not in self.pattern.groupindex)
        if unknown:
            raise ValueError(f"value template {self.value!r} names {', '.join(unknown)}, which the pattern has no named group for")
        return self

    def find(self, cdevent: Any, cd_type: str) -> str | None:
        """What this mapping finds in `cdevent` (the data object) of type `cd_type`
        (``subject.predicate``), or None."""
        if self.types and cd_type not in self.types:
            return None
        value: Any = cdevent
        for part in self.path.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        if not isinstance(value, str) or not value.strip():
            return None
        value = value.strip()
        if self.pattern is not None:
            match = self.pattern.fullmatch(value)
            if match is None:
                return None
            if self.value is not None:
                value = self.value.format(**{k: v or "" for k, v in match.groupdict().items()})
            elif match.groups():
                value = match.group(1) or ""
        if not value or len(value) > 255:
            return None
        return strip_heads(value) if self.field == "branch" else value


def parse_cloudevent(headers: Mapping[str, str], body: bytes, mappings: Sequence[CDEventMapping] = ()) -> InboundEvent:
    """Normalize a CloudEvent carrying a CDEvent (authenticate with ``verify_standard_webhook`` first).

    The dedupe key is the ``webhook-id`` header, falling back to the CloudEvent ``id``.
    Raises PayloadInvalid when: the request is in neither mode (field ``ce-specversion``); a required
    attribute is missing (``ce-id`` ... in binary mode, ``id`` ... in structured mode);
    ``specversion`` is not 1.0; the JSON is malformed (``body``); a CDEvents type has no object data
    (``data``), its ``data.context.type`` differs from the CE type, or a needed field is missing
    (its dotted path under ``data``). Non-CDEvents types and unhandled CDEvents come back ``ignored``.
    `mappings`: the operator's declared places of a run's branch or repository.
    """
    h = lower_headers(headers)
    attrs, data = _envelope(h, body)
    if attrs["specversion"] != "1.0":
        raise PayloadInvalid(f"unsupported CloudEvents specversion {attrs['specversion']!r}", field="specversion")
    ce_type = attrs["type"]
    base: dict[str, Any] = {
        "source": "cloudevents",
        "delivery_id": h.get("webhook-id") or attrs["id"],
        "raw_type": ce_type,
        "occurred_at": parse_time(attrs.get("time")),
    }
    match = _CDEVENT_TYPE.match(ce_type)
    if match is None:
        return InboundEvent(**base, kind="ignored", reason=f"CloudEvent type {ce_type!r} is not a CDEvent")
    kind = _KINDS.get((match["subject"], match["predicate"]))
    if kind is None:
        return InboundEvent(**base, kind="ignored", reason=f"CDEvent {match['subject']}.{match['predicate']} is not handled")
    cd_type = f"{match['subject']}.{match['predicate']}"
    declared = {
        name: next((v for m in mappings if m.field == name and (v := m.find(data, cd_type))), None) for name in ("branch", "repository")
    }
    return _cdevent(kind, ce_type, data, base, declared)


def _branch_of(custom: Any, subject_id: str) -> str | None:
    """The branch a pipeline run, build or test run was on: `customData.branch` (or `ref`), else a
    subject id that is a branch ref (refs/heads/release/8.9.0). None when neither says."""
    if isinstance(custom, dict):
        for key in ("branch", "ref"):
            value = custom.get(key)
            if isinstance(value, str) and value.strip() and len(value) <= 255:
                return strip_heads(value.strip())
    if subject_id.startswith("refs/heads/"):
        return strip_heads(subject_id)
    return None


def _cdevent(kind: Kind, ce_type: str, data: Any, base: dict[str, Any], declared: dict[str, str | None]) -> InboundEvent:
    event = validate(_MODELS[kind], data, prefix="data")
    if event.context.type != ce_type:
        raise PayloadInvalid(
            f"CDEvent type {event.context.type!r} differs from the CloudEvent type {ce_type!r}",
            field="data.context.type",
        )
    if event.context.timestamp:
        base["occurred_at"] = event.context.timestamp

    subject, content = event.subject, event.subject.content
    outcome = _OUTCOMES.get(content.outcome.lower()) if content.outcome else None
    labels: list[str] = []
    branch = None
    signals = []
    if isinstance(content, RunContent):  # pipeline_finished, build_finished
        signals = outcome_signals(outcome)
        if content.pipelineName:
            labels.append(f"pipeline:{content.pipelineName}")
        if content.artifactId:
            labels.append(f"artifact:{content.artifactId}")
    elif isinstance(content, TestSuiteRunContent):  # tests_finished
        if content.testSuite and content.testSuite.name:
            labels.append(f"suite:{content.testSuite.name}")
        if content.environment and content.environment.id:
            labels.append(f"env:{content.environment.id}")
    elif kind == "artifact_published":
        labels.append(f"artifact:{subject.id}")
    elif kind == "branch_created":
        branch = strip_heads(subject.id)
    branch = branch or declared["branch"] or _branch_of(event.customData, subject.id)
    custom = event.customData if isinstance(event.customData, dict) else {}
    sha = custom.get("sha") if isinstance(custom.get("sha"), str) and 0 < len(custom["sha"]) <= 64 else None
    custom_repository = _repository_id(custom.get("repository"))
    if custom_repository is not None and len(custom_repository) > 255:
        custom_repository = None
    repository = content.repository or declared["repository"] or custom_repository
    return InboundEvent(
        **base,
        kind=kind,
        repository=repository,
        branch=branch,
        sha=sha,
        outcome=outcome,
        signals=signals,
        labels=labels,
    )
