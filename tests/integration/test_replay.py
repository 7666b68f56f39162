"""Replay: past releases' recorded signals through another definition, writing nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.integration.test_service import RM

TRAIN = """\
name: train
timezone: Europe/Stockholm
signals:
  crash_free_sessions: {type: percent}
gates:
  crash: {kind: threshold, signal: crash_free_sessions, better: higher, pass: 99.5, fail: 99.0, min_samples: 1000}
stages:
  beta: {}
  rollout: {kind: rollout}
  released: {kind: final}
  halted: {kind: halted}
transitions:
  - {from: beta, to: rollout, min_soak: 2h, gates: [crash]}
  - {from: rollout, to: released, min_soak: 12h, gates: [crash], on_fail: halt}
"""
# The same train, judging crash-free sessions against the previous release in the same ring.
COMPARED = TRAIN.replace(
    "crash: {kind: threshold, signal: crash_free_sessions, better: higher, pass: 99.5, fail: 99.0, min_samples: 1000}",
    "crash: {kind: compare, signal: crash_free_sessions, better: higher, tolerance: 0.1, floor: 99.0, min_samples: 1000}",
)


def _live(database, clock, tmp_path, definition: str):
    """A Conductor whose track `app` runs `definition` (as train.yaml)."""
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor

    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "train.yaml").write_text(definition)
    c = Conductor(database, DefinitionCatalog(defs), clock)
    c.ensure_track("app", "train")
    return c


@pytest.fixture
def train(database, clock, tmp_path):
    return _live(database, clock, tmp_path, TRAIN)


def _run(c, clock, version: str, crash: dict[str, float], per_hour: int = 20_000) -> int:
    """One release, crash data every hour (cumulative sessions), until it ends or asks."""
    rid = c.start_release("app", version, RM)
    sessions = {"beta": 0, "rollout": 0}
    for _ in range(40):
        clock.advance(timedelta(hours=1))
        snap = c.snapshot(rid)
        stage = snap.release.stage
        if snap.pending is not None:
            c.approve(rid, RM, "looked at the crash clusters", evaluation_id=snap.pending.id, fingerprint=snap.pending.fingerprint)
            continue
        if stage not in sessions:
            break
        sessions[stage] += per_hour
        c.record_signal(rid, "crash_free_sessions", crash[stage], samples=sessions[stage], source="sentry")
        c.tick()
    return rid


def _counts(db):
    from conductor.store.statements import AUDIT, EVALUATIONS, RELEASES, SIGNALS, TIMERS

    with db.engine.connect() as conn:
        return {t.name: conn.scalar(select(func.count()).select_from(t)) for t in (AUDIT, EVALUATIONS, RELEASES, SIGNALS, TIMERS)}


def test_a_compare_gate_would_have_halted_a_release_the_fixed_band_only_asked_about(train, clock):
    from conductor.domain.loader import parse_pipeline
    from conductor.read.replay import replay

    good = _run(train, clock, "1.0", {"beta": 99.8, "rollout": 99.8})
    worse = _run(train, clock, "1.1", {"beta": 99.8, "rollout": 99.4})  # 0.4 pp worse at 1 %: grey for the fixed band
    assert train.snapshot(good).release.stage == "released"
    assert any(a.kind == "approval_requested" for a in train.snapshot(worse).audit)
    before = _counts(train.db)

    same = replay(train, parse_pipeline(TRAIN, "train.yaml"))
    assert same.differing == 0 and same.recorded == same.replayed  # the recorded definition agrees with itself

    report = replay(train, parse_pipeline(COMPARED, "train.yaml"))
    assert _counts(train.db) == before  # writes nothing
    by = {r.release: r for r in report.releases}
    assert by["app/1.0"].difference is not None  # the first release has no baseline: it would have asked
    diff = by["app/1.1"].difference
    assert diff is not None and diff.startswith("would have halted at rollout at ") and "instead of asking at " in diff
    halted = by["app/1.1"].replayed[-1]
    asked = by["app/1.1"].recorded[-1]
    assert (halted.verdict, asked.verdict) == ("halt", "ask") and halted.at < asked.at
    assert "regressed" in halted.detail and "app/1.0" in halted.detail
    assert (report.recorded.halts, report.replayed.halts) == (0, 1)
    assert (report.recorded.released, report.replayed.released) == (2, 1)
    assert by["app/1.1"].replayed_hours is None and by["app/1.1"].recorded_hours is not None


CANCELLABLE = COMPARED.replace("  halted: {kind: halted}\n", "  halted: {kind: halted}\n  cancelled: {kind: cancelled}\n")


@pytest.fixture
def compared(database, clock, tmp_path):
    """The train with the compare gate (and a cancelled stage), live."""
    return _live(database, clock, tmp_path, CANCELLABLE)


def test_a_halted_and_cancelled_release_is_no_baseline(compared, clock):
    """1.1 halts for its crash rate and is cancelled; 1.2 with the same bad numbers is judged
    against 1.0 (the last release not stopped), so it halts too: no worse than a bad release is not
    good. Replay finds the same baseline at the same moments."""
    from conductor.domain.loader import parse_pipeline
    from conductor.read.replay import replay

    good = _run(compared, clock, "1.0", {"beta": 99.8, "rollout": 99.8})
    bad = _run(compared, clock, "1.1", {"beta": 99.8, "rollout": 99.3})
    assert [compared.snapshot(r).release.stage for r in (good, bad)] == ["released", "halted"]
    compared.cancel(bad, RM, "crash in the new player")
    again = _run(compared, clock, "1.2", {"beta": 99.8, "rollout": 99.3})
    snap = compared.snapshot(again)
    assert snap.release.stage == "halted"
    crash = next(g for g in snap.latest.evidence["gates"] if g["gate"] == "crash")
    assert crash["inputs"]["baseline_release"] == "app/1.0" and crash["outcome"] == "fail"

    report = replay(compared, parse_pipeline(CANCELLABLE, "train.yaml"))
    assert report.differing == 0 and report.recorded == report.replayed


def test_a_reference_rate_judges_the_first_release_instead_of_asking(train, clock):
    from conductor.domain.loader import parse_pipeline
    from conductor.read.replay import replay

    _run(train, clock, "1.0", {"beta": 99.8, "rollout": 99.8})
    without = replay(train, parse_pipeline(COMPARED, "train.yaml")).releases[0]
    assert "ask" in {d.verdict for d in without.replayed}  # no earlier release: nothing to compare with
    referenced = COMPARED.replace("floor: 99.0,", "floor: 99.0, reference: 99.8,")
    with_reference = replay(train, parse_pipeline(referenced, "train.yaml")).releases[0]
    assert "ask" not in {d.verdict for d in with_reference.replayed}
    assert [(d.stage, d.verdict) for d in with_reference.replayed] == [("beta", "advance"), ("rollout", "advance")]


def test_replay_names_a_missing_track_and_a_definition_no_track_uses(train):
    from conductor.domain.errors import NotFound
    from conductor.domain.loader import parse_pipeline
    from conductor.read.replay import replay

    with pytest.raises(NotFound, match="no track 'web'"):
        replay(train, parse_pipeline(TRAIN, "train.yaml"), track="web")
    with pytest.raises(NotFound, match="no track uses a definition named 'other'"):
        replay(train, parse_pipeline(TRAIN.replace("name: train", "name: other"), "other.yaml"))
