"""The release row: read under a row lock, changed in memory, written back with one UPDATE.

`lock_releases` is the one "lock the release" statement (by id, by track and version, or a batch
of them in id order, so concurrent batches never deadlock). `ReleaseRecord` is the row as a plain
object (python-statemachine writes `stage` on it) together with what a step reads alongside it in
the same statement: the two track settings it needs and the release's last stored evaluation.

A locked row's changes are written by `update_statement` (the step buffers it with its other
writes: nobody else can have changed the row meanwhile). `save` writes a row that was read
without the lock, guarded by the optimistic lock column: a writer that read the row before
someone else changed it gets `StaleRelease` instead of overwriting the newer state.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Update, bindparam, func, or_, select, tuple_

from conductor.store.statements import EVALUATIONS, FREEZES, RELEASES, TRACKS


class StaleRelease(Exception):
    """The release row changed since it was read (its version_id moved on)."""


@dataclass(eq=False)
class ReleaseRecord:
    """One release row (the model python-statemachine moves), plus its track's four-eyes and marker."""

    id: int
    track_id: str
    version: str
    stage: str
    definition_hash: str
    entered_stage_at: datetime
    branch: str | None
    head_sha: str | None
    build: str | None
    paused: bool
    pause_reason: str | None
    pending_evaluation_id: int | None
    rejected_fingerprint: str | None
    halted_from: str | None
    unreviewed_commits: list[Any]
    commits_since_approval: list[Any]
    created_at: datetime
    updated_at: datetime
    version_id: int
    # Read with the row, never written through it: its track's settings, its last evaluation.
    critical_fix_marker: str
    four_eyes: bool
    track_settings: dict[str, Any] | None = None  # the track's settings (night policy, connections)
    last_evaluation_id: int | None = None
    last_evaluation_stage: str | None = None
    last_evaluation_fingerprint: str | None = None
    last_evaluation_digest: str | None = None
    open_freezes: int = 0  # freezes not lifted for its track or for all (conductor.store.freezes)
    locked: bool = False  # read with FOR UPDATE: nobody else changes it until the transaction ends

    def __post_init__(self) -> None:
        self.unreviewed_commits = list(self.unreviewed_commits or [])
        self.commits_since_approval = list(self.commits_since_approval or [])
        self.paused = bool(self.paused)
        self._saved = self._state()

    @property
    def key(self) -> str:
        return f"{self.track_id}/{self.version}"

    def _state(self) -> dict[str, Any]:
        return {name: copy.copy(getattr(self, name)) for name in MUTABLE}

    def changes(self) -> dict[str, Any]:
        """The columns changed since the row was read or last saved."""
        return {name: value for name, value in self._state().items() if value != self._saved[name]}


# Columns a step may change; the rest (id, track, version, definition, created_at) never change.
MUTABLE = (
    "stage",
    "entered_stage_at",
    "branch",
    "head_sha",
    "build",
    "paused",
    "pause_reason",
    "pending_evaluation_id",
    "rejected_fingerprint",
    "halted_from",
    "unreviewed_commits",
    "commits_since_approval",
    "updated_at",
)
_ROW_COLUMNS = [RELEASES.c[f.name] for f in fields(ReleaseRecord) if f.name in RELEASES.c]


def _last_evaluation(column: str) -> Any:
    return (
        select(EVALUATIONS.c[column])
        .where(EVALUATIONS.c.release_id == RELEASES.c.id)
        .order_by(EVALUATIONS.c.id.desc())
        .limit(1)
        .scalar_subquery()
        .label(f"last_evaluation_{column}")
    )


_LOCK = select(
    *_ROW_COLUMNS,
    TRACKS.c.critical_fix_marker,
    TRACKS.c.four_eyes,
    TRACKS.c.settings.label("track_settings"),
    _last_evaluation("id"),
    _last_evaluation("stage"),
    _last_evaluation("fingerprint"),
    _last_evaluation("digest"),
    # Freezes not lifted for the track or for all tracks: read with the row, so the common case (none)
    # costs no round trip; when there are, conductor.store.freezes reads which cover now.
    select(func.count())
    .where(FREEZES.c.lifted_at.is_(None), or_(FREEZES.c.track_id == RELEASES.c.track_id, FREEZES.c.track_id.is_(None)))
    .scalar_subquery()
    .label("open_freezes"),
).join(TRACKS, TRACKS.c.id == RELEASES.c.track_id)
_DIGITS = re.compile(r"[0-9]{1,18}")
# How a release is named: by id, by ids, by track and version, by (track, version) pairs.
_WHERE = {
    "id": RELEASES.c.id == bindparam("id"),
    "ids": RELEASES.c.id.in_(bindparam("ids", expanding=True)),
    "key": (RELEASES.c.track_id == bindparam("track_id")) & (RELEASES.c.version == bindparam("version")),
    "keys": tuple_(RELEASES.c.track_id, RELEASES.c.version).in_(bindparam("keys", expanding=True)),
}


def release_filter(ref: int | str) -> tuple[str, dict[str, Any]] | None:
    """How to find a release given by id or as 'track/version' (a lock_releases form and its
    parameters); None for anything else. Only ASCII digits make an id: str.isdigit() would take
    '²' and fail later in int()."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return "id", {"id": ref}
    if isinstance(ref, str) and _DIGITS.fullmatch(ref):
        return "id", {"id": int(ref)}
    if isinstance(ref, str) and "/" in ref:
        track, version = ref.rsplit("/", 1)
        return "key", {"track_id": track, "version": version}
    return None


def where_release(by: str) -> ColumnElement[bool]:
    """The WHERE clause of a release_filter form (bind its parameters)."""
    return _WHERE[by]


@cache
def lock_releases(by: str, *, lock: bool = True, skip_locked: bool = False) -> Select[Any]:
    """The releases named `by` ("id", "ids", "key" or "keys": bind the parameter of that name) with
    their track settings and last evaluation, row-locked in id order (FOR UPDATE OF releases on
    PostgreSQL; SQLite's writer lock is taken by BEGIN IMMEDIATE instead). Built once per form."""
    q = _LOCK.where(_WHERE[by]).order_by(RELEASES.c.id)
    return q.with_for_update(of=RELEASES, skip_locked=skip_locked) if lock else q


def records(conn: Connection, query: Select[Any], params: dict[str, Any], *, locked: bool) -> list[ReleaseRecord]:
    """The rows of a lock_releases query; `locked` says whether it took the row locks."""
    return [ReleaseRecord(**row._mapping, locked=locked) for row in conn.execute(query, params)]


@cache
def _update(names: tuple[str, ...]) -> Update:
    """The UPDATE of these columns (a few shapes recur: built once each)."""
    return (
        RELEASES.update()
        .where(RELEASES.c.id == bindparam("b_id"), RELEASES.c.version_id == bindparam("b_version"))
        .values({n: bindparam(n) for n in names} | {"version_id": RELEASES.c.version_id + 1})
    )


def update_statement(rec: ReleaseRecord) -> tuple[Update, dict[str, Any]] | None:
    """The UPDATE of what changed in a locked row (None: nothing changed), for buffered writes.

    The row is taken as written: its version moves on and its changes are forgotten."""
    assert rec.locked, "only a row read under its lock may be written without the version check"
    changed = rec.changes()
    if not changed:
        return None
    params = {"b_id": rec.id, "b_version": rec.version_id, **changed}
    rec.version_id += 1
    rec._saved = rec._state()
    return _update(tuple(sorted(changed))), params


def save(conn: Connection, rec: ReleaseRecord) -> bool:
    """Write what changed at once (nothing: no statement); StaleRelease if the row moved on since
    it was read (for rows read without their lock)."""
    changed = rec.changes()
    if not changed:
        return False
    result = conn.execute(_update(tuple(sorted(changed))), {"b_id": rec.id, "b_version": rec.version_id, **changed})
    if result.rowcount != 1:
        raise StaleRelease(f"release {rec.key} changed since version {rec.version_id} was read")
    rec.version_id += 1
    rec._saved = rec._state()
    return True
