"""Does the per-event cost stay flat as releases pile up? And what does tick cost with many timers?

On PostgreSQL, in process (the service layer a worker runs, without the broker), two databases:
1. per-event cost (store_event + the process_events job) with 10 active releases on their branch;
2. the same with 10,000 active releases, each with signal history, its evaluation and a pending
   timer (bulk-inserted as copies of a real release's state), events spread over all of them.
   Events alternate between the two databases one by one, so both see the same machine load;
3. tick with 10,000 pending timers of which 10 are due, and with none due.

Target: per-event cost with 10,000 releases within 1.2x of the cost with 10.

    python bench/scale.py [--releases 10000] [--events 500]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

from harness import (
    TRACK,
    bench_database,
    conductor_for,
    load_note,
    percentile,
    quiet_logs,
    signal_event,
    start_releases,
    summary,
)

# Ring metrics for releases on their branch: recorded and judged, but the branch gates (build,
# tests) do not read them, so every event does the same work in both runs (no transition, the
# decision unchanged) and the comparison isolates the effect of the number of releases.
SIGNALS = [("open_blockers", 0.0, None), ("crash_free_sessions", 99.7, 40000), ("anr_rate", 0.2, 40000), ("active_users", 8000.0, None)]


class Nowhere:
    """The dispatcher of this benchmark: follow-up work is not the subject here."""

    def submit(self, task, *args):
        pass

    def event_stored(self, event_id):
        pass


def timed_events(c, versions: list[str], seed: int, tag: str):
    """An endless supply of timed event steps on random releases: each call returns one duration (ms)."""
    from conductor.actions import ActionAdapters
    from conductor.service.inbox import store_event
    from conductor.service.jobs import Runtime, handle_events

    rt = Runtime(c, Nowhere(), ActionAdapters(None))  # type: ignore[arg-type]  (no action runs here)
    rng = random.Random(seed)
    i = 0

    def step() -> float:
        nonlocal i
        i += 1
        name, value, samples = rng.choice(SIGNALS)
        event = signal_event(rng.choice(versions), f"{tag}-{i}", name, value, samples)
        t = time.perf_counter()
        handle_events(rt, [store_event(c, event).event_id])
        return (time.perf_counter() - t) * 1000

    return step


def bulk_releases(c, count: int, start: int) -> list[str]:
    """`count` releases on their branch, copies of the first release's state, with ring signal history and a pending timer."""
    from sqlalchemy import insert, select

    from conductor.store.models import Evaluation, Release, SignalRow, Timer

    now = c.now()
    with c.db.read() as s:
        model = s.scalars(select(Release).order_by(Release.id).limit(1)).one()
        evaluation = s.scalars(select(Evaluation).where(Evaluation.release_id == model.id).order_by(Evaluation.id.desc()).limit(1)).one()
        definition_hash = model.definition_hash
    versions = [f"8.{i}.0" for i in range(start, start + count)]
    batch = 2000
    for lo in range(0, count, batch):
        chunk = versions[lo : lo + batch]
        with c.db.transaction() as s:
            ids = s.scalars(
                insert(Release).returning(Release.id),
                [
                    {
                        "track_id": TRACK,
                        "version": v,
                        "stage": "branch",
                        "definition_hash": definition_hash,
                        "entered_stage_at": now,
                        "branch": f"release/{v}",
                        "head_sha": "c0ffee1",
                        "created_at": now,
                        "updated_at": now,
                        "paused": False,
                        "unreviewed_commits": [],
                        "version_id": 1,
                    }
                    for v in chunk
                ],
            ).all()
            s.execute(
                insert(SignalRow),
                [
                    {
                        "release_id": rid,
                        "name": name,
                        "value": value,
                        "samples": samples,
                        "source": "bench",
                        "sha": "c0ffee1",
                        "observed_at": now,
                        "recorded_at": now,
                    }
                    for rid in ids
                    for name, value, samples in SIGNALS
                ],
            )
            s.execute(
                insert(Evaluation),
                [
                    {
                        "release_id": rid,
                        "stage": evaluation.stage,
                        "transition": evaluation.transition,
                        "verdict": evaluation.verdict,
                        "fingerprint": evaluation.fingerprint,
                        "evidence": evaluation.evidence,
                        "trigger": "bench",
                        "created_at": now,
                    }
                    for rid in ids
                ],
            )
            s.execute(
                insert(Timer),
                [
                    {"release_id": rid, "key": f"{rid}:branch:wait:bench", "kind": "wait", "due_at": now + timedelta(days=3), "payload": {}}
                    for rid in ids
                ],
            )
    return versions


def tick_ms(c, due: int) -> tuple[float, int]:
    """One tick with `due` timers made due now (the rest stay in the future)."""
    from sqlalchemy import select, update

    from conductor.store.models import Timer

    now = c.now()
    with c.db.transaction() as s:
        ids = s.scalars(select(Timer.id).where(Timer.fired_at.is_(None)).order_by(Timer.id).limit(due)).all() if due else []
        if ids:
            s.execute(update(Timer).where(Timer.id.in_(ids)).values(due_at=now - timedelta(seconds=1)))
    t = time.perf_counter()
    fired = c.tick()
    return (time.perf_counter() - t) * 1000, fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    quiet_logs()
    from sqlalchemy import func, select

    from conductor.store.models import Timer

    with bench_database("_few") as few_url, bench_database("_many") as many_url:
        few_c, many_c = conductor_for(few_url), conductor_for(many_url)
        small = [f"7.{i}.0" for i in range(10)]
        start_releases(few_c, small, cut=True)
        start_releases(many_c, small, cut=True)
        t = time.perf_counter()
        many_versions = small + bulk_releases(many_c, args.releases - len(small), start=0)
        print(f"bulk-created {args.releases - len(small)} releases with signals, evaluations and timers in {time.perf_counter() - t:.1f} s")
        for c in (few_c, many_c):
            with c.db.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        few_step, many_step = timed_events(few_c, small, 1, "few"), timed_events(many_c, many_versions, 2, "many")
        for _ in range(50):  # warm caches and prepared statements on both
            few_step(), many_step()
        # Alternate between the two databases event by event, so both see the same machine load.
        few, many = [], []
        for _ in range(args.events):
            few.append(few_step())
            many.append(many_step())
        tick_idle, _ = tick_ms(many_c, 0)
        tick_due, fired = tick_ms(many_c, 10)
        with many_c.db.read() as s:
            pending_timers = s.scalar(select(func.count()).select_from(Timer).where(Timer.fired_at.is_(None)))
        few_c.db.dispose()
        many_c.db.dispose()
    ratio = statistics.median(many) / statistics.median(few)
    print(f"per event, 10 active releases:      {summary(few)}")
    print(f"per event, {args.releases} active releases: {summary(many)}")
    print(f"cost ratio {args.releases} vs 10 releases (median): {ratio:.2f}x; target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}")
    print(
        f"tick with {pending_timers + fired} pending timers, none due: {tick_idle:.1f} ms; "
        f"with 10 due: {tick_due:.1f} ms ({fired} fired, {tick_due / max(fired, 1):.1f} ms per fired timer)"
    )
    print(load_note())
    print(f"median_ms={statistics.median(many):.2f} p99_ms={percentile(many, 0.99):.2f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
