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
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from conductor.sources._common import (
    get,
    load_json,
    load_json_object,
    lower_headers,
    opt_str,
    parse_time,
    req_dict,
    req_str,
    strip_heads,
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


def verify_standard_webhook(
    secrets: list[str], body: bytes, headers: Mapping[str, str], now: datetime | None = None
) -> None:
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
        env = load_json_object(body)
        attrs: dict[str, str] = {}
        for name in ("specversion", "id", "source", "type"):
            attrs[name] = req_str(env, name)
        if time := env.get("time"):
            attrs["time"] = str(time)
        if "data_base64" in env:
            b64 = req_str(env, "data_base64")
            try:
                raw = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise PayloadInvalid("not valid base64", field="data_base64") from None
            data = load_json(raw, field="data_base64")
        else:
            data = env.get("data")
        return attrs, data
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


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> InboundEvent:
    """Normalize a CloudEvent carrying a CDEvent (authenticate with ``verify_standard_webhook`` first).

    The dedupe key is the ``webhook-id`` header, falling back to the CloudEvent ``id``.
    Raises PayloadInvalid when: the request is in neither mode (field ``ce-specversion``); a required
    attribute is missing (``ce-id`` ... in binary mode, ``id`` ... in structured mode);
    ``specversion`` is not 1.0; the JSON is malformed (``body``); a CDEvents type has no object data
    (``data``), its ``data.context.type`` differs from the CE type, or a needed field is missing
    (its dotted path under ``data``). Non-CDEvents types and unhandled CDEvents come back ``ignored``.
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
    if not isinstance(data, dict):
        raise PayloadInvalid("CDEvent data must be a JSON object", field="data")
    return _cdevent(kind, ce_type, data, base)


def _cdevent(kind: Kind, ce_type: str, data: dict[str, Any], base: dict[str, Any]) -> InboundEvent:
    req_dict(data, "context")
    ctx_type = req_str(data, "context.type")
    if ctx_type != ce_type:
        raise PayloadInvalid(f"CDEvent type {ctx_type!r} differs from the CloudEvent type {ce_type!r}", field="data.context.type")
    req_dict(data, "subject")
    subject_id = _data_str(data, "subject.id", required=True)
    content = get(data, "subject.content", {})
    if not isinstance(content, dict):
        raise PayloadInvalid("expected an object", field="data.subject.content")
    if occurred := parse_time(get(data, "context.timestamp")):
        base["occurred_at"] = occurred

    raw_outcome = _data_str(data, "subject.content.outcome")
    outcome = _OUTCOMES.get(raw_outcome.lower()) if raw_outcome else None
    repository = _repository(content)
    labels: list[str] = []
    branch = None
    signals = []
    if kind in ("pipeline_finished", "build_finished"):
        signals = outcome_signals(outcome)
        if name := _data_str(data, "subject.content.pipelineName"):
            labels.append(f"pipeline:{name}")
        if artifact := _data_str(data, "subject.content.artifactId"):
            labels.append(f"artifact:{artifact}")
    elif kind == "tests_finished":
        if suite := _data_str(data, "subject.content.testSuite.name"):
            labels.append(f"suite:{suite}")
        if env := _data_str(data, "subject.content.environment.id"):
            labels.append(f"env:{env}")
    elif kind == "artifact_published":
        labels.append(f"artifact:{subject_id}")
    elif kind == "branch_created":
        branch = strip_heads(subject_id)
    return InboundEvent(
        **base,
        kind=kind,
        repository=repository,
        branch=branch,
        outcome=outcome,
        signals=signals,
        labels=labels,
    )


def _data_str(data: dict[str, Any], path: str, required: bool = False) -> str | None:
    """A string under the CDEvent; errors name the path as ``data.<path>``."""
    try:
        return req_str(data, path) if required else opt_str(data, path)
    except PayloadInvalid as exc:
        raise PayloadInvalid(exc.detail, field=f"data.{path}") from None


def _repository(content: dict[str, Any]) -> str | None:
    """CDEvents reference a repository as ``{"id": ..., "source": ...}`` (or, older, a plain string)."""
    repo = content.get("repository")
    if isinstance(repo, str) and repo:
        return repo
    if isinstance(repo, dict) and isinstance(repo.get("id"), str) and repo["id"]:
        return repo["id"]
    return None
