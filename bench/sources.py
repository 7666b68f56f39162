"""What does polling cost? 200 tracks x 4 pulled sources, each polled every 5 minutes.

On PostgreSQL, in process (the poll job a worker runs): 200 tracks, each with one release in a
stage whose gates read 4 signals, each signal from its own Prometheus source (a local HTTP server
answering like Prometheus: tests/fakes/prometheus.py). The clock moves 5 minutes per cycle; every
cycle polls all 800 (release, source) pairs, with values that change every other cycle (so half
the polls record and judge, half find nothing new).

Reports: the wall time of a cycle and what that means as requests per minute the worker can
sustain, the worker's CPU share at the nominal rate (800 requests per 5 minutes), and its RSS.
Target: RSS <= 150 MB.

    python bench/sources.py [--tracks 200] [--cycles 5] [--workers 8]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import bench_database, load_note, quiet_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the contract fakes live in tests/

SIGNALS = ("crash_free_sessions", "anr_rate", "active_users", "open_blockers")
PIPELINE = """\
name: pulledbench
timezone: UTC
signals:
  crash_free_sessions: {type: percent}
  anr_rate: {type: percent}
  active_users: {type: count}
  open_blockers: {type: count}
gates:
  crash: {kind: threshold, signal: crash_free_sessions, better: higher, pass: 99.5, fail: 99.0}
  anr: {kind: threshold, signal: anr_rate, better: lower, pass: 0.3, fail: 0.47}
  usage: {kind: count, signal: active_users, min: 1000000}
  blockers: {kind: count, signal: open_blockers, max: 0}
stages:
  rollout_1: {kind: rollout, percent: 1}
  rollout_100: {kind: rollout, percent: 100}
  released: {kind: final}
  halted: {kind: halted}
transitions:
  - {from: rollout_1, to: rollout_100, gates: [crash, anr, usage, blockers], on_fail: halt}
  - {from: rollout_100, to: released, gates: [crash, anr, usage, blockers], on_fail: halt}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    quiet_logs()
    import tempfile

    from conductor.actions.http import make_client
    from conductor.clock import ManualClock
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.service import Actor
    from conductor.service.sources import poll_sources, set_sources
    from conductor.store.db import Database
    from tests.fakes.prometheus import FakePrometheus
    from tests.fakes.server import FakeServer

    defs = Path(tempfile.mkdtemp(prefix="conductor-bench-"))
    (defs / "pulledbench.yaml").write_text(PIPELINE)
    clock = ManualClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    with FakeServer() as server, bench_database("_sources") as url:
        prom = FakePrometheus(server)
        c = Conductor(Database(url), DefinitionCatalog(defs), clock)
        admin = Actor("bench", "admin")
        for i in range(args.tracks):
            track = f"app-{i:03d}"
            c.ensure_track(track, "pulledbench")
            sources = [
                {"name": s, "kind": "prometheus", "base_url": server.url, "signals": {s: f'{s}{{track="{track}"}}'}} for s in SIGNALS
            ]
            set_sources(c, track, admin, {"sources": sources})
            c.start_release(track, "1.0", Actor("rita"))
        client = make_client(10.0)
        cycles, cpus, requests = [], [], 0
        for cycle in range(args.cycles):
            value = 99.8 if cycle % 2 == 0 else 99.7  # changes every other cycle
            for i in range(args.tracks):
                t = f"app-{i:03d}"
                now_s = clock.now.timestamp()
                prom.series[f'crash_free_sessions{{track="{t}"}}'] = [({"track": t}, now_s, str(value))]
                prom.series[f'anr_rate{{track="{t}"}}'] = [({"track": t}, now_s, "0.2")]
                prom.series[f'active_users{{track="{t}"}}'] = [({"track": t}, now_s, "5000")]
                prom.series[f'open_blockers{{track="{t}"}}'] = [({"track": t}, now_s, "0")]
            before = len(server.requests)
            cpu0, t0 = time.process_time(), time.perf_counter()
            report = poll_sources(c, client, limit=10_000, workers=args.workers)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            requests += len(server.requests) - before
            cycles.append(wall)
            cpus.append(cpu)
            print(f"cycle {cycle}: {report.polled} polls, {report.recorded} recorded, {report.unchanged} unchanged, "
                  f"{report.errors} errors in {wall:.2f} s wall, {cpu:.2f} s CPU")  # fmt: skip
            clock.advance(timedelta(minutes=5, seconds=31))  # past the interval and its jitter
        client.close()
    pairs = args.tracks * len(SIGNALS)
    per_cycle = statistics.median(cycles)
    sustainable = pairs / per_cycle * 60
    cpu_share = statistics.median(cpus) / 300 * 100  # at the nominal rate: all pairs once per 5 minutes
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nominal = pairs / 5
    print(f"\n{args.tracks} tracks x {len(SIGNALS)} sources = {pairs} polls per 5 minutes ({nominal:.0f} requests/min nominal)")
    print(f"a cycle takes {per_cycle:.2f} s (median of {args.cycles}): the worker could sustain {sustainable:,.0f} requests/min")
    print(f"CPU share at the nominal rate: {cpu_share:.1f} % of one core; peak RSS {rss_mb:.0f} MB (target <= 150 MB)")
    print(load_note())
    print(f"requests_per_min={nominal:.0f} sustainable_requests_per_min={sustainable:.0f} median_ms={per_cycle * 1000:.0f} "
          f"cpu_share_pct={cpu_share:.1f} rss_mb={rss_mb:.0f} requests={requests}")  # fmt: skip


if __name__ == "__main__":
    main()
