"""Latency from a signed webhook POST to the transition it causes being committed.

The stack is the distributed one: `conductor api` (uvicorn) -> PostgreSQL inbox -> Redis ->
one `celery -A workers worker` -> the transition committed in PostgreSQL. (`--via direct`, or
automatically when the API cannot be measured, stores the event and enqueues it the way the
webhook endpoint does, without HTTP; the output says which was measured.) Each of EVENTS
releases gets one signed generic webhook that cuts its release branch (trunk -> branch); the
client sends them one at a time and polls the release row until the transition is visible, so
the figure is what a CI system would observe.

In the same run, the raw floor on this machine: one PostgreSQL INSERT+COMMIT, one Redis push and
pop, one bare HTTP POST to a minimal endpoint on the same HTTP server (uvicorn). ratio =
median latency / (sum of the three floor medians).

    python bench/latency.py [--events 1000] [--via api|direct] [--breakdown]

--breakdown also prints where the time goes, step by step, from time stamps taken inside the
API and worker processes (bench/probe/sitecustomize.py wraps the functions an event passes
through; it adds a few microseconds per step). The worker's "committed" stamp is taken when its
COMMIT returns, so the client's NOTIFY can arrive a little before it (a negative last row).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from harness import (
    REPO,
    ROOT,
    TRACK,
    Worker,
    bench_database,
    conductor_for,
    free_port,
    load_note,
    percentile,
    quiet_logs,
    summary,
    throwaway_redis,
    worker_env,
)

# One worker as compose.yaml deploys it (`--concurrency 2`): the action a transition queues runs
# beside the next event instead of ahead of it.
WORKER_CONCURRENCY = 2
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Installed in the benchmark's own database only, so the client learns of a commit without polling.
NOTIFY_ON_STAGE_CHANGE = """
CREATE OR REPLACE FUNCTION bench_notify_stage() RETURNS trigger AS $$
BEGIN
  IF NEW.stage IS DISTINCT FROM OLD.stage THEN PERFORM pg_notify('conductor_stage', NEW.id::text); END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bench_notify_stage ON releases;
CREATE TRIGGER bench_notify_stage AFTER UPDATE ON releases FOR EACH ROW EXECUTE FUNCTION bench_notify_stage();
"""

MINIMAL_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
"""


def serve(cmd: list[str], env: dict[str, str], port: int, path: str = "/healthz") -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "ab"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} did not start") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def signed(body: dict) -> tuple[bytes, dict[str, str]]:
    from conductor.actions.http import standard_webhook_headers

    raw = json.dumps(body)
    return raw.encode(), {"content-type": "application/json", **standard_webhook_headers(SECRET, body["id"], raw, datetime.now(UTC))}


def floor_postgres(db_url: str, n: int) -> list[float]:
    import psycopg
    import sqlalchemy as sa

    dsn = sa.engine.make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    out = []
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE floor_probe (id serial primary key, at timestamptz, body text)")
        conn.commit()
        for _ in range(n):
            t = time.perf_counter()
            conn.execute("INSERT INTO floor_probe (at, body) VALUES (now(), %s)", ("x" * 200,))
            conn.commit()
            out.append((time.perf_counter() - t) * 1000)
    return out


def floor_redis(broker_url: str, n: int) -> list[float]:
    import redis

    r = redis.Redis.from_url(broker_url)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r.lpush("floor_probe", "x" * 200)
        r.brpop("floor_probe", timeout=1)
        out.append((time.perf_counter() - t) * 1000)
    return out


def floor_http(n: int) -> list[float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "minimal_app.py"), "w") as f:
            f.write(MINIMAL_APP)
        env = {**os.environ, "PYTHONPATH": d}
        proc = serve([sys.executable, "-m", "uvicorn", "minimal_app:app", "--port", str(port), "--log-level", "warning"], env, port, "/")
        try:
            out = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                body, headers = signed({"id": "floor", "type": "signal"})
                for _ in range(n):
                    t = time.perf_counter()
                    client.post("/webhooks/generic", content=body, headers=headers)
                    out.append((time.perf_counter() - t) * 1000)
            return out
        finally:
            stop(proc)


PROBE = Path(__file__).resolve().parent / "probe"
STEPS = [  # (step, where its time stamp is taken)
    ("sent", "client: POST sent"),
    ("received", "API: webhook handler entered"),
    ("stored", "API: inbox row committed"),
    ("published", "API: process_events task in Redis"),
    ("started", "worker: task running in a pool process"),
    ("committed", "worker: transition committed"),
    ("seen", "client: NOTIFY of the commit received"),
]


def breakdown(probe_dir: str, client_marks: list[tuple[float, str, str]], warmup: int) -> list[str]:
    """Median time between successive steps of each event, from the probes' time stamps."""
    marks = list(client_marks)
    for name in os.listdir(probe_dir):
        with open(os.path.join(probe_dir, name)) as f:
            for line in f:
                t, step, ident = line.split(" ", 2)
                marks.append((float(t), step, ident.strip()))
    delivery_of = {}  # event id -> delivery id, from the API's "stored" stamps (delivery=event)
    for _, step, ident in marks:
        if step == "stored":
            delivery, _, event_id = ident.partition("=")
            delivery_of[event_id] = delivery
    at: dict[str, dict[str, float]] = {}  # delivery id -> step -> first time
    for t, step, ident in sorted(marks):
        if step == "stored":
            deliveries = [ident.partition("=")[0]]
        elif step in ("published", "started", "committed"):  # stamped with event ids
            deliveries = [delivery_of.get(i) for i in ident.split(",")]
        else:
            deliveries = [ident]
        for delivery in deliveries:
            if delivery is not None:
                at.setdefault(delivery, {}).setdefault(step, t)
    failed = [ident for _, step, ident in marks if step == "probe_failed"]
    out = [f"breakdown (median over events; each row: from the step above to this one){'; PROBE FAILED: ' + failed[0] if failed else ''}"]
    deliveries = [d for d in at if d.startswith("lat-") and int(d[4:]) >= warmup]
    for (prev, _), (step, where) in zip(STEPS, STEPS[1:], strict=False):
        gaps = [(at[d][step] - at[d][prev]) * 1000 for d in deliveries if step in at[d] and prev in at[d]]
        out.append(f"  {where:42s} +{statistics.median(gaps):6.2f} ms (n={len(gaps)})" if gaps else f"  {where:42s}  missing")
    return out


def measure(
    args, db_url: str, broker_url: str, via: str, probe_dir: str | None = None, client_marks: list | None = None
) -> tuple[list[float], list[float]]:
    """Latencies (ms) from sending each event to seeing its transition, and to its receipt (202 / stored)."""
    import psycopg
    import sqlalchemy as sa

    from conductor.dispatch.celery import CeleryDispatcher
    from conductor.service.inbox import store_event
    from conductor.sources.generic import parse_generic

    total = args.events + args.warmup
    c = conductor_for(db_url)
    c.ensure_track(TRACK, "mobile_weekly", repository=REPO)
    versions = [f"6.{i}.0" for i in range(total)]
    release_ids = [c.start_release(TRACK, v) for v in versions]
    env = worker_env(db_url, broker_url, CONDUCTOR_WEBHOOK_SECRET=SECRET)
    if probe_dir:
        env.update(CONDUCTOR_BENCH_PROBE=probe_dir, PYTHONPATH=os.pathsep.join(filter(None, [str(PROBE), env.get("PYTHONPATH")])))
    api = None
    if via == "api":
        port = free_port()
        api = serve([sys.executable, "-c", "from conductor.cli import main; main()", "api", "--port", str(port)], env, port)
    dispatcher = CeleryDispatcher(broker_url) if via == "direct" else None
    worker = Worker("latency", env, concurrency=WORKER_CONCURRENCY)
    dsn = sa.engine.make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    latencies: list[float] = []
    received: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as admin:  # benchmark-only: announce each stage change
        admin.execute(NOTIFY_ON_STAGE_CHANGE)
    try:
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}" if api else "http://unused", timeout=10) as client,
            psycopg.connect(dsn, autocommit=True) as poll,
        ):
            poll.execute("LISTEN conductor_stage")
            for i, (version, rid) in enumerate(zip(versions, release_ids, strict=True)):
                body, headers = signed(
                    {
                        "type": "build.finished",
                        "id": f"lat-{i}",
                        "repository": REPO,
                        "branch": f"release/{version}",
                        "sha": f"{i:07x}",
                        "outcome": "success",
                        "labels": ["branch_created"],
                    }
                )
                t = time.perf_counter()
                if client_marks is not None:
                    client_marks.append((time.time(), "sent", f"lat-{i}"))
                if api is not None:
                    r = client.post("/webhooks/generic", content=body, headers=headers)
                    if r.status_code != 202:
                        raise RuntimeError(f"the API answered {r.status_code}: {r.text[:300]}")
                else:  # what the webhook endpoint does after verifying: store, commit, enqueue
                    dispatcher.event_stored(store_event(c, parse_generic(headers, body)).event_id)
                t_received = time.perf_counter()
                # PostgreSQL delivers the trigger's NOTIFY when the transition commits: no polling.
                if not any(n.payload == str(rid) for n in poll.notifies(timeout=30, stop_after=1)):
                    raise RuntimeError(f"release {rid} did not move within 30 s")
                if client_marks is not None:
                    client_marks.append((time.time(), "seen", f"lat-{i}"))
                if i >= args.warmup:
                    latencies.append((time.perf_counter() - t) * 1000)
                    received.append((t_received - t) * 1000)
    finally:
        worker.stop()
        if api is not None:
            stop(api)
        c.db.dispose()
    return latencies, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--via",
        choices=["api", "direct"],
        default="api",
        help="api: signed POSTs to `conductor api`; direct: store_event + the Celery dispatcher (no HTTP)",
    )
    parser.add_argument("--breakdown", action="store_true", help="also print the time between the steps of each event (API only)")
    args = parser.parse_args()
    quiet_logs()
    via = args.via
    probe = tempfile.TemporaryDirectory(prefix="conductor-bench-probe-") if args.breakdown and via == "api" else None
    client_marks: list[tuple[float, str, str]] = []
    with bench_database() as db_url, throwaway_redis() as broker_url:
        try:
            latencies, received = measure(args, db_url, broker_url, via, probe.name if probe else None, client_marks)
        except RuntimeError as exc:
            if via != "api":
                raise
            print(f"the API could not be measured ({exc}); driving store_event + the Celery dispatcher instead (no HTTP)")
            via = "direct"
            if probe is not None:
                probe.cleanup()
                probe = None
            from harness import truncate

            truncate(conductor_for(db_url).db)
            latencies, received = measure(args, db_url, broker_url, via)
        n_floor = max(200, args.events)
        pg, rd = floor_postgres(db_url, n_floor), floor_redis(broker_url, n_floor)
        http = floor_http(n_floor) if via == "api" else []
    what = "webhook POST" if via == "api" else "store_event + enqueue (no HTTP)"
    print(
        f"{what} -> transition committed (1 worker of concurrency {WORKER_CONCURRENCY} + PostgreSQL + Redis"
        f"{' + API' if via == 'api' else ''}): "
        f"{summary(latencies)}"
    )
    print(f"  of which {'POST answered 202' if via == 'api' else 'stored and enqueued'}: {summary(received)}")
    print(f"floor: PostgreSQL INSERT+COMMIT {summary(pg)}")
    print(f"floor: Redis push+pop           {summary(rd)}")
    if http:
        print(f"floor: bare HTTP POST (uvicorn) {summary(http)}")
    if probe is not None:
        print("\n".join(breakdown(probe.name, client_marks, args.warmup)))
        probe.cleanup()
    print(load_note())
    floor = statistics.median(pg) + statistics.median(rd) + (statistics.median(http) if http else 0.0)
    median = statistics.median(latencies)
    print(f"median_ms={median:.2f} p99_ms={percentile(latencies, 0.99):.2f} floor_ms={floor:.2f} ratio={median / floor:.1f}")


if __name__ == "__main__":
    main()
