"""REST for freezes: stop the line for a track or for all (release manager), lift it, list them,
and set a freeze calendar (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from conductor.api.deps import Admin, NoParams, ReleaseManager, SingleValues, State, Viewer
from conductor.api.errors import error_responses
from conductor.api.schemas import Reason, Request, TrackId
from conductor.service.freezes import freeze, list_freezes, restore_cuts, set_calendar, skip_next_cut, unfreeze


class FreezeIn(Request):
    track: TrackId | None = Field(default=None, description="One track; null freezes every track")
    reason: Reason
    until: datetime | None = Field(default=None, description="When it ends; null: until it is lifted")


class LiftIn(Request):
    track: TrackId | None = Field(default=None, description="One track; null lifts the freezes of every track")
    reason: Reason


class CalendarIn(Request):
    track: TrackId | None = Field(default=None, description="One track; null sets every track's calendar")
    calendar: dict[str, Any] = Field(
        description="timezone, freezes [{from, to, reason}], holidays [{date, reason}], blackouts [{days, from, to}]"
    )


class SkipCutIn(Request):
    track: TrackId = Field(description="The track whose next scheduled branch cut is skipped")
    reason: Reason


class SkipCutOut(BaseModel):
    track: str
    skipped: datetime = Field(description="The branch cut that will not happen")


class FreezeOut(BaseModel):
    id: int
    track: str | None
    source: str
    reason: str
    actor: str
    starts_at: datetime
    ends_at: datetime | None


def build_router() -> APIRouter:
    router = APIRouter(prefix="/freezes", tags=["freezes"], dependencies=[SingleValues])

    @router.get("", response_model=list[FreezeOut], responses=error_responses(401, 403, 422, 503), summary="Freezes in force or coming")
    def list_(state: State, _: Viewer, track: Annotated[TrackId | None, Query()] = None) -> list[FreezeOut]:
        return [FreezeOut(id=f["id"], track=f["track_id"], source=f["source"], reason=f["reason"], actor=f["actor"],
                          starts_at=f["starts_at"], ends_at=f["ends_at"]) for f in list_freezes(state.conductor, track)]  # fmt: skip

    @router.post("", status_code=201, response_model=FreezeOut, responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Stop the line: no move that raises user exposure until lifted (release manager)")  # fmt: skip
    def create(body: FreezeIn, state: State, principal: ReleaseManager, _q: NoParams) -> FreezeOut:
        fid = freeze(state.conductor, principal.actor, body.reason, track=body.track, until=body.until)
        f = next(f for f in list_freezes(state.conductor, body.track) if f["id"] == fid)
        return FreezeOut(id=fid, track=f["track_id"], source=f["source"], reason=f["reason"], actor=f["actor"], starts_at=f["starts_at"],
                         ends_at=f["ends_at"])  # fmt: skip

    @router.post("/lift", response_model=dict[str, int], responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Lift the manual freezes of a track or of every track (release manager)")  # fmt: skip
    def lift(body: LiftIn, state: State, principal: ReleaseManager, _q: NoParams) -> dict[str, int]:
        return {"lifted": unfreeze(state.conductor, principal.actor, body.reason, track=body.track)}

    @router.post("/calendar", response_model=dict[str, int], responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Replace a freeze calendar: code freezes, holidays (no branch cut), blackout hours (admin)")  # fmt: skip
    def calendar(body: CalendarIn, state: State, principal: Admin, _q: NoParams) -> dict[str, int]:
        return set_calendar(state.conductor, principal.actor, body.calendar, track=body.track)

    @router.post("/skip-cut", status_code=201, response_model=SkipCutOut,
                 responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Skip a track's next scheduled branch cut; nothing is frozen (release manager)")  # fmt: skip
    def skip_cut(body: SkipCutIn, state: State, principal: ReleaseManager, _q: NoParams) -> SkipCutOut:
        return SkipCutOut(track=body.track, skipped=skip_next_cut(state.conductor, principal.actor, body.reason, track=body.track))

    @router.post("/skip-cut/undo", response_model=dict[str, int], responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
                 summary="Bring back a track's skipped branch cuts (release manager)")  # fmt: skip
    def restore(body: SkipCutIn, state: State, principal: ReleaseManager, _q: NoParams) -> dict[str, int]:
        return {"restored": restore_cuts(state.conductor, principal.actor, body.reason, track=body.track)}

    return router
