"""The freezes in force for a track at a moment (conductor.service.freezes writes them)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, or_, select

from conductor.domain.policy import Freeze
from conductor.store.statements import FREEZES

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
# The source of a row that only skips one branch cut (conductor skip-cut): it freezes nothing.
SKIP = "skip"

__all__ = ["DAYS", "SKIP", "active"]


def active(conn: Connection, track_id: str, now: datetime, settings: dict[str, Any] | None = None) -> tuple[Freeze, ...]:
    """The freezes covering `track_id` at `now`: its own and every track's, and its blackout hours."""
    f = FREEZES.c
    rows = conn.execute(
        select(f.reason, f.starts_at, f.ends_at, f.track_id, f.source, f.skip_branch_cut).where(
            f.lifted_at.is_(None), or_(f.track_id == track_id, f.track_id.is_(None)), or_(f.ends_at.is_(None), f.ends_at > now)
        )
    ).all()
    out = [
        Freeze(r.reason, r.starts_at, r.ends_at, "all" if r.track_id is None else r.source, r.skip_branch_cut, holds=r.source != SKIP)
        for r in rows
    ]
    blackout = _blackout_at(now, (settings or {}).get("blackouts") or [], (settings or {}).get("blackouts_timezone", "UTC"))
    if blackout is not None:
        out.append(blackout)
    return tuple(out)


def _blackout_at(now: datetime, blackouts: list[dict[str, Any]], zone: str) -> Freeze | None:
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    for b in blackouts:
        if DAYS[local.weekday()] not in b["days"]:
            continue
        start = datetime.combine(local.date(), time.fromisoformat(b["from"]), tz)
        end = (
            datetime.combine(local.date(), time.fromisoformat(b["to"]), tz)
            if b["to"] != "24:00"
            else start.replace(hour=0, minute=0) + timedelta(days=1)
        )
        if start <= local < end:
            return Freeze(
                f"blackout hours: {b.get('reason') or ', '.join(b['days']) + ' ' + b['from'] + '-' + b['to']}", start, end, "calendar"
            )
    return None
