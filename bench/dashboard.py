"""Server time of the dashboard: the overview with 500 releases, a release page with a 200-entry timeline.

One release of each shape (released after an approval, cancelled, halted, rolling out, awaiting
approval, soaking in alpha, on trunk) is driven through the real service on the mobile_weekly
pipeline; the rest are row-for-row copies of those (evidence, audit, signals, timers) on 50
tracks, so the board holds 300 live releases and 200 finished ones. Pages are served in process
(ASGI, no network) after a sign-in; the figure is the handler's time from its Server-Timing header,
and the wall time per request is shown beside it.

    python bench/dashboard.py [--releases 500] [--timeline 200] [--requests 60] [--database-url URL]

Target: the overview's median at most 100 ms (ok=true|false). Last line: key=value pairs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
warnings.filterwarnings("ignore", category=DeprecationWarning)

from sqlalchemy import select  # noqa: E402

from conductor.clock import ManualClock  # noqa: E402
from conductor.config import PACKAGE_DEFINITIONS  # noqa: E402
from conductor.domain.loader import DefinitionCatalog  # noqa: E402
from conductor.facade import Conductor  # noqa
from conductor.service import Actor  # noqa: E402
from conductor.service.tokens import create_token  # noqa: E402
from conductor.store.db import Database, upgrade  # noqa: E402
from conductor.store.models import Approval, AuditEntry, Evaluation, OutboxAction, Release, SignalRow, Timer, Track  # noqa: E402

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday
BRANCH_DAY = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
RM = Actor("maria.rm", "release_manager")
TEAMS = ("playback", "search", "payments", "growth")
# Per track of ten: what the board holds (shape -> count).
MIX = {"released": 4, "cancelled": 1, "halted": 1, "rollout": 1, "approval": 1, "alpha": 1, "trunk": 1}
TARGET_MS = 100.0


# ------------------------------------------------------------------ driving template releases


def ci(c: Conductor, rid: int) -> None:
    c.record_signal(rid, "build_green", True, source="github-actions", sha="a1b2c3d4e5")
    c.record_signal(rid, "tests_pass_rate", 1.0, samples=1843, source="junit", sha="a1b2c3d4e5")


def ring(c: Conductor, rid: int, crash: float = 99.8) -> None:
    c.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)
    c.record_signal(rid, "crash_free_sessions", crash, samples=42000, source="crashlytics", evaluate=False)
    c.record_signal(rid, "anr_rate", 0.21, samples=42000, source="play-vitals", evaluate=False)
    c.record_signal(rid, "active_users", 9000, source="analytics", evaluate=False)
    c.evaluate(rid)


def drive(c: Conductor, clock: ManualClock, version: str, shape: str) -> int:
    """One release of the given shape on the template track, through the service."""
    clock.now = START
    rid = c.start_release("template", version, RM)
    if shape == "trunk":
        return rid
    clock.now = BRANCH_DAY
    c.tick()
    ci(c, rid)
    if shape == "cancelled":
        c.cancel(rid, RM, "superseded by a hotfix train")
        return rid
    clock.advance(timedelta(hours=12))
    c.record_signal(rid, "open_blockers", 0, source="jira")
    c.tick()
    if shape == "alpha":
        ring(c, rid)
        return rid
    clock.advance(timedelta(days=1))
    ci(c, rid)
    ring(c, rid)
    for team in TEAMS:
        c.sign_off(rid, team, Actor(f"{team}-lead", "team"), reason="regression suite done")
    clock.advance(timedelta(days=2))
    ci(c, rid)
    ring(c, rid, crash=99.3)  # grey zone: asks a release manager
    if shape == "approval":
        return rid
    c.approve(rid, RM, "known OEM crash cluster, within noise")
    clock.advance(timedelta(hours=6))
    if shape == "rollout":
        ring(c, rid)
        return rid
    if shape == "halted":
        ring(c, rid, crash=98.1)
        return rid
    clock.advance(timedelta(days=1))
    ring(c, rid)
    clock.advance(timedelta(days=1))
    ring(c, rid)
    assert c.snapshot(rid).release.stage == "released", c.snapshot(rid).release.stage
    return rid


# ------------------------------------------------------------------ copying rows


def _row(obj, **override):
    # A copied audit row is a new row: unsealed, the sealer chains it.
    data = {col.key: getattr(obj, col.key) for col in obj.__table__.columns if col.key not in ("id", "seq", "prev_hash", "row_hash")}
    data.update(override)
    return type(obj)(**data)


def clone(s, template: Release, track: str, version: str) -> int:
    """A copy of a release with all its rows (evaluations, audit, signals, timers, outbox, approvals)."""
    rel = _row(template, track_id=track, version=version, branch=f"release/{version}", version_id=1, pending_evaluation_id=None)
    s.add(rel)
    s.flush()
    evs = s.scalars(select(Evaluation).where(Evaluation.release_id == template.id).order_by(Evaluation.id)).all()
    new_evs = [_row(e, release_id=rel.id) for e in evs]
    s.add_all(new_evs)
    s.flush()
    ev_map = {old.id: new.id for old, new in zip(evs, new_evs, strict=True)}
    rel.pending_evaluation_id = ev_map.get(template.pending_evaluation_id)
    for model in (AuditEntry, SignalRow, Approval):
        rows = s.scalars(select(model).where(model.release_id == template.id).order_by(model.id)).all()
        s.add_all(
            _row(r, release_id=rel.id, **({"evaluation_id": ev_map.get(r.evaluation_id)} if hasattr(r, "evaluation_id") else {}))
            for r in rows
        )
    for t in s.scalars(select(Timer).where(Timer.release_id == template.id)):
        s.add(_row(t, release_id=rel.id, key=f"{rel.id}:{t.key.split(':', 1)[1]}"))
    for o in s.scalars(select(OutboxAction).where(OutboxAction.release_id == template.id)):
        s.add(_row(o, release_id=rel.id, idempotency_key=f"{rel.id}:{o.idempotency_key.split(':', 1)[1]}"))
    return rel.id


# ------------------------------------------------------------------ measuring


def measure(client, path: str, n: int) -> tuple[list[float], list[float], list[float]]:
    """Server (handler) time, its CPU time, and the wall time per request, in ms."""
    for _ in range(5):
        assert client.get(path).status_code == 200, path
    server, cpu, wall = [], [], []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        wall.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
        timing = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers["server-timing"]))
        server.append(float(timing["app"]))
        cpu.append(float(timing["cpu"]))
    return server, cpu, wall


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--releases", type=int, default=500)
    ap.add_argument("--timeline", type=int, default=200)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    args = ap.parse_args()

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from conductor.api.dashboard import build_router

    tmp = tempfile.mkdtemp(prefix="conductor-bench-")
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    upgrade(url)
    clock = ManualClock(START)
    c = Conductor(Database(url), DefinitionCatalog(PACKAGE_DEFINITIONS), clock)
    c.ensure_track("template", "mobile_weekly")

    t0 = time.perf_counter()
    templates = {shape: drive(c, clock, f"0.{i}", shape) for i, shape in enumerate(MIX)}
    per_track = sum(MIX.values())
    n_tracks = max(1, args.releases // per_track)
    with c.db.transaction() as s:
        tpl = {shape: s.get(Release, rid) for shape, rid in templates.items()}
        for k in range(n_tracks):
            track = f"app{k:02d}-{'android' if k % 2 else 'ios'}"
            s.add(
                Track(
                    id=track,
                    definition_name="mobile_weekly",
                    branch_pattern="release/{version}",
                    critical_fix_marker="Release-Fix: critical",
                    four_eyes=False,
                    settings={},
                    created_at=START,
                )
            )
            s.flush()
            minor = 0
            for shape, count in MIX.items():
                for _ in range(count):
                    minor += 1
                    clone(s, tpl[shape], track, f"8.{minor}.0")
        # The templates themselves are not part of the board.
    with c.db.transaction() as s:
        for rid in templates.values():
            for model in (Approval, AuditEntry, SignalRow, Timer, OutboxAction):
                s.query(model).filter(model.release_id == rid).delete()
            s.query(Release).filter(Release.id == rid).update({"pending_evaluation_id": None})
            s.query(Evaluation).filter(Evaluation.release_id == rid).delete()
            s.query(Release).filter(Release.id == rid).delete()
        s.query(Track).filter(Track.id == "template").delete()
        total = s.query(Release).count()
    setup_s = time.perf_counter() - t0

    # A release awaiting approval with a long history: pauses and resumes fill its timeline.
    with c.db.read() as s:
        busy = s.scalar(select(Release.id).where(Release.pending_evaluation_id.is_not(None)).order_by(Release.id).limit(1))
    clock.now = max(clock.now, BRANCH_DAY + timedelta(days=4))
    for i in range(60):
        clock.advance(timedelta(minutes=10))
        c.record_signal(busy, "crash_free_sessions", 99.3, samples=42000 + 100 * i, source="crashlytics", evaluate=False)
    while len(c.snapshot(busy).audit) < args.timeline:
        clock.advance(timedelta(minutes=5))
        c.pause(busy, RM, "store review backlog")
        if len(c.snapshot(busy).audit) < args.timeline:
            c.resume(busy, RM, "backlog cleared")
    timeline = len(c.snapshot(busy).audit)

    token = create_token(c, "bench", "release_manager")
    app = FastAPI()
    app.include_router(build_router(lambda: c, secret_key="bench"))
    client = TestClient(app)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/login", data={"token": token, "csrf_token": csrf}, follow_redirects=False).status_code == 303

    results = {}
    for name, path in (("overview", "/"), ("release", f"/release/{busy}"), ("insights", "/insights")):
        server, cpu, wall = measure(client, path, args.requests)
        results[name] = (statistics.median(server), p99(server), statistics.median(cpu), statistics.median(wall))
        print(
            f"{name:9s} {path:14s} server median {results[name][0]:7.1f} ms  p99 {results[name][1]:7.1f} ms  "
            f"cpu median {results[name][2]:6.1f} ms  (wall median {results[name][3]:.1f} ms)"
        )

    om, op, ocpu, _ = results["overview"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ok = om <= TARGET_MS
    print(f"setup {setup_s:.1f}s on {url.split(':', 1)[0]}: {total} releases on {n_tracks} tracks, timeline of {timeline} entries")
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs; wall times are inflated, the cpu figures are not")
    print(
        f"bench=dashboard releases={total} timeline={timeline} requests={args.requests} median_ms={om:.1f} p99_ms={op:.1f} "
        f"cpu_median_ms={ocpu:.1f} release_median_ms={results['release'][0]:.1f} release_p99_ms={results['release'][1]:.1f} "
        f"insights_median_ms={results['insights'][0]:.1f} load={load:.1f} target_ms={TARGET_MS:.0f} ok={str(ok).lower()}"
    )
    return 0  # a benchmark reports; ok= says whether the target was met


if __name__ == "__main__":
    sys.exit(main())
