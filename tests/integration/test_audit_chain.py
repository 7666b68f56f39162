"""The tamper-evident audit trail (conductor.service.audit): rows hash-chained by the sealer after
they commit, verify naming the first broken row, and the per-release compliance export."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from conductor.domain.errors import NotFound
from conductor.service import audit
from conductor.store.models import AuditChain, AuditEntry
from conductor.store.statements import AUDIT
from tests.integration.test_service import RM, beta_ready, to_beta


def rows(db):
    with db.read() as s:
        return s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()


def raw(db, sql, **params):
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


@pytest.fixture
def walked(conductor, clock):
    """A release through its grey-zone approval and one rejection: some forty audit rows."""
    rid = conductor.start_release("music-android", "9.0.0", RM)
    to_beta(conductor, clock, rid)
    beta_ready(conductor, clock, rid, crash=99.3)
    pending = conductor.snapshot(rid).pending
    conductor.approve(rid, RM, "known OEM crash, within noise", evaluation_id=pending.id, fingerprint=pending.fingerprint)
    clock.advance(timedelta(days=1))
    from tests.integration.test_service import feed_ring

    feed_ring(conductor, rid, crash=99.2)  # grey again at 1 %
    conductor.reject(rid, RM, "not at 1%", evaluation_id=conductor.snapshot(rid).pending.id)
    return rid


def test_the_sealer_chains_every_committed_row_and_an_honest_database_verifies(conductor, walked, database):
    before = rows(database)
    assert before and all(r.seq is None and r.row_hash is None for r in before)  # writers leave the chain to the sealer
    sealed = audit.seal(conductor)
    assert sealed.rows == sealed.seq == len(before)
    after = rows(database)
    assert [r.seq for r in after] == list(range(1, len(after) + 1))  # sealed in id order
    assert after[0].prev_hash == audit.GENESIS
    for prev, row in zip(after, after[1:], strict=False):
        assert row.prev_hash == prev.row_hash and row.row_hash == audit.chain_hash(row, row.prev_hash)
    with database.read() as s:
        head = s.get(AuditChain, 1)
    assert (head.seq, head.head_hash) == (len(after), after[-1].row_hash)
    assert audit.seal(conductor).rows == 0  # nothing new: nothing changes

    conductor.pause(walked, RM, "one more row")
    result = audit.verify(conductor)  # seals the new row first
    assert result.ok and result.broken is None
    assert (result.checked, result.head_seq, result.unsealed) == (len(after) + 1, len(after) + 1, 0)


def test_the_hash_covers_the_documented_canonical_json(conductor, database):
    audit.seal(conductor)
    (row,) = rows(database)  # the track's creation
    body = {
        "id": row.id, "release_id": None, "track_id": "music-android", "at": row.at.isoformat(timespec="microseconds"),
        "actor": row.actor, "kind": "track_created", "from_stage": None, "to_stage": None, "reason": row.reason,
        "evaluation_id": None, "event_id": None, "data": row.data, "prev_hash": "0" * 64,
    }  # fmt: skip
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert row.at.isoformat().endswith("+00:00")
    assert row.row_hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_a_row_changed_by_hand_is_named(conductor, walked, database):
    audit.seal(conductor)
    approved = next(r for r in rows(database) if r.kind == "approved")
    raw(database, "UPDATE audit_log SET reason = 'looked fine' WHERE id = :id", id=approved.id)
    result = audit.verify(conductor)
    assert not result.ok
    b = result.broken
    assert (b.id, b.seq, b.kind, b.release) == (approved.id, approved.seq, "approved", f"music-android/9.0.0 (id {walked})")
    assert "content does not match its row_hash" in b.problem and result.checked == approved.seq - 1
    assert f"audit row {approved.id} (seq {approved.seq}, approved, release music-android/9.0.0" in b.describe()


def test_a_row_rehashed_by_hand_breaks_the_link_to_the_next(conductor, walked, database):
    audit.seal(conductor)
    all_rows = rows(database)
    victim, after = all_rows[3], all_rows[4]
    forged = SimpleNamespace(**{c.name: getattr(victim, c.name) for c in AuditEntry.__table__.columns} | {"actor": "mallory"})
    raw(
        database,
        "UPDATE audit_log SET actor = 'mallory', row_hash = :h WHERE id = :id",
        h=audit.chain_hash(forged, victim.prev_hash),
        id=victim.id,
    )
    b = audit.verify(conductor).broken
    assert b.id == after.id and "prev_hash" in b.problem


def test_a_deleted_row_is_named_by_the_gap_it_leaves(conductor, walked, database):
    audit.seal(conductor)
    all_rows = rows(database)
    gone, next_row = all_rows[5], all_rows[6]
    raw(database, "DELETE FROM audit_log WHERE id = :id", id=gone.id)
    b = audit.verify(conductor).broken
    assert (b.id, b.seq, b.kind) == (next_row.id, next_row.seq, next_row.kind)
    assert f"at seq {gone.seq}, are missing (deleted)" in b.problem


def test_a_deleted_tail_is_found_by_the_head(conductor, walked, database):
    audit.seal(conductor)
    *kept, last = rows(database)
    raw(database, "DELETE FROM audit_log WHERE id = :id", id=last.id)
    result = audit.verify(conductor)
    assert result.broken.id is None and result.checked == len(kept)
    assert f"the last sealed row is at seq {len(kept)}: the sealed row(s) at seq {last.seq} were deleted" in result.broken.problem
    # A row written afterwards is chained after the head, not into the gap: the gap stays visible.
    conductor.pause(walked, RM, "written after the deletion")
    b = audit.verify(conductor).broken
    assert (b.kind, b.seq) == ("paused", last.seq + 1) and f"at seq {last.seq}, are missing" in b.problem


def test_a_row_that_commits_after_later_ids_were_sealed_is_chained_after_them(conductor, database, clock):
    """Ids are taken at INSERT, commits happen later: a low id can commit after higher ones were
    sealed. It gets the next place in the chain, and nothing is skipped."""

    def insert(row_id):
        with database.engine.begin() as conn:
            conn.execute(AUDIT.insert(), {"id": row_id, "track_id": "music-android", "at": clock.now, "actor": "late",
                                          "kind": "track_updated", "reason": "late commit", "data": {}})  # fmt: skip

    insert(100)
    audit.seal(conductor)
    insert(50)  # committed now, sealed next
    assert audit.seal(conductor).rows == 1
    assert [(r.id, r.seq) for r in rows(database)] == [(1, 1), (50, 3), (100, 2)]
    assert audit.verify(conductor).ok


def test_concurrent_sealers_and_writers_leave_one_unbroken_chain(conductor, database):
    errors: list[BaseException] = []

    def write(n):
        try:
            for i in range(15):
                conductor.ensure_track(f"t{n}-{i}", "mobile_weekly")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def sealer():
        try:
            for _ in range(10):
                audit.seal(conductor, batch=7)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)] + [threading.Thread(target=sealer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = audit.verify(conductor)
    assert result.ok and result.checked == 1 + 3 * 15 and result.unsealed == 0
    with database.read() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.seq.is_(None))) == 0


def test_the_export_is_the_release_rows_with_their_hashes_and_the_evidence_of_each_answer(conductor, walked, database):
    exported = audit.export_release(conductor, "music-android/9.0.0")
    assert (exported.release, exported.release_id, exported.unsealed) == ("music-android/9.0.0", walked, 0)
    lines = exported.lines
    assert [line["id"] for line in lines] == [r.id for r in rows(database) if r.release_id == walked]
    assert all(line["release"] == "music-android/9.0.0" and line["seq"] and len(line["row_hash"]) == 64 for line in lines)
    # Each line carries what its hash covers: anyone can recompute it from the line alone.
    for line in lines:
        row = SimpleNamespace(**(line | {"at": datetime.fromisoformat(line["at"])}))
        assert audit.chain_hash(row, line["prev_hash"]) == line["row_hash"]
    approved = next(line for line in lines if line["kind"] == "approved")
    decision = approved["decision"]
    assert approved["actor"] == "rita" and decision["id"] == approved["evaluation_id"] and decision["verdict"] == "ask"
    assert len(decision["fingerprint"]) == 32 and decision["summary"] and decision["answered_as"] == "release_manager"
    crash = next(g for g in decision["gates"] if g["gate"] == "crash_free")
    assert (crash["outcome"], crash["inputs"]["value"]) == ("inconclusive", 99.3)
    rejected = next(line for line in lines if line["kind"] == "rejected")
    assert rejected["decision"]["id"] == rejected["evaluation_id"] != decision["id"] and rejected["reason"] == "not at 1%"
    assert not any("decision" in line for line in lines if line["kind"] not in ("approved", "rejected"))
    assert audit.export_release(conductor, walked).lines == lines  # by id too
    with pytest.raises(NotFound):
        audit.export_release(conductor, "music-android/0.0.1")


def test_the_seal_job_runs_from_the_dispatchers(conductor, database):
    from conductor.service.ports import TASK_SEAL_AUDIT
    from tests.conftest import inline

    app = inline(conductor)
    assert app.dispatcher.submit(TASK_SEAL_AUDIT) == 1
    assert rows(database)[0].seq == 1
