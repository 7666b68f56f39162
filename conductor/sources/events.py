"""The normalized output of the inbound layer: every source is turned into an ``InboundEvent``.

Signal conventions (the names gates refer to):

- ``build_green``: 1.0 when a build / pipeline / workflow / check finished with success, 0.0 when it
  failed. Cancelled, skipped and neutral outcomes give no signal (they say nothing about quality).
- ``tests_total``, ``tests_failed``, ``tests_errors``, ``tests_skipped``: counts from a test report.
- ``tests_pass_rate``: passed / (total - skipped), in 0..1, ``samples`` = executed test count;
  absent when nothing was executed.
- ``tests_flaky``: cases that failed and then passed on a retry; only present when the report makes
  retries visible.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Source = Literal["github", "gitlab", "cloudevents", "generic"]
Kind = Literal[
    "build_finished",
    "tests_finished",
    "pipeline_finished",
    "branch_created",
    "branch_push",
    "artifact_published",
    "signal",  # generic "signal" events: only carry measured values
    "ping",
    "ignored",
]
OutcomeName = Literal["success", "failure", "cancelled", "skipped", "neutral"]


def events_within_samples(events: int | None, info: ValidationInfo) -> int | None:
    """A field validator for ``events`` (declared after ``samples``): events count some of the
    samples, so they need samples and cannot exceed them. The error names the events field."""
    samples = info.data.get("samples")
    if events is not None and (samples is None or events > samples):
        raise ValueError(f"events ({events}) needs samples and cannot exceed them ({samples})")
    return events


class SignalIn(BaseModel):
    """A measured value carried by an event (validation refuses NaN and infinities)."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(min_length=1)
    value: float
    samples: int | None = Field(default=None, ge=0)
    # Of the samples, how many the value counts (crash-free sessions, ANR sessions): compare gates
    # decide from these counts rather than from the rounded value.
    events: int | None = Field(default=None, ge=0)

    @field_validator("events")
    @classmethod
    def _events_within_samples(cls, events: int | None, info: ValidationInfo) -> int | None:
        return events_within_samples(events, info)


class CommitInfo(BaseModel):
    """One commit of a push; ``author`` is the username when the source gives one, else the email;
    ``author_email`` the email when the source gives one (four-eyes compares both)."""

    sha: str
    message: str
    author: str | None = None
    author_email: str | None = None


class InboundEvent(BaseModel):
    """One authenticated delivery, normalized. ``delivery_id`` is the dedupe key."""

    source: Source
    delivery_id: str
    kind: Kind
    raw_type: str
    repository: str | None = None
    branch: str | None = None
    sha: str | None = None
    # The store build the CI run produced (Play versionCode, App Store build number), when it says.
    build: str | None = Field(default=None, pattern=r"^[0-9A-Za-z._-]{1,50}$")
    outcome: OutcomeName | None = None
    signals: list[SignalIn] = Field(default_factory=list)
    commits: list[CommitInfo] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    # A CI run's identity (GitHub workflow_run: id, name, event, path, created_at, ...), to recognise
    # a run Conductor dispatched itself.
    run: dict[str, Any] | None = None
    reason: str | None = None
    occurred_at: datetime | None = None


def outcome_signals(outcome: OutcomeName | None) -> list[SignalIn]:
    """``[build_green=1.0]`` on success, ``[build_green=0.0]`` on failure, else nothing."""
    if outcome == "success":
        return [SignalIn(name="build_green", value=1.0)]
    if outcome == "failure":
        return [SignalIn(name="build_green", value=0.0)]
    return []
