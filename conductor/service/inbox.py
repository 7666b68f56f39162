"""Inbound events: store first (inbox, unique per source and delivery id), then apply in one transaction.

`store_event` is what a webhook receiver calls before it answers 202; `process_event` is what a
worker (or the embedded runner) calls afterwards. Both are idempotent: a redelivered webhook
finds its row, and a redelivered task finds the event already processed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.exc import SQLAlchemyError

from conductor.errors import ConcurrentUpdate, ConductorError, NotFound
from conductor.service.engine import Actor, Conductor, current_event_id
from conductor.sources.events import InboundEvent
from conductor.store.models import InboxEvent, Release
from conductor.store.statements import (
    EVENT_BY_DELIVERY,
    FINISH_EVENT,
    INBOX,
    LOCK_EVENT,
    RELEASE_ID_BY_VERSION,
    TRACKS_OF_REPOSITORY,
    insert_new_id,
    lock_events,
    lock_releases,
    release_keys,
)

log = structlog.get_logger("conductor.inbox")

# Inbox row states. pending -> processed | ignored | unmatched | failed
PENDING, PROCESSED, IGNORED, UNMATCHED, FAILED = "pending", "processed", "ignored", "unmatched", "failed"
# Not a stored state: process_events left the event pending because another worker holds its release.
DEFERRED = "deferred"


# The per-event statements are built once (building a statement costs more than running it);
# the inbox row and the tracks are read and written with Core (conductor.store.statements).
# populate_existing: a row this session read before taking the lock is refreshed, so the write
# sees what the previous lock holder committed.
_LOCK_RELEASE = (
    select(Release).where(Release.track_id == bindparam("track_id"), Release.version == bindparam("version"))
    .with_for_update().execution_options(populate_existing=True)
)


@dataclass(frozen=True)
class Stored:
    event_id: int
    created: bool  # False: a redelivery of an event already in the inbox
    status: str
    # With store_event(..., preview=True): the release the event is about, or why none (not locked;
    # processing decides, this only lets the webhook's answer say what will happen).
    release_id: int | None = None
    why: str | None = None


@lru_cache(maxsize=256)
def branch_regex(pattern: str) -> re.Pattern[str]:
    """'release/{version}' -> a regex capturing the version from a branch name."""
    parts = pattern.split("{version}")
    if len(parts) != 2:
        raise ConductorError(f"branch pattern {pattern!r} must contain {{version}} exactly once")
    return re.compile(re.escape(parts[0]) + r"(?P<version>[^/\s]+?)" + re.escape(parts[1]))


def store_event(c: Conductor, event: InboundEvent, *, preview: bool = False) -> Stored:
    """Insert the event into the inbox unless (source, delivery_id) is there already.

    One INSERT ... ON CONFLICT DO NOTHING and the commit on the common path. With preview, the
    release the event names is looked up first, in the same transaction (see Stored); the preview
    is only a courtesy, so if it fails the event is stored without it, never lost for it."""
    if preview:
        try:
            return _store(c, event, preview=True)
        except SQLAlchemyError as exc:  # a database error aborts the transaction: store again, without the preview
            log.warning("event_match_preview_failed", source=event.source, delivery_id=event.delivery_id,
                        error=f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")
    return _store(c, event, preview=False)


def _store(c: Conductor, event: InboundEvent, *, preview: bool) -> Stored:
    with c.db.transaction() as s:
        conn = s.connection()
        release_id, why = None, None
        if preview:
            try:
                release_id, why = match_preview(s, event)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # a bug in the preview must not cost the event
                log.warning("event_match_preview_failed", source=event.source, delivery_id=event.delivery_id,
                            error=f"{exc.__class__.__name__}: {exc}")
        new_id = insert_new_id(conn, INBOX, ("source", "delivery_id"), {
            "source": event.source, "delivery_id": event.delivery_id, "kind": event.kind,
            "payload": event.model_dump(mode="json"), "status": PENDING, "attempts": 0, "received_at": c.now(),
        })
        if new_id is not None:
            stored = Stored(new_id, True, PENDING, release_id, why)
        else:  # a redelivery, or a concurrent delivery of the same id won the insert: read its row
            existing = conn.execute(EVENT_BY_DELIVERY, {"source": event.source, "delivery_id": event.delivery_id}).one()
            stored = Stored(existing.id, False, existing.status, release_id, why)
    # Logged once committed: a rolled-back insert is not reported as stored.
    if stored.created:
        log.info("event_stored", event_id=stored.event_id, source=event.source, delivery_id=event.delivery_id, kind=event.kind)
    else:
        log.info("event_deduplicated", event_id=stored.event_id, source=event.source, delivery_id=event.delivery_id)
    return stored


def match_preview(s, event: InboundEvent) -> tuple[int | None, str]:
    """Which release an event is about and, if none, why: the rule processing applies, without a lock."""
    track, version, why = _resolve(s, event)
    if track is None:
        return None, why
    rid = s.connection().execute(RELEASE_ID_BY_VERSION, {"track_id": track.id, "version": version}).scalar()
    return (rid, "") if rid is not None else (None, _not_started(event, track, version))


def _resolve(s, event: InboundEvent, tracks_cache: dict[str, list[Any]] | None = None) -> tuple[Any, str | None, str]:
    """The track and release version an event is about (no lock taken): the track's repository,
    its branch pattern, the version; or (None, None, why not). An ignorable event is about none."""
    if _ignorable(event):
        return None, None, event.reason or event.kind
    if not event.repository:
        return None, None, "event names no repository"
    tracks = tracks_cache.get(event.repository) if tracks_cache is not None else None
    if tracks is None:
        tracks = s.connection().execute(TRACKS_OF_REPOSITORY, {"repository": event.repository}).all()
        if tracks_cache is not None:
            tracks_cache[event.repository] = tracks
    if not tracks:
        return None, None, f"no track for repository {event.repository}"
    if not event.branch:
        return None, None, "event names no branch"
    for track in tracks:
        m = branch_regex(track.branch_pattern).fullmatch(event.branch)
        if m is not None:
            return track, m["version"], ""
    return None, None, f"branch {event.branch} matches no release branch pattern of {', '.join(t.id for t in tracks)}"


def _ignorable(event: InboundEvent) -> bool:
    return event.kind in ("ping", "ignored")


def _not_started(event: InboundEvent, track: Any, version: str) -> str:
    return f"branch {event.branch} is release {version} of {track.id}, which was not started"


def process_event(c: Conductor, event_id: int) -> str:
    """Apply a stored event to its release and evaluate it, all in one transaction; returns the new status."""
    token = current_event_id.set(event_id)
    try:
        with structlog.contextvars.bound_contextvars(event_id=event_id):
            try:
                return _process(c, event_id)
            except ConcurrentUpdate:
                raise  # nothing was written: the caller retries (the worker task does, with backoff)
            except ConductorError as exc:
                return _mark_failed(c, event_id, exc)
    finally:
        current_event_id.reset(token)


def _mark_failed(c: Conductor, event_id: int, exc: Exception) -> str:
    """Bad data inside an authentic event: keep the event, say why, never drop it silently."""
    with c.db.transaction() as s:
        row = s.get(InboxEvent, event_id)
        if row is None or row.status != PENDING:
            return row.status if row else FAILED
        row.status, row.note, row.processed_at = FAILED, str(exc), c.now()
        row.attempts += 1
    log.warning("event_failed", event_id=event_id, error=str(exc))
    return FAILED


def _process(c: Conductor, event_id: int) -> str:
    with c._commit_guard() as s:
        conn = s.connection()
        row = conn.execute(LOCK_EVENT, {"event_id": event_id}).one_or_none()
        if row is None:
            raise NotFound(f"unknown event {event_id}")
        if row.status != PENDING:
            return row.status  # processed before: a redelivered task changes nothing
        event = InboundEvent.model_validate(row.payload)
        release = None
        track, version, why = _resolve(s, event)
        if track is not None:
            # The release row is locked from here to commit.
            release = s.scalars(_LOCK_RELEASE, {"track_id": track.id, "version": version}).one_or_none()
            if release is None:
                why = _not_started(event, track, version)
        status, note, release_id = _apply(c, s, event_id, event, release, track, why)
        conn.execute(FINISH_EVENT, {"event_id": event_id, "status": status, "note": note, "release_id": release_id,
                                    "processed_at": c.now()})
        return status


def _apply(c: Conductor, s, event_id: int, event: InboundEvent, release: Release | None, track: Any, why: str
           ) -> tuple[str, str | None, int | None]:
    """Apply one event to its (locked) release and evaluate it; returns the event's (status, note, release id).

    The caller writes the outcome to the inbox row in the same transaction."""
    if _ignorable(event):
        status, note, release_id = IGNORED, event.reason or event.kind, None
    elif release is None:
        status, note, release_id = UNMATCHED, why, None
    else:
        with structlog.contextvars.bound_contextvars(release_id=release.id):
            pipeline = c.pipeline_of(s, release)
            actor = Actor(event.source, "ci")
            notes: list[str] = []
            cut = event.kind == "branch_created" or "branch_created" in event.labels
            if cut and release.stage == pipeline.initial_stage:
                if event.sha:
                    release.head_sha = event.sha
                c._branch_cut(s, release, pipeline, actor, f"release branch {event.branch} created ({event.source})")
            elif event.kind == "branch_push":
                if release.stage != pipeline.initial_stage:
                    _apply_push(c, s, release, track, event, notes)
                else:
                    notes.append("push before the branch cut: nothing to re-open")
            for sig in event.signals:
                if sig.name not in pipeline.signals:
                    notes.append(f"{sig.name} is not a signal of {pipeline.name}")
                    continue
                c._add_signal(
                    s, release, pipeline, sig.name, sig.value, samples=sig.samples, source=event.source,
                    observed_at=event.occurred_at if event.occurred_at and event.occurred_at <= c.now() else None,
                    sha=event.sha, actor=actor, event_id=event_id,
                )
            c._evaluate_locked(s, release, pipeline, trigger=f"event:{event_id}")
            status, note, release_id = PROCESSED, "; ".join(notes) or None, release.id
    log.info("event_processed", event_id=event_id, status=status, note=note, release_id=release_id)
    return status, note, release_id


def process_events(c: Conductor, event_ids: list[int], *, wait: bool = False) -> dict[int, str]:
    """Apply a batch of stored events in one transaction (the worker's fast path); returns each one's status.

    The result is the same as processing them one by one in id order: each event is applied and
    its release evaluated in turn, so a bad value followed by a good one still halts. What the
    batch saves is the per-transaction cost: one lock statement for the inbox rows, one for the
    releases (taken in id order, so two batches never deadlock), one commit.

    Events another worker holds are skipped (SKIP LOCKED): it is applying them. Unless `wait`,
    an event whose release another worker holds is not waited for either: it stays pending and
    comes back as DEFERRED, for the caller to apply right after with wait=True (so two workers
    with overlapping batches run side by side instead of one after the other). If any event carries
    bad data, nothing of the batch is kept and each event is processed on its own, so one bad
    event fails alone.
    """
    ids = sorted(set(event_ids))
    if len(ids) == 1:
        return {ids[0]: process_event(c, ids[0])}
    try:
        return _process_batch(c, ids, skip_busy_releases=not wait and not c.db.is_sqlite)
    except ConcurrentUpdate:
        raise  # nothing was written: the caller retries
    except ConductorError as exc:
        log.info("event_batch_split", events=len(ids), error=str(exc))
        return {event_id: process_event(c, event_id) for event_id in ids}


def _process_batch(c: Conductor, ids: list[int], *, skip_busy_releases: bool) -> dict[int, str]:
    statuses: dict[int, str] = {}
    with c._commit_guard() as s:
        conn = s.connection()
        q = lock_events(ids, skip_locked=not c.db.is_sqlite)
        rows = conn.execute(q).all()
        found = {r.id for r in rows}
        # Not locked: processed already, or held by another worker which is applying it.
        others = [i for i in ids if i not in found]
        if others:
            for r in conn.execute(select(INBOX.c.id, INBOX.c.status).where(INBOX.c.id.in_(others))):
                statuses[r.id] = r.status
        for missing in set(ids) - found - set(statuses):
            raise NotFound(f"unknown event {missing}")
        work = []
        tracks_cache: dict[str, list[Any]] = {}
        wanted: set[tuple[str, str]] = set()
        for r in rows:
            if r.status != PENDING:
                statuses[r.id] = r.status
                continue
            event = InboundEvent.model_validate(r.payload)
            track, version, why = _resolve(s, event, tracks_cache)
            if track is not None:
                wanted.add((track.id, version))
            work.append((r.id, event, track, version, why))
        releases = {}
        busy: set[tuple[str, str]] = set()
        if wanted:
            keys = sorted(wanted)
            # Ordered by id: batches that do wait never deadlock each other.
            locked = s.scalars(lock_releases(keys, skip_locked=skip_busy_releases)).all()
            releases = {(r.track_id, r.version): r for r in locked}
            if skip_busy_releases and len(releases) < len(keys):  # skipped, or never started?
                busy = {tuple(k) for k in conn.execute(release_keys([k for k in keys if k not in releases]))}
        finished = []
        for event_id, event, track, version, why in work:
            if track is not None and (track.id, version) in busy:
                statuses[event_id] = DEFERRED  # stays pending; the caller applies it next, waiting
                continue
            release = releases.get((track.id, version)) if track is not None else None
            if track is not None and release is None:
                why = _not_started(event, track, version)
            token = current_event_id.set(event_id)
            try:
                with structlog.contextvars.bound_contextvars(event_id=event_id):
                    status, note, release_id = _apply(c, s, event_id, event, release, track, why)
            finally:
                current_event_id.reset(token)
            statuses[event_id] = status
            finished.append({"event_id": event_id, "status": status, "note": note, "release_id": release_id, "processed_at": c.now()})
        if finished:
            conn.execute(FINISH_EVENT, finished)  # one executemany for the batch
    return statuses


def _apply_push(c: Conductor, s, release: Release, track: Any, event: InboundEvent, notes: list[str]) -> None:
    """A push to the release branch: new head (re-opens build/test gates) and the critical-fix rule."""
    if event.sha and event.sha != release.head_sha:
        release.head_sha = event.sha
        release.updated_at = c.now()
    marker = (track.critical_fix_marker if track else "Release-Fix: critical").strip()
    labelled = any(marker.lower() == label.lower() for label in event.labels)
    unmarked: list[dict[str, Any]] = [
        {"sha": cm.sha, "message": cm.message.splitlines()[0][:200] if cm.message else "", "author": cm.author}
        for cm in event.commits
        if not labelled and marker.lower() not in cm.message.lower()
    ]
    if unmarked:
        known = {cm["sha"] for cm in release.unreviewed_commits}
        fresh = [cm for cm in unmarked if cm["sha"] not in known]
        if fresh:
            release.unreviewed_commits = [*release.unreviewed_commits, *fresh]
            c._audit(s, release, "unreviewed_change", event.source, f"{len(fresh)} commit(s) without {marker!r}", data={"commits": fresh})
            notes.append(f"{len(fresh)} commit(s) without the critical-fix marker")


def inbox_status(c: Conductor, event_id: int) -> dict[str, Any]:
    with c.db.read() as s:
        row = s.get(InboxEvent, event_id)
        if row is None:
            raise NotFound(f"unknown event {event_id}")
        return {"id": row.id, "source": row.source, "delivery_id": row.delivery_id, "kind": row.kind, "status": row.status, "note": row.note, "release_id": row.release_id}


def pending_event_ids(c: Conductor, older_than: datetime | None = None, limit: int = 1000) -> list[int]:
    """Events still pending (for the sweeper), oldest first."""
    with c.db.read() as s:
        q = select(InboxEvent.id).where(InboxEvent.status == PENDING)
        if older_than is not None:
            q = q.where(InboxEvent.received_at <= older_than)
        return list(s.scalars(q.order_by(InboxEvent.id).limit(limit)))
