"""REST for tracks: list and show (viewer), create and change (admin). Secrets are write-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from conductor.api.deps import Admin, State, Viewer, no_unknown_query
from conductor.api.errors import error_responses
from conductor.api.schemas import TrackCreate, TrackId, TrackOut, TrackUpdate
from conductor.service.queries import get_track, list_tracks
from conductor.service.tracks import create_track, update_track

TrackPath = Annotated[TrackId, Path(description="The track id, e.g. music-android")]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/tracks", tags=["tracks"], dependencies=[Depends(no_unknown_query)])

    @router.get("", response_model=list[TrackOut], responses=error_responses(401, 403, 422, 503), summary="List tracks")
    def list_(state: State, _: Viewer) -> list[TrackOut]:
        return [TrackOut.of(t) for t in list_tracks(state.conductor)]

    @router.post("", status_code=201, response_model=TrackOut, responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Create a track (admin)")
    def create(body: TrackCreate, state: State, principal: Admin, response: Response) -> TrackOut:
        track = create_track(
            state.conductor, body.id, body.definition, principal.actor, repository=body.repository,
            branch_pattern=body.branch_pattern, critical_fix_marker=body.critical_fix_marker, four_eyes=body.four_eyes,
            secrets=body.secrets.model_dump() if body.secrets else None,
        )
        response.headers["Location"] = f"/tracks/{track.id}"
        return TrackOut.of(track)

    @router.get("/{track_id}", response_model=TrackOut, responses=error_responses(401, 403, 404, 422, 503), summary="One track")
    def get(track_id: TrackPath, state: State, _: Viewer) -> TrackOut:
        return TrackOut.of(get_track(state.conductor, track_id))

    @router.patch("/{track_id}", response_model=TrackOut, responses=error_responses(400, 401, 403, 404, 413, 422, 503),
                  summary="Change a track's repository, branch pattern, marker, four-eyes or secrets (admin)")
    def update(track_id: TrackPath, body: TrackUpdate, state: State, principal: Admin) -> TrackOut:
        changes = body.model_dump(exclude_unset=True)
        if "secrets" in changes:
            changes["secrets"] = body.secrets.model_dump(exclude_unset=True) if body.secrets else {}
        return TrackOut.of(update_track(state.conductor, track_id, principal.actor, **changes))

    return router
