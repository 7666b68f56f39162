"""REST for releases: list, start, show (stage, gates, pending decision with evidence, timeline), and every write.

Writes need a release_manager token; each is one service call whose audit row names the token.
A write may carry the release `version` it was based on (`expected_version` in the body, or
If-Match); the service compares it under the row lock and answers 409 when the release moved on.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from conductor.api.deps import (
    IfMatch,
    ReleaseManager,
    State,
    Viewer,
    expecting,
    no_unknown_query,
    wanted_version,
)
from conductor.api.errors import error_responses
from conductor.api.schemas import (
    MAX_INT,
    ApproveIn,
    DecisionOut,
    ReasonIn,
    ReleaseCreate,
    ReleaseDetail,
    ReleasePage,
    ReleaseSummary,
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
from conductor.service.engine import Conductor
from conductor.service.queries import get_decision, list_releases
from conductor.service.reports import record_signals
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


def _summary(c: Conductor, release_id: int, response: Response) -> ReleaseSummary:
    snap = c.snapshot(release_id)
    response.headers["ETag"] = f'"{snap.release.version_id}"'
    return ReleaseSummary.of(snap)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/releases", tags=["releases"], dependencies=[Depends(no_unknown_query)])

    @router.get("", response_model=ReleasePage, responses=READ, summary="List releases, newest first")
    def list_(
        state: State,
        _: Viewer,
        track: Annotated[TrackId | None, Query(description="Only this track")] = None,
        stage: Annotated[StageName | None, Query(description="Only releases in this stage")] = None,
        awaiting_approval: Annotated[bool | None, Query(description="Only releases with (or without) a pending decision")] = None,
        paused: Annotated[bool | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[int | None, Query(ge=1, le=MAX_INT, description="next_cursor of the previous page")] = None,
    ) -> ReleasePage:
        page = list_releases(state.conductor, track=track, stage=stage, awaiting_approval=awaiting_approval,
                             paused=paused, limit=limit, cursor=cursor)
        return ReleasePage(items=[ReleaseSummary.of(s) for s in page.items], next_cursor=page.next_cursor)

    @router.post("", status_code=201, response_model=ReleaseDetail, responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Start a release of a track")
    def create(body: ReleaseCreate, state: State, principal: ReleaseManager, response: Response) -> ReleaseDetail:
        rid = state.conductor.start_release(body.track, body.release_version, principal.actor)
        _bind(rid)
        snap = state.conductor.snapshot(rid)
        response.headers["ETag"] = f'"{snap.release.version_id}"'
        response.headers["Location"] = f"/releases/{rid}"
        return ReleaseDetail.of(snap)

    @router.get("/{release_id}", response_model=ReleaseDetail, responses=READ,
                summary="A release: stage, gates, pending decision with its evidence, timeline, actions")
    def get(release_id: ReleaseId, state: State, _: Viewer, response: Response) -> ReleaseDetail:
        _bind(release_id)
        snap = state.conductor.snapshot(release_id)
        response.headers["ETag"] = f'"{snap.release.version_id}"'
        return ReleaseDetail.of(snap)

    @router.get("/{release_id}/decisions/{decision_id}", response_model=DecisionOut, responses=READ,
                summary="One decision of a release, with its evidence")
    def decision(release_id: ReleaseId, decision_id: DecisionId, state: State, _: Viewer) -> DecisionOut:
        _bind(release_id)
        ev, pending = get_decision(state.conductor, release_id, decision_id)
        return DecisionOut.of(ev, pending)

    @router.post("/{release_id}/signals", response_model=SignalsResult, responses=WRITE,
                 summary="Push signal values (one transaction, one evaluation)")
    def signals(release_id: ReleaseId, body: SignalsIn, state: State, principal: ReleaseManager, response: Response,
                if_match: IfMatch = None) -> SignalsResult:
        _bind(release_id)
        points = [SignalIn(name=p.name, value=float(p.value), samples=p.samples) for p in body.signals]
        with expecting(wanted_version(if_match, body.expected_version)):
            batch = record_signals(state.conductor, release_id, points, principal.actor, source=body.source, sha=body.sha)
        return SignalsResult(release=_summary(state.conductor, release_id, response), recorded=batch.recorded,
                             ignored=batch.ignored, verdict=batch.verdict)

    @router.post(
        "/{release_id}/test-reports", response_model=TestReportResult, responses=WRITE,
        summary="Upload a JUnit XML report; it becomes the tests_* signals the release's pipeline declares",
        description="Body: the raw XML (application/xml). DOCTYPE and ENTITY declarations are refused (422); "
        "the size limit is enforced while the body is read (413).",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/xml": {"schema": {"type": "string"}}, "text/xml": {"schema": {"type": "string"}}}}},
    )
    async def test_report(
        request: Request,
        release_id: ReleaseId,
        state: State,
        principal: ReleaseManager,
        response: Response,
        sha: Annotated[Sha | None, Query(description="Commit the tests ran on")] = None,
        source: Annotated[SourceName, Query(description="Who produced the report")] = "junit",
        expected_version: Annotated[Version | None, Query()] = None,
        if_match: IfMatch = None,
    ) -> TestReportResult:
        _bind(release_id)
        body = await request.body()  # BodyLimit stops the read past the limit (413), before any parsing
        limit = state.report_max_bytes
        if len(body) > limit:
            raise PayloadTooLarge(len(body), limit)
        summary = await run_in_threadpool(summarize_junit, body, limit)  # CPU-bound: off the event loop
        version = wanted_version(if_match, expected_version)

        def write() -> tuple[Any, ReleaseSummary]:
            with expecting(version):
                batch = record_signals(state.conductor, release_id, summary.signals(), principal.actor, source=source,
                                       sha=sha, only_declared=True, what="test report")
            return batch, _summary(state.conductor, release_id, response)

        batch, release = await run_in_threadpool(write)
        log.info("test_report_recorded", release_id=release_id, total=summary.total, failed=summary.failed, recorded=batch.recorded)
        return TestReportResult(release=release, recorded=batch.recorded, ignored=batch.ignored, verdict=batch.verdict,
                                summary=TestReportSummaryOut(**summary.model_dump()))

    @router.post("/{release_id}/signoffs", response_model=WriteResult, responses=WRITE, summary="A team signs off (or refuses)")
    def signoff(release_id: ReleaseId, body: SignoffIn, state: State, principal: ReleaseManager, response: Response,
                if_match: IfMatch = None) -> WriteResult:
        _bind(release_id)
        with expecting(wanted_version(if_match, body.expected_version)):
            verdict = state.conductor.sign_off(release_id, body.team, principal.actor, approved=body.approved, reason=body.reason)
        return WriteResult(release=_summary(state.conductor, release_id, response), outcome=verdict or "recorded")

    @router.post("/{release_id}/decisions/{decision_id}/approve", response_model=WriteResult, responses=WRITE,
                 summary="Approve a pending decision (release_manager; four-eyes may forbid it)")
    def approve(release_id: ReleaseId, decision_id: DecisionId, body: ApproveIn, state: State, principal: ReleaseManager,
                response: Response, if_match: IfMatch = None) -> WriteResult:
        _bind(release_id)
        get_decision(state.conductor, release_id, decision_id)  # 404 before 409 for a decision that never existed
        with expecting(wanted_version(if_match, body.expected_version)):
            stage = state.conductor.approve(release_id, principal.actor, body.reason, evaluation_id=decision_id,
                                            fingerprint=body.fingerprint)
        return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)

    @router.post("/{release_id}/decisions/{decision_id}/reject", response_model=WriteResult, responses=WRITE,
                 summary="Reject a pending decision (hold, or halt in a rollout stage)")
    def reject(release_id: ReleaseId, decision_id: DecisionId, body: ReasonIn, state: State, principal: ReleaseManager,
               response: Response, if_match: IfMatch = None) -> WriteResult:
        _bind(release_id)
        get_decision(state.conductor, release_id, decision_id)
        with expecting(wanted_version(if_match, body.expected_version)):
            stage = state.conductor.reject(release_id, principal.actor, body.reason, evaluation_id=decision_id)
        return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)

    @router.post("/{release_id}/pause", response_model=WriteResult, responses=WRITE, summary="Stop the robot from advancing the release")
    def pause(release_id: ReleaseId, body: ReasonIn, state: State, principal: ReleaseManager, response: Response,
              if_match: IfMatch = None) -> WriteResult:
        _bind(release_id)
        with expecting(wanted_version(if_match, body.expected_version)):
            changed = state.conductor.pause(release_id, principal.actor, body.reason)
        return WriteResult(release=_summary(state.conductor, release_id, response), outcome="paused" if changed else "already_paused")

    @router.post("/{release_id}/resume", response_model=WriteResult, responses=WRITE,
                 summary="Lift a pause, or resume a halted rollout")
    def resume(release_id: ReleaseId, body: ReasonIn, state: State, principal: ReleaseManager, response: Response,
               if_match: IfMatch = None) -> WriteResult:
        _bind(release_id)
        with expecting(wanted_version(if_match, body.expected_version)):
            stage = state.conductor.resume(release_id, principal.actor, body.reason)
        return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)

    @router.post("/{release_id}/cancel", response_model=WriteResult, responses=WRITE, summary="Abandon the release")
    def cancel(release_id: ReleaseId, body: ReasonIn, state: State, principal: ReleaseManager, response: Response,
               if_match: IfMatch = None) -> WriteResult:
        _bind(release_id)
        with expecting(wanted_version(if_match, body.expected_version)):
            stage = state.conductor.cancel(release_id, principal.actor, body.reason)
        return WriteResult(release=_summary(state.conductor, release_id, response), outcome=stage)

    return router
