"""REST for tracks: list and show (viewer), create and change (admin). Secrets are write-only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from conductor.actions.base import ActionFailed
from conductor.api.deps import Admin, NoParams, SingleValues, State, Viewer
from conductor.api.errors import error_responses
from conductor.api.schemas import ConnectionCheck, ConnectionKey, ConnectionOut, SourcesOut, TrackCreate, TrackId, TrackOut, TrackUpdate
from conductor.read.tracks import get_track, list_tracks
from conductor.service.connections import check_connection
from conductor.service.sources import set_sources
from conductor.service.tracks import TrackChanges, connect, create_track, update_track

TrackPath = Annotated[TrackId, Path(description="The track id, e.g. music-android")]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/tracks", tags=["tracks"], dependencies=[SingleValues])

    @router.get("", response_model=list[TrackOut], responses=error_responses(401, 403, 422, 503), summary="List tracks")
    def list_(state: State, _: Viewer, _q: NoParams) -> list[TrackOut]:
        return [TrackOut.model_validate(t) for t in list_tracks(state.conductor)]

    @router.post(
        "",
        status_code=201,
        response_model=TrackOut,
        responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
        summary="Create a track (admin)",
    )
    def create(body: TrackCreate, state: State, principal: Admin, response: Response, _q: NoParams) -> TrackOut:
        track_id = create_track(
            state.conductor,
            body.id,
            body.definition,
            principal.actor,
            repository=body.repository,
            branch_pattern=body.branch_pattern,
            critical_fix_marker=body.critical_fix_marker,
            four_eyes=body.four_eyes,
            secrets=body.secrets.model_dump() if body.secrets else None,
        )
        response.headers["Location"] = f"/tracks/{track_id}"
        return TrackOut.model_validate(get_track(state.conductor, track_id))

    @router.get("/{track_id}", response_model=TrackOut, responses=error_responses(401, 403, 404, 422, 503), summary="One track")
    def get(track_id: TrackPath, state: State, _: Viewer, _q: NoParams) -> TrackOut:
        return TrackOut.model_validate(get_track(state.conductor, track_id))

    @router.patch(
        "/{track_id}",
        response_model=TrackOut,
        responses=error_responses(400, 401, 403, 404, 413, 422, 503),
        summary="Change a track's repository, branch pattern, marker, four-eyes or secrets (admin)",
    )
    def update(track_id: TrackPath, body: TrackUpdate, state: State, principal: Admin, _q: NoParams) -> TrackOut:
        sent = body.model_fields_set
        changes = TrackChanges(
            repository=body.repository,
            clear_repository="repository" in sent and body.repository is None,
            branch_pattern=body.branch_pattern,
            critical_fix_marker=body.critical_fix_marker,
            four_eyes=body.four_eyes,
            secrets=(body.secrets.model_dump(exclude_unset=True) if body.secrets else {}) if "secrets" in sent else None,
        )
        update_track(state.conductor, track_id, principal.actor, changes)
        return TrackOut.model_validate(get_track(state.conductor, track_id))

    @router.put(
        "/{track_id}/connections/{key}",
        response_model=ConnectionOut,
        responses=error_responses(400, 401, 403, 404, 413, 422, 503),
        summary="Connect the track's store, VCS/CI host or flag service (admin); credentials by reference",
    )
    def connect_(
        track_id: TrackPath, key: ConnectionKey, body: dict[str, Any], state: State, principal: Admin, _q: NoParams
    ) -> ConnectionOut:
        return ConnectionOut(track=track_id, connection=key, described=connect(state.conductor, track_id, principal.actor, key, body))

    @router.delete(
        "/{track_id}/connections/{key}",
        response_model=ConnectionOut,
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Disconnect the track's store, VCS/CI host or flag service (admin)",
    )
    def disconnect_(track_id: TrackPath, key: ConnectionKey, state: State, principal: Admin, _q: NoParams) -> ConnectionOut:
        return ConnectionOut(track=track_id, connection=key, described=connect(state.conductor, track_id, principal.actor, key, None))

    @router.get(
        "/{track_id}/connections/{key}/check",
        response_model=ConnectionCheck,
        responses=error_responses(400, 401, 403, 404, 422, 503),
        summary="One read-only call with the connection's credentials (admin): do they work?",
    )
    def check_(track_id: TrackPath, key: ConnectionKey, state: State, _: Admin, _q: NoParams) -> ConnectionCheck:
        try:
            detail, ok = check_connection(state.conductor, state.adapters, track_id, key), True
        except ActionFailed as exc:
            detail, ok = str(exc), False
        return ConnectionCheck(track=track_id, connection=key, ok=ok, detail=detail)

    @router.put(
        "/{track_id}/sources",
        response_model=SourcesOut,
        responses=error_responses(400, 401, 403, 404, 413, 422, 503),
        summary="Where the track's signals are pulled from (admin): the sources file's content as JSON",
    )
    def sources_(track_id: TrackPath, body: dict[str, Any], state: State, principal: Admin, _q: NoParams) -> SourcesOut:
        parsed = set_sources(state.conductor, track_id, principal.actor, body, "body")
        assert parsed is not None
        shown = [
            {"name": s.name, "kind": s.config.kind, "interval_s": s.config.interval.total_seconds(), "signals": sorted(s.config.signals)}
            for s in parsed.sources
        ]
        return SourcesOut(track=track_id, sources=shown)

    @router.delete(
        "/{track_id}/sources",
        response_model=SourcesOut,
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Stop pulling the track's signals (admin)",
    )
    def no_sources(track_id: TrackPath, state: State, principal: Admin, _q: NoParams) -> SourcesOut:
        set_sources(state.conductor, track_id, principal.actor, None)
        return SourcesOut(track=track_id, sources=[])

    return router
