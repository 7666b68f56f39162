"""The release row: read under a row lock, changed in memory, written back with one UPDATE.

`lock_releases` is the one "lock the release" statement (by id, by track and version, or a batch
of them in id order, so concurrent batches never deadlock). `ReleaseRecord` is the row as a plain
object (python-statemachine writes `stage` on it) together with the two track settings a step
needs, read in the same statement. `save` writes only what changed, guarded by the optimistic
lock column: a writer that read the row before someone else changed it gets `StaleRelease`
instead of overwriting the newer state.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Update, bindparam, select, tuple_

from conductor.store.statements import RELEASES, TRACKS


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
    paused: bool
    pause_reason: str | None
    pending_evaluation_id: int | None
    rejected_fingerprint: str | None
    halted_from: str | None
    unreviewed_commits: list[Any]
    created_at: datetime
    updated_at: datetime
    version_id: int
    # Read with the row from its track; never written through the release.
    critical_fix_marker: str
    four_eyes: bool

    def __post_init__(self) -> None:
        self.unreviewed_commits = list(self.unreviewed_commits or [])
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
    "paused",
    "pause_reason",
    "pending_evaluation_id",
    "rejected_fingerprint",
    "halted_from",
    "unreviewed_commits",
    "updated_at",
)
_ROW_COLUMNS = [RELEASES.c[f.name] for f in fields(ReleaseRecord) if f.name in RELEASES.c]
_LOCK = select(*_ROW_COLUMNS, TRACKS.c.critical_fix_marker, TRACKS.c.four_eyes).join(TRACKS, TRACKS.c.id == RELEASES.c.track_id)
_DIGITS = re.compile(r"[0-9]{1,18}")


def release_filter(ref: int | str) -> ColumnElement[bool] | None:
    """The WHERE clause for a release given by id or as 'track/version'; None for anything else.

    Only ASCII digits make an id: str.isdigit() would take '²' and fail later in int()."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return RELEASES.c.id == ref
    if isinstance(ref, str) and _DIGITS.fullmatch(ref):
        return RELEASES.c.id == int(ref)
    if isinstance(ref, str) and "/" in ref:
        track, version = ref.rsplit("/", 1)
        return (RELEASES.c.track_id == track) & (RELEASES.c.version == version)
    return None


def lock_releases(where: ColumnElement[bool], *, lock: bool = True, skip_locked: bool = False) -> Select:
    """The releases matching `where` with their track settings, row-locked in id order (FOR UPDATE
    OF releases on PostgreSQL; SQLite's writer lock is taken by BEGIN IMMEDIATE instead)."""
    q = _LOCK.where(where).order_by(RELEASES.c.id)
    return q.with_for_update(of=RELEASES, skip_locked=skip_locked) if lock else q


def by_keys(keys: list[tuple[str, str]]) -> ColumnElement[bool]:
    return tuple_(RELEASES.c.track_id, RELEASES.c.version).in_(keys)


def records(conn: Connection, query: Select) -> list[ReleaseRecord]:
    return [ReleaseRecord(**row._mapping) for row in conn.execute(query)]


@cache
def _update(names: tuple[str, ...]) -> Update:
    """The UPDATE of these columns (a few shapes recur: built once each)."""
    return (
        RELEASES.update()
        .where(RELEASES.c.id == bindparam("b_id"), RELEASES.c.version_id == bindparam("b_version"))
        .values({n: bindparam(n) for n in names} | {"version_id": RELEASES.c.version_id + 1})
    )


def save(conn: Connection, rec: ReleaseRecord) -> bool:
    """Write what changed (nothing: no statement); StaleRelease if the row moved on meanwhile."""
    changed = rec.changes()
    if not changed:
        return False
    names = tuple(sorted(changed))
    result = conn.execute(_update(names), {"b_id": rec.id, "b_version": rec.version_id, **changed})
    if result.rowcount != 1:
        raise StaleRelease(f"release {rec.key} changed since version {rec.version_id} was read")
    rec.version_id += 1
    rec._saved = rec._state()
    return True
