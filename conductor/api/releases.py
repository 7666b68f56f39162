"""REST for releases: list, start, show (stage, gates, pending decision with evidence, timeline), and every write.

Writes need a release_manager token; each is one service call whose audit row names the token.
A write may carry the release `version` it was based on (`expected_version` in the body, or
If-Match); the service compares it under the row lock and answers 409 when the release moved on.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from conductor.api.deps import IfMatch, NoParams, QueryModel, ReleaseManager, SingleValues, State, Viewer, wanted_version
from conductor.api.errors import error_responses
from conductor.api.schemas import (
    MAX_INT,
    ApproveIn,
    BuildIn,
    DecisionOut,
    ReasonIn,
    ReleaseCreate,
    ReleaseDetail,
    ReleasePage,
    ReleaseSummary,
    ResumeIn,
    Sha,
    SignalsIn,
    SignalsResult,
    SignoffIn,
    SourceName,
    StageName,
    TestReportResult,
    TestReportSummaryOut,
    TrackId,
    Version,
    WriteResult,
)
from conductor.context import Context
from conductor.read.release import get_decision, list_releases, snapshot
from conductor.service import approvals, releases, signals
from conductor.sources.errors import PayloadTooLarge
from conductor.sources.events import SignalIn
from conductor.sources.junit import summarize_junit

log = structlog.get_logger("conductor.api")

ReleaseId = Annotated[int, Path(ge=1, le=MAX_INT, description="The release id")]
DecisionId = Annotated[int, Path(ge=1, le=MAX_INT, description="The decision (evaluation) id")]

READ = error_responses(401, 403, 404, 422, 503)
WRITE = error_responses(400, 401, 403, 404, 409, 413, 422, 503)


def _bind(release_id: int) -> None:
    structlog.contextvars.bind_contextvars(release_id=release_id)


def _summary(ctx: Context, release_id: int, response: Response) -> ReleaseSummary:
    snap = snapshot(ctx, release_id)
    response.headers["ETag"] = f'"{snap.version}"'
    return ReleaseSummary.model_validate(snap)


class ReleaseListQuery(QueryModel):
    track: TrackId | None = Field(default=None, description="Only this track")
    stage: StageName | None = Field(default=None, description="Only releases in this stage")
    awaiting_approval: bool | None = Field(default=None, description="Only releases with (or without) a pending decision")
    paused: bool | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: int | None = Field(default=None, ge=1, le=MAX_INT, description="next_cursor of the previous page")


class TestReportQuery(QueryModel):
    __test__ = False
    sha: Sha | None = Field(default=None, description="Commit the tests ran on")
    source: SourceName = Field(default="junit", description="Who produced the report")
    expected_version: Version | None = None


router = APIRouter(prefix="/releases", tags=["releases"], dependencies=[SingleValues])


@router.get("", response_model=ReleasePage, responses=READ, summary="List releases, newest first")
def list_(state: State, _: Viewer, q: Annotated[ReleaseListQuery, Query()]) -> ReleasePage:
    page = list_releases(
        state.conductor,
        track=q.track,
        stage=q.stage,
        awaiting_approval=q.awaiting_approval,
        paused=q.paused,
        limit=q.limit,
        cursor=q.cursor,
    )
    return ReleasePage.model_validate(page)


@router.post(
    "",
    status_code=201,
    response_model=ReleaseDetail,
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
    summary="Start a release of a track",
)
def create(body: ReleaseCreate, state: State, principal: ReleaseManager, response: Response, _q: NoParams) -> ReleaseDetail:
    rid = releases.start_release(state.conductor, body.track, body.release_version, principal.actor)
    _bind(rid)
    snap = snapshot(state.conductor, rid)
    response.headers["ETag"] = f'"{snap.version}"'
    response.headers["Location"] = f"/releases/{rid}"
    return ReleaseDetail.model_validate(snap)


@router.get(
    "/{release_id}",
    response_model=ReleaseDetail,
    responses=READ,
    summary="A release: stage, gates, pending decision with its evidence, timeline, actions",
)
def get(release_id: ReleaseId, state: State, _: Viewer, response: Response, _q: NoParams) -> ReleaseDetail:
    _bind(release_id)
    snap = snapshot(state.conductor, release_id)
    response.headers["ETag"] = f'"{snap.version}"'
    return ReleaseDetail.model_validate(snap)


@router.get(
    "/{release_id}/decisions/{decision_id}",
    response_model=DecisionOut,
    responses=READ,
    summary="One decision of a release, with its evidence",
)
def decision(release_id: ReleaseId, decision_id: DecisionId, state: State, _: Viewer, _q: NoParams) -> DecisionOut:
    _bind(release_id)
    return DecisionOut.model_validate(get_decision(state.conductor, release_id, decision_id))


@router.post(
    "/{release_id}/signals",
    response_model=SignalsResult,
    responses=WRITE,
    summary="Push signal values (one transaction, one evaluation)",
)
def signals_(
    release_id: ReleaseId,
    body: SignalsIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> SignalsResult:
    _bind(release_id)
    points = [SignalIn(name=p.name, value=float(p.value), samples=p.samples, events=p.events) for p in body.signals]
    batch = signals.record_signals(
        state.conductor,
        release_id,
        points,
        principal.actor,
        source=body.source,
        sha=body.sha,
        expected_version=wanted_version(if_match, body.expected_version),
    )
    return SignalsResult(
        release=_summary(state.conductor, release_id, response), recorded=batch.recorded, ignored=batch.ignored, verdict=batch.verdict
    )


@router.post(
    "/{release_id}/test-reports",
    response_model=TestReportResult,
    responses=WRITE,
    summary="Upload a JUnit XML report; it becomes the tests_* signals the release's pipeline declares",
    description="Body: the raw XML (application/xml). DOCTYPE and ENTITY declarations are refused (422); "
    "the size limit is enforced while the body is read (413).",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/xml": {"schema": {"type": "string"}}, "text/xml": {"schema": {"type": "string"}}},
        }
    },
)
async def test_report(
    request: Request,
    release_id: ReleaseId,
    state: State,
    principal: ReleaseManager,
    response: Response,
    q: Annotated[TestReportQuery, Query()],
    if_match: IfMatch = None,
) -> TestReportResult:
    _bind(release_id)
    body = await request.body()  # BodyLimit stops the read past the limit (413), before any parsing
    limit = state.report_max_bytes
    if len(body) > limit:
        raise PayloadTooLarge(len(body), limit)
    summary = await run_in_threadpool(summarize_junit, body, limit)  # CPU-bound: off the event loop
    version = wanted_version(if_match, q.expected_version)

    def write() -> tuple[Any, ReleaseSummary]:
        batch = signals.record_signals(
            state.conductor,
            release_id,
            summary.signals(),
            principal.actor,
            source=q.source,
            sha=q.sha,
            only_declared=True,
            what="test report",
            expected_version=version,
        )
        return batch, _summary(state.conductor, release_id, response)

    batch, release = await run_in_threadpool(write)
    log.info("test_report_recorded", release_id=release_id, total=summary.total, failed=summary.failed, recorded=batch.recorded)
    return TestReportResult(
        release=release,
        recorded=batch.recorded,
        ignored=batch.ignored,
        verdict=batch.verdict,
        summary=TestReportSummaryOut(**summary.model_dump()),
    )


@router.put("/{release_id}/build", response_model=WriteResult, responses=WRITE, summary="Say which store build the release is")
def build(release_id: ReleaseId, body: BuildIn, state: State, principal: ReleaseManager, response: Response, _q: NoParams) -> WriteResult:
    _bind(release_id)
    before = releases.record_build(state.conductor, release_id, body.build, principal.actor, body.reason)
    outcome = "unchanged" if before == body.build else ("changed" if before else "set")
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome=outcome)


@router.post("/{release_id}/signoffs", response_model=WriteResult, responses=WRITE, summary="A team signs off (or refuses)")
def signoff(
    release_id: ReleaseId,
    body: SignoffIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> WriteResult:
    _bind(release_id)
    verdict = signals.sign_off(
        state.conductor,
        release_id,
        body.team,
        principal.actor,
        approved=body.approved,
        reason=body.reason,
        expected_version=wanted_version(if_match, body.expected_version),
    )
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome=verdict or "recorded")


@router.post(
    "/{release_id}/decisions/{decision_id}/approve",
    response_model=WriteResult,
    responses=WRITE,
    summary="Approve a pending decision (release_manager; four-eyes may forbid it)",
)
def approve(
    release_id: ReleaseId,
    decision_id: DecisionId,
    body: ApproveIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> WriteResult:
    _bind(release_id)
    get_decision(state.conductor, release_id, decision_id)  # 404 before 409 for a decision that never existed
    stage = approvals.approve(
        state.conductor,
        release_id,
        principal.actor,
        body.reason,
        evaluation_id=decision_id,
        fingerprint=body.fingerprint,
        expected_version=wanted_version(if_match, body.expected_version),
    )
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)


@router.post(
    "/{release_id}/decisions/{decision_id}/reject",
    response_model=WriteResult,
    responses=WRITE,
    summary="Reject a pending decision (hold, or halt in a rollout stage)",
)
def reject(
    release_id: ReleaseId,
    decision_id: DecisionId,
    body: ReasonIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> WriteResult:
    _bind(release_id)
    get_decision(state.conductor, release_id, decision_id)
    stage = approvals.reject(
        state.conductor,
        release_id,
        principal.actor,
        body.reason,
        evaluation_id=decision_id,
        expected_version=wanted_version(if_match, body.expected_version),
    )
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)


@router.post("/{release_id}/pause", response_model=WriteResult, responses=WRITE, summary="Stop the robot from advancing the release")
def pause(
    release_id: ReleaseId,
    body: ReasonIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> WriteResult:
    _bind(release_id)
    changed = releases.pause(
        state.conductor, release_id, principal.actor, body.reason, expected_version=wanted_version(if_match, body.expected_version)
    )
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome="paused" if changed else "already_paused")


@router.post("/{release_id}/resume", response_model=WriteResult, responses=WRITE, summary="Lift a pause, or resume a halted rollout")
def resume(
    release_id: ReleaseId,
    body: ResumeIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> WriteResult:
    _bind(release_id)
    stage = releases.resume(
        state.conductor,
        release_id,
        principal.actor,
        body.reason,
        expected_version=wanted_version(if_match, body.expected_version),
        restore_flags=body.restore_flags,
    )
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)


@router.post("/{release_id}/cancel", response_model=WriteResult, responses=WRITE, summary="Abandon the release")
def cancel(
    release_id: ReleaseId,
    body: ReasonIn,
    state: State,
    principal: ReleaseManager,
    response: Response,
    _q: NoParams,
    if_match: IfMatch = None,
) -> WriteResult:
    _bind(release_id)
    stage = releases.cancel(
        state.conductor, release_id, principal.actor, body.reason, expected_version=wanted_version(if_match, body.expected_version)
    )
    return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)


def build_router() -> APIRouter:
    return router
