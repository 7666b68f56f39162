"""The tamper-evident audit trail: audit rows are hash-chained after they commit, then verified and exported.

The chain. Every audit row, once sealed, carries its place in the chain (`seq`: 1, 2, 3, ...), the
hash of the row before it (`prev_hash`; the first row's is 64 zeros) and its own `row_hash`:

    row_hash = sha256(canonical JSON of {id, release_id, track_id, at, actor, kind, from_stage,
                      to_stage, reason, evaluation_id, event_id, data, prev_hash})

with the keys sorted, no whitespace, UTF-8, `at` in ISO 8601 UTC with microseconds
(2026-11-23T08:00:00.000000+00:00). A one-row table, audit_chain, holds the head: the last sealed
seq and its hash.

Why after the commit. Audit rows are written from many places, in buffered writes that leave with a
step's COMMIT, by concurrent workers. Chaining at insert time would make every writer wait for the
previous row's hash: one audit writer at a time, across all releases. So writers only insert the
content (the chain columns stay NULL), and a sealer chains what has committed since it last ran:
the periodic `seal_audit` job (Settings.audit_seal_interval_s), and `seal()` at the start of
`verify` and `export_release`. The sealer locks the head row (SELECT ... FOR UPDATE on PostgreSQL;
SQLite's BEGIN IMMEDIATE takes its one writer lock), so only one sealer runs at a time; writers
never touch the head, so they are never serialised by it. It takes the unsealed rows in id order
and gives them the next places after the head. A row whose transaction committed late (a lower id
than rows already sealed) simply gets a later place: the chain's order is the sealing order, and
no committed row is ever skipped.

The guarantee. A sealed row cannot be changed, deleted or reordered without `verify` naming it: a
changed row no longer matches its row_hash; a deleted one leaves a gap in seq and a prev_hash that
points at nothing; a deleted tail leaves the head pointing past the last row. Rows are
tamper-evident once sealed; the unsealed tail is at most one sealer interval old. Someone who can
write the database and recompute every later hash and the head could still rewrite history: keep
the head (`conductor audit verify` prints it) somewhere else from time to time, and compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, bindparam, func, select

from conductor.context import Context
from conductor.domain.errors import NotFound
from conductor.domain.kinds import AuditKind
from conductor.store.releases import release_filter, where_release
from conductor.store.statements import (
    APPROVALS,
    AUDIT,
    AUDIT_CHAIN,
    AUDIT_CONTENT,
    AUDIT_SEALED,
    EVALUATIONS,
    INSERT_AUDIT,
    RELEASES,
    insert_new_id,
)

log = structlog.get_logger("conductor.audit")

GENESIS = "0" * 64  # the prev_hash of the first row
SEAL_BATCH = 1000  # rows sealed per transaction
_HEAD = 1  # the id of the chain's one head row
# The rows whose export carries the decision they answered, with its evidence.
DECISION_KINDS = frozenset({AuditKind.APPROVED, AuditKind.REJECTED})
_VERDICTS = {AuditKind.APPROVED: "approve", AuditKind.REJECTED: "reject"}  # their verdict in the approvals table


# ---------------------------------------------------------------------------- hashing


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def content(row: Any) -> dict[str, Any]:
    """What a row's hash covers, as JSON values (the export's lines carry exactly these)."""
    out = {c.name: getattr(row, c.name) for c in AUDIT_CONTENT}
    out["at"] = _iso(row.at)
    return out


def chain_hash(row: Any, prev_hash: str) -> str:
    """The row_hash of `row` (any object with the content columns) following `prev_hash`."""
    body = json.dumps(content(row) | {"prev_hash": prev_hash}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


# ---------------------------------------------------------------------------- writing rows


def add_audit(
    conn: Connection, ctx: Context, kind: AuditKind, actor: str, reason: str = "", *, track_id: str | None = None, data: dict[str, Any]
) -> None:
    """Insert an audit row that names no release: a track's (track_id) or a global one (none)."""
    conn.execute(INSERT_AUDIT, {
        "release_id": None, "track_id": track_id, "at": ctx.now(), "actor": actor, "kind": kind.value, "from_stage": None,
        "to_stage": None, "reason": reason, "evaluation_id": None, "event_id": None, "data": data,
    })  # fmt: skip


# ---------------------------------------------------------------------------- sealing

_HEAD_ROW = select(AUDIT_CHAIN.c.seq, AUDIT_CHAIN.c.head_hash).where(AUDIT_CHAIN.c.id == _HEAD)
_LOCK_HEAD = _HEAD_ROW.with_for_update()
_UNSEALED = select(*AUDIT_CONTENT).where(AUDIT.c.seq.is_(None)).order_by(AUDIT.c.id).limit(bindparam("limit"))
_ANY_UNSEALED = select(AUDIT.c.id).where(AUDIT.c.seq.is_(None)).limit(1)
_SEAL_ROW = (
    AUDIT.update()
    .where(AUDIT.c.id == bindparam("b_id"), AUDIT.c.seq.is_(None))
    .values(seq=bindparam("seq"), prev_hash=bindparam("prev_hash"), row_hash=bindparam("row_hash"))
)
_MOVE_HEAD = AUDIT_CHAIN.update().where(AUDIT_CHAIN.c.id == _HEAD)


@dataclass(frozen=True)
class Sealed:
    rows: int  # sealed by this call
    seq: int  # the head after it: the number of sealed rows
    head_hash: str


def seal(ctx: Context, *, batch: int = SEAL_BATCH) -> Sealed:
    """Chain every committed unsealed row, in id order after the head (see the module docstring);
    a transaction per `batch` rows, so a long backlog (the first run after the upgrade) never holds
    the head for long. With nothing to seal it only reads: no lock, no write."""
    with ctx.db.reading() as conn:
        if conn.execute(_ANY_UNSEALED).first() is None:
            head = conn.execute(_HEAD_ROW).first()
            return Sealed(0, head.seq, head.head_hash) if head is not None else Sealed(0, 0, GENESIS)
    total = 0
    while True:
        with ctx.db.begin() as conn:
            sealed, seq, head_hash = _seal_batch(conn, ctx.now(), batch)
        total += sealed
        if sealed < batch:
            if total:
                log.info("audit_sealed", rows=total, seq=seq, head=head_hash[:16])
            return Sealed(total, seq, head_hash)


def _lock_head(conn: Connection) -> Any:
    head = conn.execute(_LOCK_HEAD).first()
    if head is None:  # the first seal: a concurrent one waits on this insert, then finds the row
        insert_new_id(conn, AUDIT_CHAIN, "id", {"id": _HEAD, "seq": 0, "head_hash": GENESIS, "sealed_at": None})
        head = conn.execute(_LOCK_HEAD).one()
    return head


def _seal_batch(conn: Connection, now: datetime, batch: int) -> tuple[int, int, str]:
    head = _lock_head(conn)
    seq, prev = head.seq, head.head_hash
    updates = []
    for row in conn.execute(_UNSEALED, {"limit": batch}):
        seq += 1
        row_hash = chain_hash(row, prev)
        updates.append({"b_id": row.id, "seq": seq, "prev_hash": prev, "row_hash": row_hash})
        prev = row_hash
    if updates:
        conn.execute(_SEAL_ROW, updates)
        conn.execute(_MOVE_HEAD, {"seq": seq, "head_hash": prev, "sealed_at": now})
    return len(updates), seq, prev


# ---------------------------------------------------------------------------- verifying

_CHAIN_PAGE = (
    select(*AUDIT_SEALED)
    .where(AUDIT.c.seq > bindparam("after"), AUDIT.c.seq <= bindparam("upto"))
    .order_by(AUDIT.c.seq)
    .limit(bindparam("limit"))
)
_BEYOND_HEAD = select(*AUDIT_SEALED).where(AUDIT.c.seq > bindparam("upto")).order_by(AUDIT.c.seq).limit(1)
_UNSEALED_COUNT = select(func.count()).select_from(AUDIT).where(AUDIT.c.seq.is_(None))


@dataclass(frozen=True)
class Broken:
    """The first place where the chain does not hold: the row (None when rows at the end are
    missing), what it belongs to and what does not match."""

    id: int | None
    seq: int | None
    kind: str | None
    release: str | None  # "track/version (id N)", or the id alone when the release row is gone
    track_id: str | None
    problem: str

    def describe(self) -> str:
        if self.id is None:
            return self.problem
        owner = f"release {self.release}" if self.release else f"track {self.track_id}" if self.track_id else "global"
        return f"audit row {self.id} (seq {self.seq}, {self.kind}, {owner}): {self.problem}"


@dataclass(frozen=True)
class Verification:
    checked: int  # sealed rows checked
    unsealed: int  # rows committed after the seal that started the check
    head_seq: int
    head_hash: str
    broken: Broken | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(ctx: Context, *, page: int = 2000) -> Verification:
    """Seal, then walk the whole chain in seq order, on one snapshot (REPEATABLE READ on
    PostgreSQL, a read transaction on SQLite); the first row that breaks it is named."""
    seal(ctx)
    with ctx.db.reading() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ") if plain.dialect.name == "postgresql" else plain
        head = conn.execute(_HEAD_ROW).first()
        head_seq, head_hash = (head.seq, head.head_hash) if head is not None else (0, GENESIS)
        checked, broken = _walk(conn, head_seq, head_hash, page)
        if broken is None:
            beyond = conn.execute(_BEYOND_HEAD, {"upto": head_seq}).first()
            if beyond is not None:
                broken = _broken(conn, beyond, f"it claims seq {beyond.seq}, beyond the chain's head (seq {head_seq}): not sealed here")
        unsealed = conn.execute(_UNSEALED_COUNT).scalar_one()
    result = Verification(checked, unsealed, head_seq, head_hash, broken)
    if broken is not None:
        log.error("audit_chain_broken", row=broken.id, seq=broken.seq, problem=broken.problem)
    return result


def _walk(conn: Connection, head_seq: int, head_hash: str, page: int) -> tuple[int, Broken | None]:
    """(rows checked, the first break) over seq 1 .. head_seq, page by page."""
    expected, prev, last = 1, GENESIS, None
    while True:
        rows = conn.execute(_CHAIN_PAGE, {"after": expected - 1, "upto": head_seq, "limit": page}).all()
        for row in rows:
            problem = _mismatch(row, expected, prev)
            if problem is not None:
                return expected - 1, _broken(conn, row, problem)
            expected, prev, last = expected + 1, row.row_hash, row
        if len(rows) < page:
            break
    checked = expected - 1
    if checked < head_seq:
        gone = f"seq {checked + 1}" if checked + 1 == head_seq else f"seq {checked + 1} to {head_seq}"
        return checked, Broken(None, None, None, None, None, f"the chain's head is at seq {head_seq} ({head_hash[:16]}…) but the "
                               f"last sealed row is at seq {checked}: the sealed row(s) at {gone} were deleted")  # fmt: skip
    if last is not None and last.row_hash != head_hash:
        return checked, _broken(conn, last, f"its row_hash is not the chain head's ({head_hash[:16]}…): the head or this row was changed")
    return checked, None


def _mismatch(row: Any, expected: int, prev: str) -> str | None:
    if row.seq != expected:
        missing = f"seq {expected}" if row.seq == expected + 1 else f"seq {expected} to {row.seq - 1}"
        return f"the sealed row(s) before it, at {missing}, are missing (deleted)"
    if row.prev_hash != prev:
        return f"its prev_hash ({(row.prev_hash or 'none')[:16]}…) is not the row_hash of the row before it ({prev[:16]}…)"
    if row.row_hash != chain_hash(row, prev):
        return "its content does not match its row_hash: it was changed after it was sealed"
    return None


def _broken(conn: Connection, row: Any, problem: str) -> Broken:
    release = None
    if row.release_id is not None:
        key = conn.execute(select(RELEASES.c.track_id, RELEASES.c.version).where(RELEASES.c.id == row.release_id)).first()
        release = f"{key.track_id}/{key.version} (id {row.release_id})" if key else f"id {row.release_id}"
    return Broken(row.id, row.seq, row.kind, release, row.track_id, problem)


# ---------------------------------------------------------------------------- exporting


@dataclass(frozen=True)
class Export:
    release: str  # track/version
    release_id: int
    lines: list[dict[str, Any]]
    unsealed: int  # of the release's rows (committed after the seal that started the export)


def export_release(ctx: Context, ref: int | str) -> Export:
    """Every audit row of a release in order, with its hashes, as compliance evidence; approvals
    and rejections with the decision they answered (verdict, fingerprint, summary, gates: the
    evidence the person saw) and the role they answered in. Seals first."""
    found = release_filter(ref)
    if found is None:
        raise NotFound(f"unknown release {ref!r}")
    seal(ctx)
    by, params = found
    with ctx.db.reading() as conn:
        release = conn.execute(select(RELEASES.c.id, RELEASES.c.track_id, RELEASES.c.version).where(where_release(by)), params).first()
        if release is None:
            raise NotFound(f"unknown release {ref!r}")
        rows = conn.execute(select(*AUDIT_SEALED).where(AUDIT.c.release_id == release.id).order_by(AUDIT.c.id)).all()
        asked = sorted({r.evaluation_id for r in rows if r.kind in DECISION_KINDS and r.evaluation_id is not None})
        decisions = {e.id: e for e in conn.execute(select(EVALUATIONS).where(EVALUATIONS.c.id.in_(asked)))} if asked else {}
        roles = {
            (a.evaluation_id, a.actor, a.verdict): a.role
            for a in conn.execute(select(APPROVALS).where(APPROVALS.c.release_id == release.id).order_by(APPROVALS.c.id))
        }
    key = f"{release.track_id}/{release.version}"
    lines = [_line(row, key, decisions, roles) for row in rows]
    return Export(key, release.id, lines, sum(1 for r in rows if r.seq is None))


def _line(row: Any, key: str, decisions: dict[int, Any], roles: dict[tuple[Any, ...], str]) -> dict[str, Any]:
    line = {"release": key, **content(row), "seq": row.seq, "prev_hash": row.prev_hash, "row_hash": row.row_hash}
    ev = decisions.get(row.evaluation_id) if row.kind in DECISION_KINDS else None
    if ev is not None:
        evidence = ev.evidence or {}
        line["decision"] = {
            "id": ev.id, "stage": ev.stage, "transition": ev.transition, "target": evidence.get("target"), "verdict": ev.verdict,
            "fingerprint": ev.fingerprint, "digest": ev.digest, "trigger": ev.trigger, "judged_at": _iso(ev.created_at),
            "summary": evidence.get("summary"), "gates": evidence.get("gates", []),
            "answered_as": roles.get((ev.id, row.actor, _VERDICTS[AuditKind(row.kind)])),
        }  # fmt: skip
    return line
