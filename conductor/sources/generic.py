"""Generic JSON events for any CI or monitoring tool, authenticated with Standard Webhooks.

The body is a ``GenericEvent`` (``generic_json_schema()`` gives its JSON Schema to publish)::

    {"type": "build.finished", "id": "run-4711", "repository": "acme/app", "branch": "main",
     "sha": "3484a3f", "outcome": "success",
     "signals": [{"name": "crash_free_rate", "value": 0.998, "samples": 12000}]}

- ``build.finished`` -> kind ``build_finished``; ``outcome`` is required and gives ``build_green``
  unless the sender already included a ``build_green`` signal.
- ``tests.finished`` -> ``tests_finished``; needs an ``outcome`` or at least one signal.
- ``signal`` -> ``signal``; needs at least one signal.

Dedupe key: the ``webhook-id`` header, else the body's ``id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conductor.sources._common import (
    load_json_object,
    lower_headers,
    strip_heads,
    validate,
)
from conductor.sources.cloudevents import verify_standard_webhook
from conductor.sources.errors import PayloadInvalid
from conductor.sources.events import (
    InboundEvent,
    Kind,
    OutcomeName,
    SignalIn,
    events_within_samples,
    outcome_signals,
)

__all__ = ["GenericEvent", "GenericSignal", "generic_json_schema", "parse_generic", "verify_generic"]

verify_generic = verify_standard_webhook
"""Generic events are signed like CloudEvents deliveries: Standard Webhooks (see there)."""


class GenericSignal(BaseModel):
    """One measured value: ``name`` as declared in the pipeline definition, a finite ``value``,
    optionally how many ``samples`` it was computed from, and of those how many ``events`` the
    value counts (crash-free sessions, ANR sessions: compare gates decide from the counts)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200)
    value: float
    samples: int | None = Field(default=None, ge=0)
    events: int | None = Field(default=None, ge=0)

    _events_within_samples = field_validator("events")(events_within_samples)


class GenericEvent(BaseModel):
    """A build, test or signal report from any tool. Unknown fields are refused (catches typos)."""

    model_config = ConfigDict(
        extra="forbid",
        title="Conductor generic event",
    )

    type: Literal["build.finished", "tests.finished", "signal"]
    id: str | None = Field(default=None, min_length=1, description="Dedupe key when no webhook-id header is sent")
    repository: str | None = Field(default=None, description='"owner/name"')
    branch: str | None = Field(default=None, description="Branch name; a refs/heads/ prefix is stripped")
    sha: str | None = Field(default=None, description="Commit the event measured")
    build: str | None = Field(
        default=None, pattern=r"^[0-9A-Za-z._-]{1,50}$", description="The store build a build.finished produced (versionCode, build number)"
    )
    outcome: OutcomeName | None = None
    signals: list[GenericSignal] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    occurred_at: datetime | None = None


_KINDS: dict[str, Kind] = {"build.finished": "build_finished", "tests.finished": "tests_finished", "signal": "signal"}


def generic_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``GenericEvent`` (to publish for integrators)."""
    return GenericEvent.model_json_schema()


def parse_generic(headers: Mapping[str, str], body: bytes) -> InboundEvent:
    """Validate and normalize a generic event (authenticate with ``verify_generic`` first).

    Raises PayloadInvalid with ``field`` = the dotted path of the first invalid field (from the
    pydantic error location, e.g. ``signals.0.value``), ``"body"`` for malformed JSON, ``"outcome"``
    for a build without outcome, ``"signals"`` for a signal event without signals, and ``"id"``
    when neither a ``webhook-id`` header nor a body ``id`` gives a dedupe key.
    """
    h = lower_headers(headers)
    event = validate(GenericEvent, load_json_object(body))

    delivery = h.get("webhook-id") or event.id
    if not delivery:
        raise PayloadInvalid("no webhook-id header and no id in the body", field="id")
    if event.type == "build.finished" and event.outcome is None:
        raise PayloadInvalid("build.finished needs an outcome", field="outcome")
    if event.type == "tests.finished" and event.outcome is None and not event.signals:
        raise PayloadInvalid("tests.finished needs an outcome or signals", field="signals")
    if event.type == "signal" and not event.signals:
        raise PayloadInvalid("a signal event needs at least one signal", field="signals")

    signals = [SignalIn(name=s.name, value=s.value, samples=s.samples, events=s.events) for s in event.signals]
    if event.type == "build.finished" and not any(s.name == "build_green" for s in signals):
        signals = outcome_signals(event.outcome) + signals
    return InboundEvent(
        source="generic",
        delivery_id=delivery,
        kind=_KINDS[event.type],
        raw_type=event.type,
        repository=event.repository,
        branch=strip_heads(event.branch),
        sha=event.sha,
        build=event.build,
        outcome=event.outcome,
        signals=signals,
        labels=event.labels,
        occurred_at=_utc(event.occurred_at),
    )


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC; a timestamp without offset is taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
