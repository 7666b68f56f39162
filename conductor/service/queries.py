"""Read side for the API: tracks, release lists with filters and pagination, decisions, event matching.

Nothing here writes. Each function opens one read session and returns detached rows (or plain
values), so callers can use them after the session closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text

from conductor.errors import NotFound
from conductor.service.engine import Conductor, ReleaseSnapshot
from conductor.store.models import Evaluation, Release, Track

# Keys of Track.settings that hold webhook secrets, per source.
SECRET_KEYS = {"github": "github_secret", "gitlab": "gitlab_token", "standard_webhooks": "webhook_secret"}


def ping(c: Conductor) -> None:
    """Raise (SQLAlchemy error) unless the database answers a trivial query."""
    with c.db.read() as s:
        s.execute(text("SELECT 1"))


def list_tracks(c: Conductor) -> list[Track]:
    with c.db.read() as s:
        rows = list(s.scalars(select(Track).order_by(Track.id)))
        s.expunge_all()
        return rows


def get_track(c: Conductor, track_id: str) -> Track:
    """The track, or NotFound."""
    with c.db.read() as s:
        track = s.get(Track, track_id)
        if track is None:
            raise NotFound(f"unknown track {track_id!r}")
        s.expunge(track)
        return track


@dataclass(frozen=True)
class ReleasePage:
    items: list[ReleaseSnapshot]  # with empty audit/outbox/timers: enough for status and lights
    next_cursor: int | None


def list_releases(
    c: Conductor,
    *,
    track: str | None = None,
    stage: str | None = None,
    awaiting_approval: bool | None = None,
    paused: bool | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> ReleasePage:
    """Releases newest first; `cursor` is the `next_cursor` of the previous page (ids below it)."""
    q = select(Release)
    if track is not None:
        q = q.where(Release.track_id == track)
    if stage is not None:
        q = q.where(Release.stage == stage)
    if awaiting_approval is not None:
        q = q.where(Release.pending_evaluation_id.is_not(None) if awaiting_approval else Release.pending_evaluation_id.is_(None))
    if paused is not None:
        q = q.where(Release.paused.is_(paused))
    if cursor is not None:
        q = q.where(Release.id < cursor)
    with c.db.read() as s:
        rows = list(s.scalars(q.order_by(Release.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.id for r in rows]
        latest_ids = (
            s.execute(select(func.max(Evaluation.id)).where(Evaluation.release_id.in_(ids)).group_by(Evaluation.release_id)).scalars().all()
            if ids
            else []
        )
        wanted = set(latest_ids) | {r.pending_evaluation_id for r in rows if r.pending_evaluation_id}
        evaluations = {e.id: e for e in s.scalars(select(Evaluation).where(Evaluation.id.in_(wanted)))} if wanted else {}
        latest = {evaluations[i].release_id: evaluations[i] for i in latest_ids if i in evaluations}
        items = [
            ReleaseSnapshot(r, c.pipeline_of(s, r), latest.get(r.id),
                            evaluations.get(r.pending_evaluation_id) if r.pending_evaluation_id else None, [], [], [])
            for r in rows
        ]
        s.expunge_all()
    return ReleasePage(items, rows[-1].id if more and rows else None)


def get_decision(c: Conductor, release_id: int, decision_id: int) -> tuple[Evaluation, bool]:
    """A stored decision (evaluation) of the release and whether it is the pending one; NotFound otherwise."""
    with c.db.read() as s:
        release = s.get(Release, release_id)
        if release is None:
            raise NotFound(f"unknown release {release_id}")
        ev = s.get(Evaluation, decision_id)
        if ev is None or ev.release_id != release_id:
            raise NotFound(f"release {release.key} has no decision {decision_id}")
        pending = release.pending_evaluation_id == ev.id
        s.expunge(ev)
        return ev, pending


def track_secrets(c: Conductor, source: str) -> dict[str, list[str]]:
    """Per-track webhook secrets of one source ('github', 'gitlab', 'standard_webhooks') by repository.

    A value in Track.settings may be one secret or a list (rotation). Tracks without a repository
    cannot be matched to a delivery, so their secrets are not offered.
    """
    key = SECRET_KEYS[source]
    out: dict[str, list[str]] = {}
    with c.db.read() as s:
        for repository, settings in s.execute(select(Track.repository, Track.settings).where(Track.repository.is_not(None))):
            value: Any = (settings or {}).get(key)
            values = [value] if isinstance(value, str) else list(value or [])
            secrets = [v for v in values if isinstance(v, str) and v]
            if secrets:
                out.setdefault(repository, []).extend(secrets)
    return out
