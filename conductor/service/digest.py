"""The morning digest: what happened to a track's releases while nobody watched, riskiest first.

At the start of each track's working day (09:00 in its pipeline's time zone, Monday to Friday) a
release manager reads: what moved overnight; what is paused, and waiting for whom; what halted
and why. Items are ranked by risk: the users a release exposes (its stage's share; a halted
release counts the stage it halted in) times how bad its signal is (a failed gate 3, a question
2, a pause 1). A release held on a failed gate, or on a question nobody answered by its deadline
(it can still be answered), is listed with what it waits for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import func, select

from conductor.actions.base import ActionFailed, ActionRequest, ReleaseRef
from conductor.actions.registry import ActionAdapters
from conductor.context import Context
from conductor.domain.definition import Pipeline
from conductor.domain.errors import ConductorError
from conductor.domain.kinds import MOVES, ROBOT, AuditKind
from conductor.store.questions import unanswered_escalation
from conductor.store.statements import AUDIT, EVALUATIONS, INSERT_AUDIT, RELEASES, TRACKS

log = structlog.get_logger("conductor.digest")

WORKDAY_START = time(9, 0)
SEVERITY = {"halted": 3, "held": 3, "asking": 2, "paused": 1, "moved": 0}


@dataclass(frozen=True, slots=True)
class DigestItem:
    release: str
    kind: str  # halted, held, asking, paused, moved
    text: str
    exposure: float  # percent of users the release reaches
    risk: float


@dataclass(frozen=True, slots=True)
class Digest:
    track: str
    since: datetime
    until: datetime
    items: tuple[DigestItem, ...]
    timezone: str = "UTC"

    def text(self) -> str:
        """The digest as plain lines (Slack, the CLI, the demo), times in the track's time zone."""
        tz = ZoneInfo(self.timezone)
        head = (
            f"Morning digest for {self.track} ({self.since.astimezone(tz):%a %d %b %H:%M} to {self.until.astimezone(tz):%a %d %b %H:%M %Z})"
        )
        if not self.items:
            return f"{head}: nothing happened, nothing waits."
        return "\n".join([head, *(f"{i + 1}. {item.release} {item.kind}: {item.text}" for i, item in enumerate(self.items))])


def workday_start(pipeline: Pipeline, now: datetime) -> datetime:
    """The start of the working day that `now` belongs to (or the last one before it)."""
    tz = ZoneInfo(pipeline.timezone)
    local = now.astimezone(tz)
    day = local.date()
    while True:
        start = datetime.combine(day, WORKDAY_START, tz)
        if day.weekday() < 5 and start <= local:
            return start
        day -= timedelta(days=1)


def _exposure(pipeline: Pipeline, r: Any) -> float:
    from conductor.domain.policy import exposure

    stage = r.halted_from if pipeline.stages[r.stage].kind == "halted" and r.halted_from else r.stage
    return exposure(pipeline, stage) if stage in pipeline.stages else 0.0


def digest(ctx: Context, track_id: str, since: datetime, until: datetime) -> Digest:
    """The digest of one track's releases between `since` and `until`."""
    with ctx.db.reading() as conn:
        releases = list(conn.execute(select(RELEASES).where(RELEASES.c.track_id == track_id)))
        pipelines = {r.id: ctx.pinned(conn, r.definition_hash) for r in releases}
        moves = conn.execute(
            select(AUDIT.c.release_id, AUDIT.c.kind, AUDIT.c.at, AUDIT.c.actor, AUDIT.c.from_stage, AUDIT.c.to_stage, AUDIT.c.reason)
            .where(AUDIT.c.release_id.in_([r.id for r in releases]), AUDIT.c.at >= since, AUDIT.c.at <= until)
            .order_by(AUDIT.c.id)
        ).all()  # fmt: skip
        halted_ids = [r.id for r in releases if ctx.pinned(conn, r.definition_hash).stages[r.stage].kind == "halted"]
        halts = {
            rid: reason
            for rid, reason in conn.execute(
                select(AUDIT.c.release_id, AUDIT.c.reason)
                .where(AUDIT.c.release_id.in_(halted_ids), AUDIT.c.kind == AuditKind.HALTED)
                .order_by(AUDIT.c.id)
            )
        }  # the newest halt of each (later rows overwrite earlier ones)
        asked = {
            r.id: conn.execute(select(AUDIT.c.at, AUDIT.c.reason).where(AUDIT.c.evaluation_id == r.pending_evaluation_id,
                                                                         AUDIT.c.kind == AuditKind.APPROVAL_REQUESTED)).first()
            for r in releases if r.pending_evaluation_id
        }  # fmt: skip
        held = _held(conn, [r for r in releases if _may_be_held(pipelines[r.id], r)], tz=ZoneInfo(_zone(pipelines)))
    items: list[DigestItem] = []
    by_id = {r.id: r for r in releases}
    zone = _zone(pipelines)
    tz = ZoneInfo(zone)
    for r in releases:
        p = pipelines[r.id]
        exp = _exposure(p, r)
        kind = p.stages[r.stage].kind
        if kind == "halted":
            why = halts.get(r.id)
            items.append(_item(r, "halted", f"halted at {r.halted_from}: {why or 'see its page'}; resuming needs a release manager", exp))
        elif r.pending_evaluation_id and (a := asked.get(r.id)) is not None:
            items.append(_item(r, "asking", f"waits for a release manager since {a.at.astimezone(tz):%a %H:%M}: {a.reason}", exp))
        elif r.paused:
            items.append(_item(r, "paused", f"paused: {r.pause_reason}", exp))
        elif (h := held.get(r.id)) is not None:
            items.append(_item(r, *h, exp))
    for m in moves:
        if m.kind in MOVES and m.kind != AuditKind.HALTED and m.to_stage:
            r = by_id[m.release_id]
            items.append(
                _item(
                    r, "moved", f"{m.from_stage or 'start'} -> {m.to_stage} at {m.at:%a %H:%M} by {m.actor}", _exposure(pipelines[r.id], r)
                )
            )
    items.sort(key=lambda i: (-i.risk, -SEVERITY[i.kind], i.release))
    return Digest(track_id, since, until, tuple(items), zone)


def _zone(pipelines: dict[int, Pipeline]) -> str:
    return next(iter(pipelines.values())).timezone if pipelines else "UTC"


def _may_be_held(pipeline: Pipeline, r: Any) -> bool:
    return pipeline.stages[r.stage].kind in ("stage", "rollout") and not r.paused and r.pending_evaluation_id is None


def _held(conn: Any, releases: list[Any], tz: ZoneInfo) -> dict[int, tuple[str, str]]:
    """For each release held in its stage by its latest judgement: (kind, what it waits for)."""
    if not releases:
        return {}
    e = EVALUATIONS.c
    newest = select(func.max(e.id)).where(e.release_id.in_([r.id for r in releases])).group_by(e.release_id)
    latest = {row.release_id: row for row in conn.execute(select(e.release_id, e.stage, e.verdict, e.evidence, e.created_at)
                                                          .where(e.id.in_(newest)))}  # fmt: skip
    out: dict[int, tuple[str, str]] = {}
    for r in releases:
        ev = latest.get(r.id)
        if ev is None or ev.stage != r.stage or ev.verdict not in ("hold", "ask", "halt"):
            continue
        summary = (ev.evidence or {}).get("summary", "")
        if ev.verdict == "ask" and unanswered_escalation(conn, r.id, r.stage, r.rejected_fingerprint) is not None:
            out[r.id] = ("asking", f"unanswered by its deadline (asked about {ev.created_at.astimezone(tz):%a %H:%M}): "
                                   f"waits for a release manager's late answer: {summary}")  # fmt: skip
        elif ev.verdict == "ask":
            out[r.id] = ("held", f"held in {r.stage}: not approved; waits for new evidence: {summary}")
        elif ev.verdict == "halt":
            out[r.id] = ("held", f"held in {r.stage} after a resume over failing evidence; waits for new evidence: {summary}")
        else:
            out[r.id] = ("held", f"held in {r.stage}: {summary}; waits for a fix")
    return out


def _item(r: Any, kind: str, text: str, exposure: float) -> DigestItem:
    return DigestItem(f"{r.track_id}/{r.version}", kind, text, exposure, max(exposure, 0.1) * SEVERITY[kind])


@dataclass
class DigestRun:
    sent: list[str]
    failed: list[str]


def send_due(ctx: Context, adapters: ActionAdapters) -> DigestRun:
    """Each track whose working day has started since its last digest gets one: to its notification
    channels (Slack, signed webhook), and as an audit row the dashboard shows (`digest`). A digest
    that could not be sent is tried again at the next run."""
    now = ctx.now()
    run = DigestRun([], [])
    with ctx.db.reading() as conn:
        rows = conn.execute(select(TRACKS.c.id, TRACKS.c.definition_name, TRACKS.c.settings).order_by(TRACKS.c.id)).all()
        last = dict(conn.execute(select(AUDIT.c.track_id, func.max(AUDIT.c.at)).where(AUDIT.c.kind == AuditKind.DIGEST)
                                 .group_by(AUDIT.c.track_id)).all())  # fmt: skip
    for t in rows:
        try:
            pipeline = ctx.catalog.get(t.definition_name)
        except ConductorError:
            continue
        start = workday_start(pipeline, now)
        previous = last.get(t.id)
        if previous is not None and previous >= start:
            continue
        d = digest(ctx, t.id, previous or start - timedelta(days=1), now)
        if _deliver(adapters, t.id, dict(t.settings or {}), d):
            _record(ctx, d)
            run.sent.append(t.id)
        else:
            run.failed.append(t.id)
    return run


def _deliver(adapters: ActionAdapters, track_id: str, settings: dict[str, Any], d: Digest) -> bool:
    params = {"event": "digest", "summary": d.text(), "track": track_id}
    request = ActionRequest("notify", params, f"digest:{track_id}:{d.until.isoformat()}", 1, ReleaseRef(0, track_id, "digest", "-"))
    try:
        adapters.run(request, track_id, settings)
        return True
    except ActionFailed as exc:
        log.warning("digest_not_sent", track=track_id, error=str(exc))
        return False


def _record(ctx: Context, d: Digest) -> None:
    items = [{"release": i.release, "kind": i.kind, "text": i.text, "exposure": i.exposure, "risk": i.risk} for i in d.items]
    with ctx.db.begin() as conn:
        conn.execute(INSERT_AUDIT, {"release_id": None, "track_id": d.track, "at": d.until, "actor": ROBOT, "kind": AuditKind.DIGEST.value,
                                    "reason": d.text(), "data": {"since": d.since.isoformat(), "items": items}})  # fmt: skip
