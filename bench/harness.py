"""Shared by the benchmarks: a throwaway Redis, a PostgreSQL database of their own, worker processes.

Nothing here touches the shared Redis (6379) or the shared test databases: each run starts a
redis-server on a free port and creates (then drops) a database named conductor_bench_<pid>.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "state_definitions"
PG_URL = os.environ.get(
    "CONDUCTOR_BENCH_POSTGRES_URL", os.environ.get("CONDUCTOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
)
TABLES = [
    "freezes",
    "source_polls",
    "store_states",
    "api_tokens",
    "audit_log",
    "audit_chain",
    "approvals",
    "outbox",
    "timers",
    "signals",
    "evaluations",
    "inbox",
    "releases",
    "tracks",
    "definitions",
]
REPO = "acme/music-android"
TRACK = "music-android"

sys.path.insert(0, str(ROOT))


def quiet_logs() -> None:
    """Benchmarks print figures, not log lines."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values_ms: list[float]) -> str:
    return (
        f"n={len(values_ms)} median={statistics.median(values_ms):.2f} ms p90={percentile(values_ms, 0.9):.2f} ms "
        f"p99={percentile(values_ms, 0.99):.2f} ms max={max(values_ms):.2f} ms"
    )


@contextmanager
def throwaway_redis():
    """A redis-server of our own on a free port; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="conductor-bench-redis-") as d:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait(10)


@contextmanager
def bench_database(suffix: str = ""):
    """A migrated PostgreSQL database of this run's own; dropped afterwards. Yields its URL."""
    import sqlalchemy as sa

    from conductor.store.db import upgrade

    name = f"conductor_bench_{os.getpid()}{suffix}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def truncate(db) -> None:
    from sqlalchemy import text

    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


def conductor_for(url: str):
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.store.db import Database

    return Conductor(Database(url), DefinitionCatalog(DEFINITIONS))


def start_releases(c, versions: list[str], *, cut: bool = False, sha: str = "c0ffee1") -> list[int]:
    """Releases on the music-android track (created if needed); with cut, each is on its release branch."""
    from conductor.service.inbox import process_events, store_event

    c.ensure_track(TRACK, "mobile_weekly", repository=REPO)
    ids = [c.start_release(TRACK, v) for v in versions]
    if cut:
        for v in versions:
            process_events(c, [store_event(c, branch_created(v, sha)).event_id])
    return ids


def branch_created(version: str, sha: str):
    from conductor.sources.events import InboundEvent

    return InboundEvent(
        source="generic",
        delivery_id=f"cut-{version}",
        kind="branch_created",
        raw_type="create",
        repository=REPO,
        branch=f"release/{version}",
        sha=sha,
    )


def signal_event(version: str, delivery: str, name: str, value: float, samples: int | None = None, sha: str = "c0ffee1"):
    """A generic signal event (the bulk of real traffic: CI results and ring metrics)."""
    from conductor.sources.events import InboundEvent, SignalIn

    return InboundEvent(
        source="generic",
        delivery_id=delivery,
        kind="signal",
        raw_type="signal",
        repository=REPO,
        branch=f"release/{version}",
        sha=sha,
        signals=[SignalIn(name=name, value=value, samples=samples)],
    )


def bulk_store(c, events) -> list[int]:
    """Insert events into the inbox in one transaction (what store_event does, without a round trip each)."""
    from conductor.store.models import InboxEvent

    now = c.now()
    rows = [
        InboxEvent(
            source=e.source,
            delivery_id=e.delivery_id,
            kind=e.kind,
            payload=e.model_dump(mode="json"),
            status="pending",
            attempts=0,
            received_at=now,
        )
        for e in events
    ]
    with c.db.transaction() as s:
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


class Worker:
    """`celery -A workers worker` (or beat) as a subprocess in its own session."""

    def __init__(self, name: str, env: dict[str, str], concurrency: int = 1, pool: str = "prefork", extra: list[str] | None = None):
        self.log = tempfile.NamedTemporaryFile(prefix=f"conductor-bench-{name}-", suffix=".log", delete=False)
        args = [
            "worker",
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "-P",
            pool,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            *(extra or []),
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", *args],
            env=env,
            cwd=str(ROOT),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        return [self.proc.pid, *map(int, children)]

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the busiest process of this worker."""
        peaks = []
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        return max(peaks, default=0.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()
        os.unlink(self.log.name)


def worker_env(db_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env.update(
        CONDUCTOR_DATABASE_URL=db_url,
        CONDUCTOR_BROKER_URL=broker_url,
        CONDUCTOR_DEFINITIONS_DIR=str(DEFINITIONS),
        CONDUCTOR_LOG_FORMAT="json",
        CONDUCTOR_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def load_note() -> str:
    """The machine's load while measuring: figures from a busy machine are not comparable."""
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
    except OSError:
        return ""
