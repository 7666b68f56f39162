"""Helpers shared by the worker tests and the stateful test: CI events for a release, waiting, invariants."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable

from sqlalchemy import func, select

from conductor.sources.events import InboundEvent, SignalIn
from conductor.store.models import Approval, AuditEntry, InboxEvent, Release, SignalRow

REPO = "acme/music-android"
TRACK = "music-android"
# Audit kinds that move a release from one stage to another.
MOVES = ("transitioned", "halted", "resumed", "cancelled")


def branch_created(version: str, sha: str, delivery: str | None = None) -> InboundEvent:
    return InboundEvent(
        source="generic",
        delivery_id=delivery or f"cut-{version}-{sha}",
        kind="branch_created",
        raw_type="create",
        repository=REPO,
        branch=f"release/{version}",
        sha=sha,
    )


def build_finished(version: str, sha: str, ok: bool = True, delivery: str | None = None) -> InboundEvent:
    return InboundEvent(
        source="generic",
        delivery_id=delivery or f"build-{version}-{sha}",
        kind="build_finished",
        raw_type="build.finished",
        repository=REPO,
        branch=f"release/{version}",
        sha=sha,
        outcome="success" if ok else "failure",
        signals=[SignalIn(name="build_green", value=1.0 if ok else 0.0)],
    )


def tests_finished(version: str, sha: str, rate: float = 1.0, delivery: str | None = None) -> InboundEvent:
    return InboundEvent(
        source="generic",
        delivery_id=delivery or f"tests-{version}-{sha}",
        kind="tests_finished",
        raw_type="tests.finished",
        repository=REPO,
        branch=f"release/{version}",
        sha=sha,
        signals=[SignalIn(name="tests_pass_rate", value=rate, samples=900)],
    )


def ci_events(version: str, sha: str = "c0ffee1") -> list[InboundEvent]:
    """Branch cut, build, tests: in this order a release goes trunk -> branch -> nightly."""
    return [branch_created(version, sha), build_finished(version, sha), tests_finished(version, sha)]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def inbox_counts(db) -> dict[str, int]:
    with db.read() as s:
        return dict(s.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status)).all())


def stages(db) -> dict[str, int]:
    with db.read() as s:
        return dict(s.execute(select(Release.stage, func.count()).group_by(Release.stage)).all())


def legal_edges(pipeline) -> set[tuple[str, str]]:
    edges = {(t.source, t.target) for t in pipeline.transitions}
    for name, stage in pipeline.stages.items():
        if stage.kind == "rollout":
            halted = next(n for n, st in pipeline.stages.items() if st.kind == "halted")
            edges |= {(name, halted), (halted, name)}
        if stage.kind not in ("final", "cancelled"):
            edges.add((name, pipeline.cancel_stage))
    return edges


def check_invariants(c) -> dict[int, list[tuple[str, str]]]:
    """Per release: the audit's stage moves chain from the first stage to the current one, every
    move is a legal edge, no event moved a release along the same edge twice, nothing left halted
    without a human's resume, and no inbox event was applied twice. Returns each release's moves."""
    db = c.db
    moves: dict[int, list[tuple[str, str]]] = defaultdict(list)
    with db.read() as s:
        releases = {r.id: r for r in s.scalars(select(Release))}
        audit = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        resumes = Counter(a.release_id for a in s.scalars(select(Approval).where(Approval.verdict == "resume")))
        signal_rows = Counter(s.execute(select(SignalRow.event_id).where(SignalRow.event_id.is_not(None))).scalars())
        events = s.scalars(select(InboxEvent)).all()
    with db.reading() as conn:
        pipelines = {rid: c.pinned(conn, r.definition_hash) for rid, r in releases.items()}
    per_event: Counter = Counter()
    position = {rid: pipelines[rid].initial_stage for rid in releases}
    resumed_out_of_halted: Counter = Counter()
    for a in audit:
        if a.kind not in MOVES or a.from_stage is None or a.to_stage is None:
            continue
        rid, edge = a.release_id, (a.from_stage, a.to_stage)
        assert position[rid] == a.from_stage, f"release {rid}: move {edge} does not start where it was ({position[rid]})"
        assert edge in legal_edges(pipelines[rid]), f"release {rid}: illegal edge {edge}"
        if pipelines[rid].stages[a.from_stage].kind == "halted":
            assert a.kind in ("resumed", "cancelled"), f"release {rid} left halted by {a.kind}, not a human"
            if a.kind == "resumed":
                resumed_out_of_halted[rid] += 1
        if a.event_id is not None:
            per_event[(rid, a.event_id, edge)] += 1
        position[rid] = a.to_stage
        moves[rid].append(edge)
    for rid, r in releases.items():
        assert position[rid] == r.stage, f"release {rid}: audit ends at {position[rid]}, release is at {r.stage}"
        assert resumed_out_of_halted[rid] <= resumes[rid], f"release {rid} resumed out of halted without a resume approval"
    dup = [k for k, n in per_event.items() if n > 1]
    assert not dup, f"an event applied the same transition twice: {dup[:5]}"
    for e in events:
        expected = len(e.payload.get("signals", [])) if e.status == "processed" else 0
        assert signal_rows.get(e.id, 0) == expected, (
            f"event {e.id} ({e.status}) left {signal_rows.get(e.id, 0)} signal rows, expected {expected}"
        )
    return moves
