"""Request and response models of the HTTP API, separate from the tables.

Request models forbid unknown fields, so a body cannot set what the server owns (stage, status,
actor, timestamps, version). Every string is bounded and free of NUL characters, so nothing a
client sends can fail in the database instead of in validation.

Response models are read from the read model's frozen dataclasses (conductor.read) by attribute
(`Response.model_validate(snapshot)`), never from database rows: a field here is the attribute of
the same name there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import JsonDict

from conductor.domain.definition import parse_duration
from conductor.sources.events import events_within_samples

MAX_INT = 2**31 - 1
# Identifiers: letters, digits and . _ - (no slash: "track/version" is how releases are named).
TrackId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
DefinitionName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ReleaseVersion = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")]
StageName = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")]
Repository = Annotated[str, StringConstraints(min_length=3, max_length=200, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")]
SignalName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:/-]+$")]
TeamName = Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")]
Sha = Annotated[str, StringConstraints(min_length=4, max_length=64, pattern=r"^[0-9a-fA-F]+$")]
Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
# Free text: anything printable but NUL (PostgreSQL refuses NUL in text), at least one visible character.
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")]
OptionalText = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
BranchPattern = Annotated[str, StringConstraints(min_length=9, max_length=140, pattern=r"^[^\x00\s{}]*\{version\}[^\x00\s{}]*$")]
Marker = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")]
Secret = Annotated[str, StringConstraints(max_length=500, pattern=r"^[\x21-\x7e]*$")]
Version = Annotated[int, Field(ge=1, le=MAX_INT, description="The release's `version` you last read; 409 if it changed since")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ------------------------------------------------------------------ tracks


class TrackSecrets(Request):
    """Webhook secrets for this track's repository; tried after the global ones. null or "" removes one."""

    github_secret: Secret | None = Field(default=None, description="X-Hub-Signature-256 HMAC secret")
    gitlab_token: Secret | None = Field(default=None, description="X-Gitlab-Token shared token")
    webhook_secret: Secret | None = Field(default=None, description="Standard Webhooks secret, whsec_ + base64")


class TrackCreate(Request):
    id: TrackId
    definition: DefinitionName = Field(description="Name of a pipeline definition")
    repository: Repository | None = Field(default=None, description="owner/name; webhooks are matched by it")
    branch_pattern: BranchPattern = "release/{version}"
    critical_fix_marker: Marker = "Release-Fix: critical"
    four_eyes: bool = False
    secrets: TrackSecrets | None = None


def _no_default(schema: JsonDict) -> None:
    """Leave `default: null` out of a field's JSON schema: null there means "not sent", not a value."""
    schema.pop("default", None)


class TrackUpdate(Request):
    """Only the fields sent change; `repository: null` detaches the track from webhooks."""

    repository: Repository | None = None
    branch_pattern: BranchPattern = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    critical_fix_marker: Marker = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    four_eyes: bool = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    secrets: TrackSecrets | None = None


ConnectionKey = Literal["store", "vcs", "flags"]


class ConnectionOut(BaseModel):
    track: str
    connection: ConnectionKey
    described: str | None = Field(description="What is connected, credentials by reference only; null when disconnected")


class ConnectionCheck(BaseModel):
    track: str
    connection: ConnectionKey
    ok: bool
    detail: str = Field(description="What the credentials can see, or why they do not work")


class SourcesOut(BaseModel):
    track: str
    sources: list[dict[str, Any]] = Field(description="Each source: name, kind, interval, the signals it produces")


class TrackOut(Response):
    id: str
    definition: str
    repository: str | None
    branch_pattern: str
    critical_fix_marker: str
    four_eyes: bool
    secrets: list[str] = Field(description="Which per-track secrets are set (never their values)")
    created_at: datetime


# ------------------------------------------------------------------ releases


class ReleaseCreate(Request):
    track: TrackId
    release_version: ReleaseVersion = Field(description='The app version, e.g. "9.1.0"')


class GateOut(Response):
    gate: str
    outcome: str = Field(description="pass, fail, inconclusive or no_data")
    reason: str | None = None
    detail: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    ages_s: dict[str, float] = Field(default_factory=dict)


class DecisionOut(Response):
    id: int
    release_id: int
    stage: str
    transition: str
    target: str | None
    verdict: str = Field(description="advance, wait, ask, hold or halt")
    summary: str
    fingerprint: str = Field(description="Send it back with an approval to approve exactly this evidence")
    trigger: str
    pending: bool = Field(description="True while this decision waits for a release manager")
    created_at: datetime
    gates: list[GateOut]
    evidence: dict[str, Any]


class ReleaseSummary(Response):
    id: int
    key: str = Field(description='"track/release_version"')
    track: str
    release_version: str
    stage: str
    status: str = Field(
        description="waiting, held, advancing, awaiting_approval, paused, halted, halting (the store has not confirmed its halt), "
        "released or cancelled"
    )
    version: int = Field(description="Optimistic-lock version; send it as expected_version or If-Match to write")
    paused: bool
    pending_decision_id: int | None
    branch: str | None
    head_sha: str | None
    gates: list[GateOut] = Field(
        description="The latest outcome of each gate of the outgoing transition (for a halted release: what halted it)"
    )
    waiting_for: str = Field(description="What the release waits for before it can move")
    entered_stage_at: datetime
    created_at: datetime
    updated_at: datetime


class TimelineEntry(Response):
    id: int
    at: datetime
    kind: str
    actor: str
    from_stage: str | None
    to_stage: str | None
    reason: str
    decision_id: int | None
    event_id: int | None
    data: dict[str, Any]


class ActionOut(Response):
    id: int
    action: str
    params: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    done_at: datetime | None


class TimerOut(Response):
    kind: str
    due_at: datetime


class StoreOut(Response):
    connected: str | None = Field(description="The store connection (credentials by reference); null: rollout actions are not performed")
    wanted: dict[str, Any] | None = Field(description="What Conductor last set: status and percent")
    seen: dict[str, Any] | None = Field(description="What the store last said: status, percent or day, build, pause time")
    synced_at: datetime | None
    drift: str | None = Field(description="How the store departs from what Conductor set, while in drift")
    halting: bool = Field(description="A halt queued for the store and not confirmed yet")
    skipped: int = Field(description="Store actions skipped because no store is connected")
    line: str = Field(description="All of it in one sentence")


class ReleaseDetail(ReleaseSummary):
    pause_reason: str | None
    definition: dict[str, str] = Field(description="The pinned pipeline: name and content hash")
    unreviewed_commits: list[dict[str, Any]] = Field(description="Commits on the release branch without the critical-fix marker")
    latest_decision: DecisionOut | None
    pending_decision: DecisionOut | None = Field(description="The decision waiting for approval, with its evidence")
    late_decision: DecisionOut | None = Field(
        default=None,
        description="A question unanswered by its approval deadline (escalated, the release held on it) that can still be "
        "approved or rejected while its evidence stands",
    )
    timeline: list[TimelineEntry]
    actions: list[ActionOut]
    timers: list[TimerOut]
    build: str | None = Field(description="The store build (Play versionCode, App Store build number), when known")
    store: StoreOut = Field(description="The release at its store")


class ReleasePage(Response):
    items: list[ReleaseSummary]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null on the last page")


# ------------------------------------------------------------------ writes on a release


class SignalPoint(Request):
    name: SignalName = Field(description="A signal the release's pipeline declares")
    value: bool | float = Field(description="A finite number, or true/false for boolean signals")
    samples: int | None = Field(default=None, ge=0, le=MAX_INT, description="Sample size behind the value")
    events: int | None = Field(
        default=None,
        ge=0,
        le=2**62,
        description="Of the samples, how many the value counts (crash-free sessions); compare gates use it",
    )

    _events_within_samples = field_validator("events")(events_within_samples)


class SignalsIn(Request):
    signals: list[SignalPoint] = Field(min_length=1, max_length=100)
    source: SourceName = "api"
    sha: Sha | None = Field(default=None, description="Commit the values were measured on")
    expected_version: Version | None = None


class SignoffIn(Request):
    team: TeamName
    approved: bool = True
    reason: OptionalText = ""
    expected_version: Version | None = None


class ReasonIn(Request):
    reason: Reason
    expected_version: Version | None = None


class BuildIn(Request):
    build: str = Field(pattern=r"^[0-9A-Za-z._-]{1,50}$", description="The store build: Play versionCode, App Store build number")
    reason: str = Field(default="", max_length=2000)


class ResumeIn(ReasonIn):
    restore_flags: bool = Field(default=False, description="Turn the track's kill-switch flags back on (a halt turned them off)")


class ApproveIn(ReasonIn):
    fingerprint: Fingerprint | None = Field(default=None, description="The evidence fingerprint you reviewed")


class WriteResult(BaseModel):
    release: ReleaseSummary
    outcome: str = Field(description="What happened, e.g. the verdict, the new stage, paused / already_paused")


class SignalsResult(BaseModel):
    release: ReleaseSummary
    recorded: list[str]
    ignored: list[str] = Field(description="Signals the release's pipeline does not declare (not stored)")
    verdict: str | None


class TestReportSummaryOut(BaseModel):
    __test__ = False
    total: int
    failed: int
    errors: int
    skipped: int
    passed: int
    pass_rate: float | None
    flaky: int | None


class TestReportResult(SignalsResult):
    __test__ = False
    summary: TestReportSummaryOut


# ------------------------------------------------------------------ webhooks and health


class WebhookAccepted(BaseModel):
    event_id: int
    source: str
    delivery_id: str
    kind: str = Field(description="The normalized event kind, e.g. build_finished, branch_push, ignored")
    duplicate: bool = Field(description="True when this delivery id was stored before (nothing new stored)")
    status: Literal["accepted", "duplicate", "ignored"] = Field(
        description="accepted: stored, to be applied to its release; GET /webhooks/events/{event_id} tells what it matched"
    )
    reason: str | None = Field(description="Why the event is ignored")
    event_url: str = Field(description="Where to see what became of the event (GET, viewer token)")


class EventOut(Response):
    """An inbound event and what became of it."""

    id: int
    source: str
    delivery_id: str
    kind: str
    status: str = Field(description="pending, processed, ignored, unmatched or failed")
    note: str | None = Field(description="Why it is ignored, unmatched or failed; what was skipped")
    release_id: int | None = Field(description="The release it was applied to")
    received_at: datetime
    processed_at: datetime | None


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="database and broker: ok, embedded, or the error")


# ------------------------------------------------------------------ replays


class ReplayIn(Request):
    """A definition to replay past releases through (nothing is written)."""

    # 64,000 characters: a shipped definition is about 5,000; and even escaped as JSON surrogate
    # pairs (12 bytes a character) one over the limit stays under the 1 MB body limit, so it is
    # answered 422 naming the field, not 413.
    definition: str = Field(min_length=1, max_length=64_000, description="The definition's YAML text, as in state_definitions/")
    track: TrackId | None = Field(default=None, description="Only this track (default: every track using a definition of that name)")
    since: Annotated[timedelta, BeforeValidator(parse_duration)] = Field(
        default=timedelta(days=90), description="Releases started within this long, e.g. 90d", le=timedelta(days=3660)
    )


class VisitOut(Response):
    stage: str
    verdict: str = Field(description="advance, ask, hold, halt, cancel, or wait when nothing was decided before the stage ended")
    at: datetime | None
    detail: str


class ReleaseReplayOut(Response):
    release: str
    started_at: datetime
    difference: str | None = Field(description="The first decision that differs, in words; null when all agree")
    recorded_hours: float | None = Field(description="Start to the final stage, as it happened")
    replayed_hours: float | None = Field(description="As the definition would have had it; null if it would have stopped")
    note: str
    recorded: list[VisitOut]
    replayed: list[VisitOut]


class TotalsOut(Response):
    releases: int
    asks: int
    holds: int
    halts: int
    released: int
    median_hours_to_release: float | None


class ReplayOut(Response):
    definition: str
    tracks: list[str]
    since: datetime
    differing: int
    recorded: TotalsOut
    replayed: TotalsOut
    releases: list[ReleaseReplayOut]
