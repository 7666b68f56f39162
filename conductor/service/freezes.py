"""Freezes and stop-the-line: while a freeze covers a track, no transition that raises user
exposure happens (conductor.domain.policy); halts and cancels still do.

- A manual freeze (`conductor freeze --track T | --all --reason ...`, the API, the dashboard) lasts
  until it is lifted (`conductor unfreeze`) or until its end time.
- A calendar (a YAML file per track or for all tracks) lists code freezes (from, to), holidays
  (whole days in the calendar's time zone: frozen, and the day's branch cut is skipped) and weekly
  blackout hours (e.g. Fridays from 15:00). Setting a calendar replaces the scope's calendar rows.
- "Skip the next branch cut" (`conductor skip-cut --track T`) moves a track's next scheduled cut to
  the one after, freezing nothing; `--undo` brings it back.
- Everything is audited; lifting a freeze re-judges the releases it held.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, delete, or_, select

from conductor.context import Context
from conductor.domain.errors import ConductorError, InvalidSettings, NotFound
from conductor.domain.kinds import AuditKind
from conductor.domain.policy import Policy
from conductor.domain.schedules import next_schedule_time
from conductor.service.step import Actor, open_step
from conductor.store.freezes import DAYS, SKIP, active
from conductor.store.statements import FREEZES, INSERT_AUDIT, RELEASES, TRACKS

log = structlog.get_logger("conductor.freezes")


def _audit(conn: Connection, ctx: Context, track_id: str | None, actor: Actor, kind: AuditKind, reason: str, data: dict[str, Any]) -> None:
    conn.execute(INSERT_AUDIT, {"release_id": None, "track_id": track_id, "at": ctx.now(), "actor": actor.name, "kind": kind.value,
                                "reason": reason, "data": data})  # fmt: skip


def _check_track(conn: Connection, track_id: str | None) -> None:
    if track_id is not None and conn.execute(select(TRACKS.c.id).where(TRACKS.c.id == track_id)).first() is None:
        raise NotFound(f"unknown track {track_id!r}")


def freeze(ctx: Context, actor: Actor, reason: str, *, track: str | None = None, until: datetime | None = None) -> int:
    """Freeze a track (or, with no track, every track) now, until `until` or until lifted."""
    if not reason.strip():
        raise ConductorError("a freeze needs a reason")
    now = ctx.now()
    if until is not None and until <= now:
        raise ConductorError(f"the freeze would end at {until.isoformat()}, which has passed")
    with ctx.db.begin() as conn:
        _check_track(conn, track)
        row = {"track_id": track, "reason": reason, "source": "manual", "actor": actor.name, "starts_at": now, "ends_at": until,
               "skip_branch_cut": False, "created_at": now}  # fmt: skip
        fid = conn.execute(FREEZES.insert().returning(FREEZES.c.id), row).scalar()
        _audit(conn, ctx, track, actor, AuditKind.FROZEN, reason, {"freeze_id": fid, "until": until.isoformat() if until else None,
                                                                   "scope": track or "all"})  # fmt: skip
    log.info("frozen", track=track or "all", reason=reason, until=until.isoformat() if until else None, actor=actor.name)
    assert fid is not None
    return int(fid)


def unfreeze(ctx: Context, actor: Actor, reason: str, *, track: str | None = None) -> int:
    """Lift the manual freezes of a track (or of all tracks); re-judge what they held. How many."""
    if not reason.strip():
        raise ConductorError("lifting a freeze needs a reason")
    f = FREEZES.c
    scope = f.track_id.is_(None) if track is None else f.track_id == track
    return _lift(ctx, actor, reason, track, AuditKind.UNFROZEN, scope, f.source == "manual")


def _lift(ctx: Context, actor: Actor, reason: str, track: str | None, kind: AuditKind, *where: Any) -> int:
    """Lift the freeze rows `where` selects (not lifted yet), audit it as `kind`, re-judge the
    track's releases; how many rows."""
    now = ctx.now()
    f = FREEZES.c
    with ctx.db.begin() as conn:
        _check_track(conn, track)
        ids = list(conn.scalars(select(f.id).where(f.lifted_at.is_(None), *where)))
        if ids:
            conn.execute(FREEZES.update().where(f.id.in_(ids)).values(lifted_at=now, lifted_by=actor.name))
            _audit(conn, ctx, track, actor, kind, reason, {"freeze_ids": ids, "scope": track or "all"})
    if ids:
        rejudge(ctx, track)
    return len(ids)


def _cut_schedule(ctx: Context, conn: Connection, track: str) -> tuple[Any, str]:
    """The track's pipeline and the schedule of its branch cut (its first scheduled transition)."""
    row = conn.execute(select(TRACKS.c.definition_name).where(TRACKS.c.id == track)).first()
    if row is None:
        raise NotFound(f"unknown track {track!r}")
    pipeline = ctx.catalog.get(row.definition_name)
    schedule = next((t.schedule for t in pipeline.transitions if t.schedule), None)
    if schedule is None:
        raise ConductorError(f"track {track!r} ({pipeline.name}) has no scheduled branch cut to skip")
    return pipeline, schedule


def skip_next_cut(ctx: Context, actor: Actor, reason: str, *, track: str) -> datetime:
    """Skip the track's next scheduled branch cut (not one already skipped): releases waiting for it
    wait for the one after. Freezes nothing. Returns the skipped cut's time."""
    if not reason.strip():
        raise ConductorError("skipping a branch cut needs a reason")
    now = ctx.now()
    with ctx.db.begin() as conn:
        pipeline, schedule = _cut_schedule(ctx, conn, track)
        skipping = Policy(freezes=active(conn, track, now))
        cut = skipping.skip_cuts(pipeline, schedule, next_schedule_time(pipeline, schedule, now))
        row = {"track_id": track, "reason": reason, "source": SKIP, "actor": actor.name, "starts_at": cut - timedelta(minutes=1),
               "ends_at": cut + timedelta(minutes=1), "skip_branch_cut": True, "created_at": now}  # fmt: skip
        fid = conn.execute(FREEZES.insert().returning(FREEZES.c.id), row).scalar()
        _audit(
            conn, ctx, track, actor, AuditKind.BRANCH_CUT_SKIPPED, reason, {"freeze_id": fid, "cut": cut.isoformat(), "schedule": schedule}
        )
    log.info("branch_cut_skipped", track=track, cut=cut.isoformat(), reason=reason, actor=actor.name)
    rejudge(ctx, track)  # the waiting releases' cards name the new time
    return cut


def restore_cuts(ctx: Context, actor: Actor, reason: str, *, track: str) -> int:
    """Undo the skips of the track's coming branch cuts (not holidays: those are its calendar's). How many."""
    if not reason.strip():
        raise ConductorError("restoring a branch cut needs a reason")
    f = FREEZES.c
    return _lift(ctx, actor, reason, track, AuditKind.BRANCH_CUT_RESTORED, f.track_id == track, f.source == SKIP, f.ends_at > ctx.now())


def rejudge(ctx: Context, track: str | None) -> int:
    """Judge again every live release of the track (or of all tracks): what a freeze held may go."""
    from conductor.service.evaluation import judge

    with ctx.db.reading() as conn:
        q = select(RELEASES.c.id, RELEASES.c.stage, RELEASES.c.definition_hash)
        if track is not None:
            q = q.where(RELEASES.c.track_id == track)
        live = [r.id for r in conn.execute(q) if not ctx.pinned(conn, r.definition_hash).is_terminal(r.stage)]
    for rid in live:
        with open_step(ctx, rid) as step:
            judge(step, trigger="unfrozen")
    return len(live)


class _Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: date | datetime = Field(alias="from")
    end: date | datetime = Field(alias="to")
    reason: str = Field(min_length=1, max_length=500)


class _Holiday(BaseModel):
    model_config = ConfigDict(extra="forbid")
    day: date = Field(alias="date")
    reason: str = "holiday"


class _Blackout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: list[str] = Field(min_length=1)
    start: str = Field(alias="from", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(alias="to", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    reason: str | None = None

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d.upper() not in DAYS]
        if bad:
            raise ValueError(f"days are {', '.join(DAYS)}; not {', '.join(bad)}")
        return [d.upper() for d in v]


class Calendar(BaseModel):
    """A calendar file: `timezone`, `freezes` (from, to, reason), `holidays` (date, reason), `blackouts`
    (days, from, to). Dates without a time are whole days in the calendar's time zone."""

    model_config = ConfigDict(extra="forbid")
    timezone: str = "UTC"
    freezes: list[_Window] = []
    holidays: list[_Holiday] = []
    blackouts: list[_Blackout] = []

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


def set_calendar(ctx: Context, actor: Actor, raw: dict[str, Any], *, track: str | None = None) -> dict[str, int]:
    """Replace the calendar of a track (or of all tracks); InvalidSettings naming the field."""
    try:
        cal = Calendar.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidSettings(f"calendar: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    tz = ZoneInfo(cal.timezone)

    def at(value: date | datetime, end: bool = False) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=tz)
        return datetime.combine(value + timedelta(days=1) if end else value, time(0), tz)

    now = ctx.now()
    rows = [(w.reason, at(w.start), at(w.end, end=True), False) for w in cal.freezes]
    rows += [(h.reason, at(h.day), at(h.day, end=True), True) for h in cal.holidays]
    with ctx.db.begin() as conn:
        _check_track(conn, track)
        f = FREEZES.c
        scope = f.track_id.is_(None) if track is None else f.track_id == track
        conn.execute(delete(FREEZES).where(scope, f.source == "calendar"))
        for reason, start, end, skip in rows:
            row = {"track_id": track, "reason": reason, "source": "calendar", "actor": actor.name, "starts_at": start, "ends_at": end,
                   "skip_branch_cut": skip, "created_at": now}  # fmt: skip
            conn.execute(FREEZES.insert(), row)
        if track is not None:
            settings = dict(conn.execute(select(TRACKS.c.settings).where(TRACKS.c.id == track)).scalar() or {})
            settings["blackouts"] = [b.model_dump(by_alias=True) for b in cal.blackouts]
            settings["blackouts_timezone"] = cal.timezone
            conn.execute(TRACKS.update().where(TRACKS.c.id == track).values(settings=settings))
        counts = {"freezes": len(cal.freezes), "holidays": len(cal.holidays), "blackouts": len(cal.blackouts)}
        _audit(conn, ctx, track, actor, AuditKind.CALENDAR_SET, f"calendar: {counts}", {"scope": track or "all", **counts})
    return counts


def list_freezes(ctx: Context, track: str | None = None) -> list[dict[str, Any]]:
    """The freezes not lifted and not over, newest first."""
    now = ctx.now()
    f = FREEZES.c
    with ctx.db.reading() as conn:
        q = select(FREEZES).where(f.lifted_at.is_(None), or_(f.ends_at.is_(None), f.ends_at > now)).order_by(f.starts_at.desc())
        if track is not None:
            q = q.where(or_(f.track_id == track, f.track_id.is_(None)))
        return [dict(r._mapping) for r in conn.execute(q)]
