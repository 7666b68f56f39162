"""Fixtures for tests against real Celery worker processes, a throwaway Redis and PostgreSQL.

Each module gets its own redis-server (a free port, a temp dir, nothing on disk) and its own
PostgreSQL database, so tests may FLUSHALL, kill and restart freely without touching the shared
services. Worker processes run in their own session and are killed at teardown, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEFINITIONS = ROOT / "state_definitions"
PG_URL = os.environ.get("CONDUCTOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
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


def service_unavailable(config, what: str, how: str) -> None:
    """tests/conftest.py's service_unavailable (skip locally, fail under CI=true), found among the loaded conftests."""
    root = str(ROOT / "tests" / "conftest.py")
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == root:
            plugin.service_unavailable(what, how)
            return
    pytest.skip(f"{what} not reachable; {how}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server of the test's own; `flushall()` and `restart()` touch nobody else."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
                return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def flushall(self) -> None:
        self.client().flushall()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def throwaway_redis(tmp_path_factory, pytestconfig):
    if shutil.which("redis-server") is None:
        service_unavailable(pytestconfig, "redis-server binary", "install Redis 7 so tests can start a throwaway server")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker_pg(pytestconfig):
    """A migrated database of this module's own (unique name: parallel runs never share it)."""
    import sqlalchemy as sa

    from conductor.store.db import upgrade

    name = f"conductor_wk_{uuid.uuid4().hex[:10]}"
    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        service_unavailable(pytestconfig, "PostgreSQL", f"start it or set CONDUCTOR_TEST_POSTGRES_URL ({exc.__class__.__name__})")
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class WorkerProcess:
    """`celery -A workers worker|beat` in its own session; killed for sure at teardown."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", *args],
            env=env,
            cwd=str(ROOT),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """Pool processes of a prefork worker."""
        try:
            return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            return []

    def kill9(self) -> None:
        """kill -9 of the whole worker: main process and pool, no goodbye to the broker."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        self.kill9()
        self.log.close()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def unfinished(db) -> dict[str, int]:
    """Events and actions not finished yet."""
    from sqlalchemy import func, select

    from conductor.store.statements import INBOX, OUTBOX

    with db.reading() as conn:
        events = conn.scalar(select(func.count()).select_from(INBOX).where(INBOX.c.status == "pending"))
        actions = conn.scalar(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.status.in_(("pending", "sending"))))
    return {"events": events or 0, "actions": actions or 0}


class Stack:
    """The database, the broker and worker processes of one test, plus helpers to drive and inspect them."""

    def __init__(self, db_url: str, redis: RedisServer, tmp: Path):
        from conductor.dispatch.celery import CeleryDispatcher
        from conductor.domain.loader import DefinitionCatalog
        from conductor.facade import Conductor
        from conductor.store.db import Database

        self.db_url, self.redis, self.tmp = db_url, redis, tmp
        self.db = Database(db_url)
        self.conductor = Conductor(self.db, DefinitionCatalog(DEFINITIONS))
        self.dispatcher = CeleryDispatcher(redis.url)
        self.processes: list[WorkerProcess] = []
        self.env = {
            **os.environ,
            "CONDUCTOR_DATABASE_URL": db_url,
            "CONDUCTOR_BROKER_URL": redis.url,
            "CONDUCTOR_DEFINITIONS_DIR": str(DEFINITIONS),
            "CONDUCTOR_LOG_FORMAT": "json",
            "CONDUCTOR_LOG_LEVEL": "WARNING",
            "CONDUCTOR_TICK_INTERVAL_S": "1",
            "CONDUCTOR_SWEEP_INTERVAL_S": "1",
            "CONDUCTOR_SWEEP_GRACE_S": "2",
            "CONDUCTOR_BROKER_VISIBILITY_TIMEOUT_S": "30",
            "TMPDIR": str(tmp),  # beat's schedule file goes here
            "PYTHONUNBUFFERED": "1",
        }

    def quiet(self, timeout: float = 30.0) -> None:
        """Wait until running workers have nothing queued or unfinished (a previous test's tail)."""
        deadline = time.monotonic() + timeout
        client = self.redis.client()
        while time.monotonic() < deadline:
            if client.llen("conductor") == 0 and unfinished(self.db) == {"events": 0, "actions": 0}:
                time.sleep(0.3)  # a task taken off the queue may still be committing
                return
            time.sleep(0.1)

    def reset(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        if self.processes:
            self.quiet()
        for attempt in range(5):
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
                break
            except OperationalError:  # a worker's last write raced the TRUNCATE (deadlock): again
                if attempt == 4:
                    raise
                time.sleep(0.5)
        self.redis.flushall()

    def worker(self, name: str, concurrency: int = 1, pool: str = "prefork") -> WorkerProcess:
        p = WorkerProcess(
            [
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
            ],
            self.env,
            self.tmp / f"{name}.log",
        )
        self.processes.append(p)
        return p

    def beat(self) -> WorkerProcess:
        p = WorkerProcess(["beat", "--loglevel", "WARNING"], self.env, self.tmp / "beat.log")
        self.processes.append(p)
        return p

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.tail()}" for p in self.processes)

    def stop_all(self) -> None:
        for p in self.processes:
            p.stop(timeout=5)
        self.processes.clear()

    def close(self) -> None:
        self.stop_all()
        self.db.dispose()


@pytest.fixture(scope="module")
def stack(worker_pg, throwaway_redis, tmp_path_factory):
    s = Stack(worker_pg, throwaway_redis, tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.close()
