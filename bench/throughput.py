"""Events processed per second by real `celery -A workers worker` processes: 1 worker, then 2.

Setup (not measured): PostgreSQL database and Redis of the benchmark's own, RELEASES releases on
their release branch, EVENTS signal events stored in the inbox and handed to the API's dispatcher
(the dispatcher's submit), which queues them in Redis as process_events tasks of up to 100
ids each: a backlog, as after a burst of CI results or a broker outage (a trickle of webhooks
goes out one id per task instead, see bench/latency.py). Then the workers start; the rate is taken from the inbox's own processed_at
stamps (first to last processed event), so worker start-up is not counted. Every event must end
processed: lost = queued - processed.

    python bench/throughput.py [--events 4000] [--releases 200] [--pool prefork|solo]

Target: >= 500 events/s with 2 workers.
"""

from __future__ import annotations

import argparse
import random
import time

from harness import (
    Worker,
    bench_database,
    bulk_store,
    conductor_for,
    load_note,
    quiet_logs,
    signal_event,
    start_releases,
    throwaway_redis,
    truncate,
    worker_env,
)

# Steady-state traffic: ring metrics and bug counts for releases on their branch, recorded and
# judged (the decision is re-evaluated each time) without a transition. Transitions are a handful
# per release in its life; these updates are the bulk of what a worker processes.
SIGNALS = [("open_blockers", 0.0, None), ("crash_free_sessions", 99.7, 40000), ("anr_rate", 0.2, 40000), ("active_users", 8000.0, None)]


def run(db_url: str, broker_url: str, workers: int, n_events: int, n_releases: int, seed: int, pool: str) -> dict:
    from sqlalchemy import func, select

    from conductor.dispatch.celery import CeleryDispatcher
    from conductor.service.ports import TASK_PROCESS_EVENTS
    from conductor.store.models import InboxEvent

    c = conductor_for(db_url)
    truncate(c.db)
    versions = [f"4.{i}.0" for i in range(n_releases)]
    start_releases(c, versions, cut=True)
    rng = random.Random(seed)
    events = []
    for i in range(n_events):
        name, value, samples = rng.choice(SIGNALS)
        events.append(signal_event(rng.choice(versions), f"tp-{workers}-{i}", name, value, samples))
    ids = bulk_store(c, events)
    dispatcher = CeleryDispatcher(broker_url)
    for start in range(0, len(ids), 100):  # as the sweeper sends a backlog: 100 events a task
        if not dispatcher.submit(TASK_PROCESS_EVENTS, ids[start : start + 100]):
            raise RuntimeError("the broker did not take the backlog")
    env = worker_env(db_url, broker_url)
    procs = [Worker(f"tp{workers}-{i}", env, concurrency=1, pool=pool) for i in range(workers)]
    started = time.monotonic()
    try:
        while True:
            with c.db.read() as s:
                pending = s.scalar(
                    select(func.count()).select_from(InboxEvent).where(InboxEvent.id.in_(ids), InboxEvent.status == "pending")
                )
            if pending == 0 or time.monotonic() - started > 600:
                break
            time.sleep(0.25)
        rss = max(p.peak_rss_mb() for p in procs)
    finally:
        for p in procs:
            p.stop()
    with c.db.read() as s:
        first, last, done = s.execute(
            select(func.min(InboxEvent.processed_at), func.max(InboxEvent.processed_at), func.count()).where(
                InboxEvent.id.in_(ids), InboxEvent.status == "processed"
            )
        ).one()
    c.db.dispose()
    seconds = max((last - first).total_seconds(), 1e-6) if done else float("nan")
    return {"rate": (done - 1) / seconds if done > 1 else 0.0, "done": done, "lost": len(ids) - done, "seconds": seconds, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument(
        "--pool",
        choices=["prefork", "solo"],
        default="prefork",
        help="each worker runs one task at a time: a prefork pool of 1 (as deployed) or solo",
    )
    args = parser.parse_args()
    quiet_logs()
    results = {}
    with bench_database() as db_url, throwaway_redis() as broker_url:
        for n in (1, 2):
            r = results[n] = run(db_url, broker_url, n, args.events, args.releases, seed=n, pool=args.pool)
            print(
                f"{n} worker(s) ({args.pool}): {r['done']}/{args.events} events processed in {r['seconds']:.2f} s "
                f"= {r['rate']:.0f} events/s, lost {r['lost']}, peak worker RSS {r['rss']:.0f} MB"
            )
    print(load_note())
    scaling = results[2]["rate"] / results[1]["rate"] if results[1]["rate"] else float("nan")
    print(
        f"scaling 1 -> 2 workers: {scaling:.2f}x; target >= 500 events/s with 2 workers: "
        f"{'met' if results[2]['rate'] >= 500 else 'NOT met'}"
    )
    print(
        f"processed_per_s_1_worker={results[1]['rate']:.0f} processed_per_s_2_workers={results[2]['rate']:.0f} "
        f"lost={results[1]['lost'] + results[2]['lost']} rss_mb={max(r['rss'] for r in results.values()):.0f}"
    )


if __name__ == "__main__":
    main()
