"""Tracks and inbound events as the API shows them, and the database's heartbeat."""

from __future__ import annotations

from sqlalchemy import select, text

from conductor.context import Context
from conductor.domain.errors import NotFound
from conductor.read.records import EventInfo, TrackInfo, build, columns
from conductor.store.statements import INBOX, TRACKS

TRACK_COLUMNS = columns(TrackInfo, TRACKS)
EVENT_COLUMNS = columns(EventInfo, INBOX)


def ping(ctx: Context) -> None:
    """Raise (SQLAlchemy error) unless the database answers a trivial query."""
    with ctx.db.reading() as conn:
        conn.execute(text("SELECT 1"))


def list_tracks(ctx: Context) -> list[TrackInfo]:
    with ctx.db.reading() as conn:
        return [build(TrackInfo, row) for row in conn.execute(select(*TRACK_COLUMNS).order_by(TRACKS.c.id))]


def get_track(ctx: Context, track_id: str) -> TrackInfo:
    """The track, or NotFound."""
    with ctx.db.reading() as conn:
        row = conn.execute(select(*TRACK_COLUMNS).where(TRACKS.c.id == track_id)).first()
    if row is None:
        raise NotFound(f"unknown track {track_id!r}")
    return build(TrackInfo, row)


def get_event(ctx: Context, event_id: int) -> EventInfo:
    """An inbound event's status (processed, unmatched and why, ...), or NotFound."""
    with ctx.db.reading() as conn:
        row = conn.execute(select(*EVENT_COLUMNS).where(INBOX.c.id == event_id)).first()
    if row is None:
        raise NotFound(f"unknown event {event_id}")
    return build(EventInfo, row)
