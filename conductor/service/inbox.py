"""Inbound events: store first (the inbox, unique per source and delivery id), then apply in batches.

`store_event` is what a webhook receiver calls before it answers 202: one INSERT ... ON CONFLICT
... RETURNING, nothing else. `process_events` is what a worker (or the embedded runner) calls
afterwards, for one event or many: one transaction locks the inbox rows, resolves each event to
its release, locks those releases in one statement, applies the events in id order on their
releases' steps and marks them done. Both are idempotent: a redelivered webhook finds its row,
and a redelivered task finds its events already processed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

import structlog
from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError

from conductor.context import Context
from conductor.domain.errors import ConcurrentUpdate, ConductorError, NotFound
from conductor.domain.kinds import DEFERRED, AuditKind, InboxStatus
from conductor.service.evaluation import branch_cut, judge
from conductor.service.releases import set_build
from conductor.service.signals import add_signal, audit_intake
from conductor.service.step import Actor, ReleaseStep, handed_off, preload_signals
from conductor.sources.events import InboundEvent
from conductor.store.releases import lock_releases, records
from conductor.store.statements import (
    EVENT_BY_DELIVERY,
    EVENT_BY_DIGEST,
    FAIL_PENDING_EVENT,
    FINISH_EVENT,
    INBOX,
    OUTBOX,
    TRACKS_OF_REPOSITORY,
    insert_new_id,
    lock_events,
    release_keys,
)
from conductor.store.writes import Writes

log = structlog.get_logger("conductor.inbox")

IGNORABLE_KINDS = ("ping", "ignored")
MAX_DELIVERY_ID = 200  # inbox.delivery_id


@dataclass(frozen=True)
class Stored:
    event_id: int
    created: bool  # False: a redelivery of an event already in the inbox
    status: str


@lru_cache(maxsize=256)
def branch_regex(pattern: str) -> re.Pattern[str]:
    """'release/{version}' -> a regex capturing the version from a branch name."""
    parts = pattern.split("{version}")
    if len(parts) != 2:
        raise ConductorError(f"branch pattern {pattern!r} must contain {{version}} exactly once")
    return re.compile(re.escape(parts[0]) + r"(?P<version>[^/\s]+?)" + re.escape(parts[1]))


@dataclass(frozen=True)
class ReplayGuard:
    """For sources whose signatures cover no timestamp or id (GitHub, GitLab): a body seen within
    `window` under another delivery id is a replay of it, answered as a duplicate.

    A best effort, documented as such: it holds within the window only, and two identical bodies
    arriving in the same instant can both be stored (nothing locks a digest)."""

    digest: str  # SHA-256 of the raw body
    window: timedelta


def store_event(ctx: Context, event: InboundEvent, replay: ReplayGuard | None = None) -> Stored:
    """Insert the event into the inbox unless (source, delivery_id) is there already.

    One INSERT ... ON CONFLICT DO NOTHING RETURNING in its own short transaction on the common
    path; a redelivery reads the existing row's id and status instead. A pooled connection that
    died since its last use (the database restarted) is replaced and the store tried once more:
    the pool does not pre-ping, so that costs nothing on the common path."""
    try:
        return _store(ctx, event, replay)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("event_store_reconnected", source=event.source, delivery_id=event.delivery_id)
    return _store(ctx, event, replay)


def delivery_key(delivery_id: str) -> str:
    """The inbox's dedupe key for a delivery id: the id itself, or for one longer than the column
    holds (senders choose their ids) its SHA-256, so every backend stores and dedupes it alike.
    The full id stays in the stored payload."""
    if len(delivery_id) <= MAX_DELIVERY_ID:
        return delivery_id
    return "sha256:" + hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).hexdigest()


def _store(ctx: Context, event: InboundEvent, replay: ReplayGuard | None) -> Stored:
    key = delivery_key(event.delivery_id)
    # One statement, its own transaction: INSERT ... ON CONFLICT DO NOTHING RETURNING id.
    with ctx.db.autocommit() as conn:
        if replay is not None:
            seen = conn.execute(
                EVENT_BY_DIGEST, {"source": event.source, "digest": replay.digest, "since": ctx.now() - replay.window}
            ).first()
            if seen is not None:
                log.warning("event_replayed", event_id=seen.id, source=event.source, delivery_id=event.delivery_id)
                return Stored(seen.id, False, seen.status)
        new_id = insert_new_id(conn, INBOX, ("source", "delivery_id"), {
            "source": event.source, "delivery_id": key, "kind": event.kind, "payload": event.model_dump(mode="json"),
            "repository": event.repository, "branch": event.branch, "body_digest": replay.digest if replay else None,
            "status": InboxStatus.PENDING.value, "attempts": 0,
            "received_at": ctx.now(),
        })  # fmt: skip
        if new_id is not None:
            stored = Stored(new_id, True, InboxStatus.PENDING.value)
        else:  # a redelivery, or a concurrent delivery of the same id won the insert: read its row
            existing = conn.execute(EVENT_BY_DELIVERY, {"source": event.source, "delivery_id": key}).one()
            stored = Stored(existing.id, False, existing.status)
    # Logged once committed: a rolled-back insert is not reported as stored.
    if stored.created:
        log.info("event_stored", event_id=stored.event_id, source=event.source, delivery_id=event.delivery_id, kind=event.kind)
    else:
        log.info("event_deduplicated", event_id=stored.event_id, source=event.source, delivery_id=event.delivery_id)
    return stored


# ---------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Target:
    """Which release an event is about: its track row and version, or why none."""

    track: Any = None
    version: str | None = None
    why: str = ""

    @property
    def key(self) -> tuple[str, str] | None:
        return (self.track.id, self.version) if self.track is not None and self.version is not None else None


def resolve(conn: Connection, event: InboundEvent, tracks_cache: dict[str, list[Any]]) -> Target:
    """The track and release version an event is about (no lock taken): the track's repository,
    its branch pattern, the version. An ignorable event is about none. `tracks_cache` holds the
    tracks of repositories already read (the batch's lock statement reads those it names); the
    others (rows stored before the inbox kept the repository) are read here."""
    if event.kind in IGNORABLE_KINDS:
        return Target(why=event.reason or event.kind)
    if not event.repository:
        return Target(why="event names no repository")
    tracks = tracks_cache.get(event.repository)
    if tracks is None:
        tracks = tracks_cache[event.repository] = list(conn.execute(TRACKS_OF_REPOSITORY, {"repository": event.repository}))
    if not tracks:
        return Target(why=f"no track for repository {event.repository}")
    if not event.branch:
        return Target(why="event names no branch")
    for track in tracks:
        m = branch_regex(track.branch_pattern).fullmatch(event.branch)
        if m is not None:
            return Target(track, m["version"])
    return Target(why=f"branch {event.branch} matches no release branch pattern of {', '.join(t.id for t in tracks)}")


def not_started(event: InboundEvent, target: Target) -> str:
    return f"branch {event.branch} is release {target.version} of {target.track.id}, which was not started"


# ---------------------------------------------------------------------------- processing


@dataclass
class Batch:
    """What process_events did: each event's status, and the actions its steps queued (leased)."""

    statuses: dict[int, str] = field(default_factory=dict)
    actions: list[int] = field(default_factory=list)


def process_events(ctx: Context, event_ids: list[int], *, wait: bool = False, lease: timedelta | None = None) -> Batch:
    """Apply stored events (one, or a batch) in one transaction; the result is the same as applying
    them one by one in id order: each event is applied and its release judged in turn, so a bad
    value followed by a good one still halts. What a batch saves is the per-transaction cost.

    Events another worker holds are skipped (SKIP LOCKED): it is applying them. Unless `wait`, an
    event whose release another worker holds is not waited for either: it stays pending and comes
    back as DEFERRED, for the caller to apply right after with wait=True (so two workers with
    overlapping batches run side by side). If an event carries bad data, nothing of the batch is
    kept and each event is applied on its own, so only that one is marked failed, with the reason.
    """
    ids = sorted(set(event_ids))
    try:
        return _apply_batch(ctx, ids, wait=wait, lease=lease)
    except ConcurrentUpdate:
        raise  # nothing was written: the caller retries
    except ConductorError as exc:
        if len(ids) == 1:
            return Batch({ids[0]: _mark_failed(ctx, ids[0], exc)})
        log.info("event_batch_split", events=len(ids), error=str(exc))
    out = Batch()
    for event_id in ids:
        one = process_events(ctx, [event_id], wait=True, lease=lease)
        out.statuses.update(one.statuses)
        out.actions += one.actions
    return out


def _mark_failed(ctx: Context, event_id: int, exc: Exception) -> str:
    """Bad data inside an authentic event: keep the event, say why, never drop it silently."""
    with ctx.db.begin() as conn:
        conn.execute(FAIL_PENDING_EVENT, {"event_id": event_id, "note": str(exc)[:2000], "processed_at": ctx.now()})
        status = conn.execute(select(INBOX.c.status).where(INBOX.c.id == event_id)).scalar()
    log.warning("event_failed", event_id=event_id, error=str(exc))
    return status or InboxStatus.FAILED.value


def _apply_batch(ctx: Context, ids: list[int], *, wait: bool, lease: timedelta | None) -> Batch:
    out = Batch()
    skip = not wait and not ctx.db.is_sqlite
    with ctx.db.begin() as conn:
        # Lock and read: the inbox rows with the tracks of their repositories, then the releases
        # they name (with their last evaluation) and those releases' latest signals.
        rows, tracks_cache = _locked_events(conn, ids, skip_locked=skip)
        others = [i for i in ids if i not in rows]
        if others:  # processed already, or held by another worker which is applying them
            out.statuses.update({r.id: r.status for r in conn.execute(select(INBOX.c.id, INBOX.c.status).where(INBOX.c.id.in_(others)))})
        for missing in set(ids) - set(rows) - set(out.statuses):
            raise NotFound(f"unknown event {missing}")
        work: list[tuple[int, InboundEvent, Target]] = []
        for event_id, row in rows.items():
            if row.status != InboxStatus.PENDING:
                out.statuses[event_id] = row.status
                continue
            event = InboundEvent.model_validate(row.payload)
            work.append((event_id, event, resolve(conn, event, tracks_cache)))
        wanted = sorted({t.key for _, _, t in work if t.key is not None})
        writes = Writes(conn)
        steps: dict[tuple[str, str], ReleaseStep] = {}
        busy: set[tuple[str, str]] = set()
        if wanted:
            for release in records(conn, lock_releases("keys", skip_locked=skip), {"keys": wanted}, locked=True):
                steps[(release.track_id, release.version)] = ReleaseStep(
                    conn, release, ctx.pinned(conn, release.definition_hash), ctx.clock, lease=lease, writes=writes
                )
            if skip and len(steps) < len(wanted):  # skipped, or never started?
                busy = {(k.track_id, k.version) for k in conn.execute(release_keys([k for k in wanted if k not in steps]))}
            preload_signals(conn, list(steps.values()))
        finished = []
        for event_id, event, target in work:
            if target.key in busy:
                out.statuses[event_id] = DEFERRED  # stays pending; the caller applies it next, waiting
                continue
            step = steps.get(target.key) if target.key else None
            with structlog.contextvars.bound_contextvars(event_id=event_id):
                status, note, release_id = _apply(step, event_id, event, target)
            out.statuses[event_id] = status
            finished.append({"event_id": event_id, "status": status, "note": note, "release_id": release_id, "processed_at": ctx.now()})
        # Write: everything the steps buffered, the releases, the inbox rows, and the COMMIT.
        for step in steps.values():
            step.save()
        if finished:
            writes.add(FINISH_EVENT, finished)
        writes.commit()
    out.actions = handed_off(ctx, [key for step in steps.values() for key in step.queued])
    return out


def _locked_events(conn: Connection, ids: list[int], *, skip_locked: bool) -> tuple[dict[int, Any], dict[str, list[Any]]]:
    """The inbox rows (by id) locked by lock_events, and the tracks of each repository they named."""
    rows: dict[int, Any] = {}
    tracks: dict[str, list[Any]] = {}
    for row in conn.execute(lock_events(skip_locked=skip_locked), {"ids": ids}):
        rows.setdefault(row.id, row)
        if row.repository is not None:
            named = tracks.setdefault(row.repository, [])
            if row.track_id is not None and all(t.id != row.track_id for t in named):
                named.append(_TrackRow(row.track_id, row.branch_pattern, row.critical_fix_marker))
    return rows, tracks


@dataclass(frozen=True)
class _TrackRow:
    """The columns of a track that matching reads (as TRACKS_OF_REPOSITORY returns them)."""

    id: str
    branch_pattern: str
    critical_fix_marker: str


def _apply(step: ReleaseStep | None, event_id: int, event: InboundEvent, target: Target) -> tuple[str, str | None, int | None]:
    """Apply one event to its (locked) release and judge it; returns the event's (status, note, release id)."""
    note: str | None
    release_id: int | None
    if event.kind in IGNORABLE_KINDS:
        status, note, release_id = InboxStatus.IGNORED.value, event.reason or event.kind, None
    elif step is None:
        status, note, release_id = InboxStatus.UNMATCHED.value, target.why or not_started(event, target), None
    else:
        step.event_id = event_id
        r, pipeline = step.release, step.pipeline
        with structlog.contextvars.bound_contextvars(release_id=r.id):
            actor = Actor(event.source, "ci")
            notes: list[str] = []
            cut = event.kind == "branch_created" or "branch_created" in event.labels
            if cut and r.stage == pipeline.initial_stage:
                if event.sha:
                    r.head_sha = event.sha
                branch_cut(step, actor, f"release branch {event.branch} created ({event.source})")
            elif event.kind == "branch_push":
                if r.stage != pipeline.initial_stage:
                    _apply_push(step, event, notes)
                else:
                    notes.append("push before the branch cut: nothing to re-open")
            if event.run:
                notes += _dispatched_runs(step, event)
            if event.build and event.build != r.build:
                set_build(step, event.build, actor, f"built by {event.source} (event {event_id})")
            now = step.now()
            recorded: dict[str, Any] = {}
            for sig in event.signals:
                if sig.name not in pipeline.signals:
                    notes.append(f"{sig.name} is not a signal of {pipeline.name}")
                    continue
                recorded[sig.name] = sig.value
                add_signal(
                    step,
                    sig.name,
                    sig.value,
                    actor=actor,
                    source=event.source,
                    samples=sig.samples,
                    events=sig.events,
                    sha=event.sha,
                    observed_at=event.occurred_at if event.occurred_at and event.occurred_at <= now else None,
                )
            if recorded:
                audit_intake(step, actor, event.source, recorded, sha=event.sha)
            judge(step, trigger=f"event:{event_id}")
            status, note, release_id = InboxStatus.PROCESSED.value, "; ".join(notes) or None, r.id
    log.info("event_processed", event_id=event_id, status=status, note=note, release_id=release_id)
    return status, note, release_id


def _dispatched_runs(step: ReleaseStep, event: InboundEvent) -> list[str]:
    """The distributions Conductor dispatched that this finished run is (a note for each)."""
    from conductor.actions.vcs.runs import matches_dispatch

    rows = step.conn.execute(
        select(OUTBOX.c.result).where(OUTBOX.c.release_id == step.release.id, OUTBOX.c.action == "distribute", OUTBOX.c.status == "done")
    )
    notes = []
    for (result,) in rows:
        if result and result.get("workflow") and matches_dispatch(result, {"workflow_run": event.run}):
            notes.append(f"the run Conductor dispatched for ring {result.get('ring')} ({result['workflow']}) finished: {event.outcome}")
            log.info("dispatched_run_finished", ring=result.get("ring"), workflow=result["workflow"], outcome=event.outcome)
    return notes


def _apply_push(step: ReleaseStep, event: InboundEvent, notes: list[str]) -> None:
    """A push to the release branch: new head (re-opens build/test gates), every commit recorded for
    four-eyes, and the critical-fix rule for the unmarked ones."""
    r = step.release
    if event.sha and event.sha != r.head_sha:
        r.head_sha = event.sha
        step.touch()
    marker = r.critical_fix_marker.strip()
    labelled = any(marker.lower() == label.lower() for label in event.labels)
    pushed: list[dict[str, Any]] = [
        {"sha": cm.sha, "message": cm.message.splitlines()[0][:200] if cm.message else "", "author": cm.author,
         "email": cm.author_email, "marked": labelled or marker.lower() in cm.message.lower()}
        for cm in event.commits
    ]  # fmt: skip
    seen = {cm["sha"] for cm in r.commits_since_approval}
    if any(cm["sha"] not in seen for cm in pushed):
        r.commits_since_approval = [*r.commits_since_approval, *(cm for cm in pushed if cm["sha"] not in seen)]
    unmarked = [{k: cm[k] for k in ("sha", "message", "author", "email")} for cm in pushed if not cm["marked"]]
    if unmarked:
        known = {cm["sha"] for cm in r.unreviewed_commits}
        fresh = [cm for cm in unmarked if cm["sha"] not in known]
        if fresh:
            r.unreviewed_commits = [*r.unreviewed_commits, *fresh]
            step.audit(AuditKind.UNREVIEWED_CHANGE, event.source, f"{len(fresh)} commit(s) without {marker!r}", data={"commits": fresh})
            notes.append(f"{len(fresh)} commit(s) without the critical-fix marker")
