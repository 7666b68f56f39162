"""What every outbound action adapter takes and returns, and how it says it failed.

The relay (conductor.service.outbox) builds one `ActionRequest` per outbox row and hands it to
an adapter; the adapter does the I/O and returns an `ActionOutcome` or raises `ActionFailed`.
Adapters never touch the database: what they report is recorded by the relay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from conductor.domain.errors import ConductorError


@dataclass(frozen=True)
class ReleaseRef:
    """The release an action is about, as the receiving system sees it."""

    id: int
    track: str
    version: str
    stage: str
    branch: str | None = None
    head_sha: str | None = None
    build: str | None = None  # the store build (versionCode, build number), when known

    @property
    def key(self) -> str:
        return f"{self.track}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "track": self.track,
            "version": self.version,
            "stage": self.stage,
            "branch": self.branch,
            "head_sha": self.head_sha,
            "build": self.build,
        }


@dataclass(frozen=True)
class ActionRequest:
    """One attempt at one outbox row. `idempotency_key` is stable across attempts: receivers dedupe on it."""

    action: str
    params: dict[str, Any]
    idempotency_key: str
    attempt: int
    release: ReleaseRef
    # Channels (for notify) that already took this action in an earlier attempt: not sent again.
    delivered: tuple[str, ...] = ()


@dataclass
class ActionOutcome:
    """done: the external system took it; skipped: nothing is configured to do it (reason says what)."""

    status: Literal["done", "skipped"]
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)


class ActionFailed(ConductorError):
    """An action attempt failed; `retryable` says whether trying again later can help, and
    `retry_after` (seconds) how long the other side asked us to wait (a 429's Retry-After)."""

    def __init__(self, message: str, *, retryable: bool = True, delivered: tuple[str, ...] = (), retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.delivered = delivered  # channels that did succeed in this attempt
        self.retry_after = retry_after


class ActionAdapter(Protocol):
    """Performs one kind of action against an external system."""

    def run(self, request: ActionRequest) -> ActionOutcome:
        """Do it (idempotently, keyed by request.idempotency_key); raise ActionFailed when it did not happen."""
