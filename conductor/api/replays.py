"""REST for replays: run past releases' recorded signals through a definition (writes nothing)."""

from __future__ import annotations

from fastapi import APIRouter

from conductor.api.deps import NoParams, ReleaseManager, SingleValues, State
from conductor.api.errors import error_responses
from conductor.api.schemas import ReplayIn, ReplayOut
from conductor.domain.loader import parse_pipeline
from conductor.read.replay import replay


def replay_(body: ReplayIn, state: State, _: ReleaseManager, _q: NoParams) -> ReplayOut:
    pipeline = parse_pipeline(body.definition, "definition")  # a DefinitionError is a 422 naming line and field
    return ReplayOut.model_validate(replay(state.conductor, pipeline, track=body.track, since=body.since))


def build_router() -> APIRouter:
    router = APIRouter(prefix="/replays", tags=["replays"], dependencies=[SingleValues])
    router.add_api_route(
        "",
        replay_,
        methods=["POST"],
        response_model=ReplayOut,
        responses=error_responses(400, 401, 403, 404, 413, 422, 503),
        summary="Replay past releases through a definition: where its decisions would differ (release manager; writes nothing)",
    )
    return router
