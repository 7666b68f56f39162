"""Stored rows as the read model sees them: frozen dataclasses with the columns' names.

Each is built from a Core row (`Record(**row._mapping)`), never from an ORM object, so what the
API, the CLI and the dashboard show cannot change under them or write anything back.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, Table


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    id: int
    track_id: str
    version: str
    stage: str
    definition_hash: str
    entered_stage_at: datetime
    branch: str | None
    head_sha: str | None
    build: str | None
    paused: bool
    pause_reason: str | None
    pending_evaluation_id: int | None
    rejected_fingerprint: str | None
    halted_from: str | None
    unreviewed_commits: list[Any]
    commits_since_approval: list[Any]
    created_at: datetime
    updated_at: datetime
    version_id: int

    @property
    def key(self) -> str:
        return f"{self.track_id}/{self.version}"


@dataclass(frozen=True, slots=True)
class EvaluationInfo:
    """A stored judgement (what the API calls a decision, the dashboard a decision card)."""

    id: int
    release_id: int
    stage: str
    transition: str
    verdict: str
    fingerprint: str
    evidence: dict[str, Any]
    trigger: str
    created_at: datetime

    @property
    def target(self) -> str | None:
        return self.evidence.get("target")

    # `evidence` is the JSON `Decision.evidence()` wrote: summary is text, gates a list of objects.
    @property
    def summary(self) -> str:
        summary: str = self.evidence.get("summary", "")
        return summary

    @property
    def gates(self) -> list[dict[str, Any]]:
        gates: list[dict[str, Any]] = self.evidence.get("gates", [])
        return gates


@dataclass(frozen=True, slots=True)
class AuditInfo:
    id: int
    release_id: int | None
    track_id: str | None
    at: datetime
    actor: str
    kind: str
    from_stage: str | None
    to_stage: str | None
    reason: str
    evaluation_id: int | None
    event_id: int | None
    data: dict[str, Any]

    @property
    def decision_id(self) -> int | None:
        return self.evaluation_id


@dataclass(frozen=True, slots=True)
class ActionInfo:
    id: int
    release_id: int
    idempotency_key: str
    action: str
    params: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    done_at: datetime | None
    result: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TimerInfo:
    id: int
    release_id: int
    key: str
    kind: str
    due_at: datetime
    fired_at: datetime | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TrackInfo:
    id: str
    definition_name: str
    repository: str | None
    branch_pattern: str
    critical_fix_marker: str
    four_eyes: bool
    settings: dict[str, Any]
    created_at: datetime

    @property
    def definition(self) -> str:
        return self.definition_name

    @property
    def secrets(self) -> list[str]:
        """Which per-track secrets are set (never their values)."""
        return sorted(k for k, v in (self.settings or {}).items() if k.endswith(("_secret", "_token")) and v)


@dataclass(frozen=True, slots=True)
class EventInfo:
    """An inbound event as the inbox holds it (without its payload)."""

    id: int
    source: str
    delivery_id: str
    kind: str
    status: str
    note: str | None
    release_id: int | None
    received_at: datetime
    processed_at: datetime | None


@dataclass(frozen=True, slots=True)
class SignalInfo:
    id: int
    release_id: int
    name: str
    value: float | None
    samples: int | None
    source: str
    sha: str | None
    error: str | None
    actor: str | None
    event_id: int | None
    observed_at: datetime
    recorded_at: datetime


def columns(record: type, table: Table) -> list[Any]:
    """The table's columns a record type holds, in its field order (for select(*columns(...)))."""
    return [table.c[f.name] for f in fields(record)]


R = TypeVar("R")


def build(record: type[R], row: Row[Any]) -> R:
    return record(**row._mapping)
