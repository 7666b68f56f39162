"""Game day: a compressed-clock night proving the robot keeps its promises under faults.

    python bench/gameday.py            # the full night: 20 releases, 4 tracks, every fault (~3-4 min)
    python bench/gameday.py --quick    # the short one in `make test`: 6 releases, every fault once (~1.5 min)
    python bench/gameday.py --keep     # keep the logs and the temp dir for a post-mortem

It ends with one line: lost=0 doubled=0 wrong_advances=0 halted_on_first_bad=N/N plus figures.

THE WORLD (every part real, only the vendors are fakes)
- PostgreSQL: a throwaway cluster of the bench's own (initdb + pg_ctl in a temp dir, run as the
  postgres user when the bench runs as root), so it can be restarted; Redis: a redis-server of the
  bench's own on a free port (never the shared 6379 or 5432).
- The API: `python -m conductor.cli api` (uvicorn, conductor.api.create_app) in a subprocess; every
  CI and crash report reaches it as a Standard Webhooks signed POST /webhooks/generic. The bench is
  the sender: it retries (same webhook-id) what was not answered 202, as senders do.
- 2 Celery worker processes (`celery -A workers worker -c 1`) and `celery -A workers beat` (tick,
  sweepers, relay, source polls and store sync every 1-5 s).
- The pipeline `gameday` (written to the bench's temp definitions dir): branch -> beta ->
  rollout_5 -> rollout_25 -> rollout_100 -> released (halted, cancelled). branch -> beta on
  build_green and tests_pass_rate (from CI webhooks); every later transition on crash_free_sessions
  (pass >= 99.5 with 1000 samples, fail < 99.0); the rollout stages halt on a failing gate.
  `gameday_pulled` is the same pipeline with longer soaks, for tracks whose crash-free rate is
  pulled from Sentry: a poll at most every 30 s (the product's floor) must see a drop before the
  release is through its three rollout stages of 18 s.
- Time: the processes run on the system clock (conductor.clock.system_clock, as deployed); the
  night is compressed by the definitions: soaks of 5-18 s where a real train has hours. Nothing in
  the product is patched; shifting the clock of other processes (libfaketime) would also skew
  Redis, PostgreSQL and Celery timeouts, which are part of what is under test.
- 4 tracks (20 releases in the full night, 6 in --quick):
    alpha   Play (a contract fake of the Play Developer API, tests/fakes/play.py), crash-free by webhook
    bravo   Play, crash-free pulled from its own Sentry fake (tests/fakes/sentry.py, set_sources)
    charlie no store (store actions are skipped, visibly), crash-free by webhook
    delta   no store, crash-free pulled from its own Sentry fake
  A Play app has one staged rollout at a time: on the Play tracks CI reports the next release's
  build only when the previous one is released or halted (a train); elsewhere releases overlap.
- Bad releases: their crash-free rate drops (97.5 %) when they enter a chosen rollout stage: a
  webhook (alpha, charlie) or the Sentry fake's answer (bravo, delta). Each must halt at the first
  bad value the robot records, in the stage it was in, and never move after it.

THE FAULTS (on a schedule, seconds after the start; --quick runs each once)
- kill -9 of a worker (main process and pool, no goodbye to the broker), restarted 2 s later;
- a Redis restart (kill -9, 3 s down, started again empty on the same port);
- a PostgreSQL restart (pg_ctl restart -m immediate: a crash and recovery of the bench's cluster);
- a store outage: the Play fake answers 503 with Retry-After: 10 to every androidpublisher call
  for 15-20 s (the token endpoint stays up);
- duplicate webhooks: a quarter of the deliveries are sent twice at once (racing), some a third
  time 5-15 s later (same webhook-id, same body);
- out-of-order webhooks: good releases get a bad crash-free reading measured 10 minutes before the
  one stored (occurred_at older than it), halted ones a good reading from before their drop.

THE MEASURES (from the database and the fakes' recorded requests, after the work has drained)
- lost: webhooks answered 202 (accepted or duplicate) whose inbox row is not processed at the end
  (pending, or failed); plus actions never finished (outbox pending or sending) as stuck_actions.
- doubled: anything done twice: an event's signal stored twice (signals per event and name),
  a transition or halt audited twice for the same stage change, an outbox action queued twice for
  the same step, a Play commit repeating a state already committed for that build on that track.
- wrong_advances: a transition whose gates did not pass on what had been recorded when it was
  taken (the newest crash-free observation failing, too few samples, a soak not over, CI not
  green), any move of a bad release after its first bad value other than its halt, any move of a
  halted release, and any Play commit that rolled a halted build out again.
- halted_on_first_bad: bad releases whose halt was the first judgement after their first bad
  value, in the stage it was recorded in / bad releases.
- good_released: good releases that reached `released` / good releases (the other known waiting
  points, a pause or an open question, would be named in the report); store_wrong: Play releases
  whose last committed state is not what their final stage says.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import free_port, quiet_logs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_NAME = "gameday"
ACCOUNT = "release-robot@acme.iam.gserviceaccount.com"
SENTRY_TOKEN = "sntrys_gameday_token"
ROLLOUTS = ("rollout_5", "rollout_25", "rollout_100")
TERMINAL = ("released", "halted", "cancelled")
PASS, FAIL, MIN_SAMPLES = 99.5, 99.0, 1000
GOOD, BAD = 99.8, 97.5

PIPELINE = """\
# The game day's pipeline: a release train's stages with soaks of seconds instead of hours.
name: {name}
timezone: UTC
signals:
  build_green: {{type: boolean}}
  tests_pass_rate: {{type: ratio}}
  crash_free_sessions: {{type: percent}}
gates:
  build_green: {{kind: threshold, signal: build_green, better: higher, pass: 1, fail: 0}}
  tests_green: {{kind: threshold, signal: tests_pass_rate, better: higher, pass: 1.0, fail: 0.98}}
  crash_free: {{kind: threshold, signal: crash_free_sessions, better: higher, pass: {PASS}, fail: {FAIL}, min_samples: {MIN_SAMPLES}}}
stages:
  branch: {{}}
  beta: {{}}
  rollout_5: {{kind: rollout, percent: 5}}
  rollout_25: {{kind: rollout, percent: 25}}
  rollout_100: {{kind: rollout, percent: 100}}
  released: {{kind: final}}
  halted: {{kind: halted}}
  cancelled: {{kind: cancelled}}
transitions:
  - {{from: branch, to: beta, gates: [build_green, tests_green], actions: [{{action: distribute, ring: beta}}]}}
  - {{from: beta, to: rollout_5, min_soak: {beta}s, gates: [build_green, crash_free], actions: [{{action: submit_to_store}}]}}
  - {{from: rollout_5, to: rollout_25, min_soak: {soak}s, gates: [crash_free], on_fail: halt, actions: [{{action: set_rollout}}]}}
  - {{from: rollout_25, to: rollout_100, min_soak: {soak}s, gates: [crash_free], on_fail: halt, actions: [{{action: set_rollout}}]}}
  - {{from: rollout_100, to: released, min_soak: {soak}s, gates: [crash_free], on_fail: halt}}
"""
SOAKS = {"gameday": (5, 8), "gameday_pulled": (5, 18)}  # (beta, each rollout stage), seconds
MIN_SOAK = {
    name: {"branch": 0, "beta": beta, "rollout_5": soak, "rollout_25": soak, "rollout_100": soak} for name, (beta, soak) in SOAKS.items()
}


def log(t0: float, what: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {what}", flush=True)


# ---------------------------------------------------------------------------- servers of our own


class Proc:
    """A subprocess in its own session (kill -9 takes its children too), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path, cwd: Path = ROOT):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=str(self.cwd), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        self.kill9()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, where pg_config says, or Debian's /usr/lib/postgresql/N/bin."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb") or "").parent
    if shutil.which("pg_config"):
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0
    )
    return found[-1].parent if found else None


def missing_tools() -> list[str]:
    """What the game day needs on this machine and does not find (empty: it can run)."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (Redis 7)")
    if postgres_bindir() is None:
        missing.append("initdb and pg_ctl (PostgreSQL server binaries)")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a postgres user (as root, the bench runs its cluster as postgres)")
    return missing


class Postgres:
    """A PostgreSQL cluster of our own in `directory` (initdb + pg_ctl), restartable at will."""

    def __init__(self, directory: Path):
        bindir = postgres_bindir()
        if bindir is None:
            raise SystemExit("initdb not found: install PostgreSQL (the game day restarts a cluster of its own)")
        self.bin, self.dir, self.port = bindir, directory, free_port()
        self.data = directory / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(directory, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        p = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{tool} failed: {p.stdout}\n{p.stderr}")

    def _options(self) -> str:
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-o", self._options(), "-w", "-t", "60", "start")

    def restart(self) -> None:
        """A crash and recovery: every connection is cut, the server comes back on the same port."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-m", "immediate", "-o", self._options(), "-w",
                  "-t", "60", "restart")  # fmt: skip

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Exception:
            pass

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


class Redis:
    def __init__(self, directory: Path):
        self.dir, self.port = directory, free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=2)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ---------------------------------------------------------------------------- the vendors' fakes


def play_world(server_cls: Any, packages: dict[str, list[str]]) -> tuple[Any, Any, str]:
    """One fake server for Google Play (and its OAuth token endpoint): an app per package."""
    from tests.fakes.google_oauth import GoogleOAuthFake, new_rsa_key

    server = server_cls().start()
    oauth = GoogleOAuthFake(server)
    fake = _locked_play_class()(server, oauth)
    fake.committed_at = {}
    for package, builds in packages.items():
        fake.app(package, users=(ACCOUNT,), bundles=("100", *builds))
        fake.seed(package, "production", [{"name": "1.0", "versionCodes": ["100"], "status": "completed"}])
    key = json.dumps(oauth.service_account(new_rsa_key(), ACCOUNT))
    return server, fake, key


def _fault_server() -> Any:
    from tests.fakes.server import FakeServer, Reply

    class OutageServer(FakeServer):
        """A FakeServer that can answer 503 + Retry-After to a path prefix for a while (a store outage)."""

        outage_until = 0.0
        outage_prefix = "/androidpublisher/"
        refused = 0

        def _answer(self, req):  # type: ignore[no-untyped-def]
            if req.path.startswith(self.outage_prefix) and time.monotonic() < self.outage_until:
                with self._lock:
                    self.requests.append(req)
                    self.refused += 1
                return Reply(503, {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}},
                             headers={"Retry-After": "10"})  # fmt: skip
            return super()._answer(req)

    return OutageServer


def _locked_play_class() -> Any:
    from tests.fakes.play import PlayFake

    class Locked(PlayFake):
        """Play answering one request at a time (its edits are then atomic, as Play's are), with the
        time of each commit."""

        committed_at: dict[str, datetime]

        _serial = threading.Lock()

        def _serve(self, req):  # type: ignore[no-untyped-def]
            with self._serial:
                return super()._serve(req)

        def _commit(self, req, method, params):  # type: ignore[no-untyped-def]
            reply = super()._commit(req, method, params)
            if reply.status == 200:
                self.committed_at[params["editId"]] = datetime.now(UTC)
            return reply

    return Locked


def sentry_world() -> Any:
    from tests.fakes.sentry import FakeSentry
    from tests.fakes.server import FakeServer

    class LiveSentry(FakeSentry):
        """Sentry whose answer ends now (the fake's default end is a fixed date)."""

        @property  # type: ignore[override]
        def end(self) -> datetime:
            return datetime.now(UTC).replace(microsecond=0)

        @end.setter
        def end(self, value: datetime) -> None:
            pass

    server = FakeServer().start()
    return LiveSentry(server, token=SENTRY_TOKEN)


# ---------------------------------------------------------------------------- the plan of the night


@dataclass
class TrackPlan:
    name: str
    definition: str
    play: str | None  # package
    pulled: bool
    sentry: Any = None

    @property
    def repo(self) -> str:
        return f"acme/{self.name}"


@dataclass
class ReleasePlan:
    track: TrackPlan
    version: str
    build: str
    start_at: float
    bad_stage: str | None
    stale: bool
    rid: int | None = None
    fed: set[str] = field(default_factory=set)
    bad_sent_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.track.name, self.version)

    @property
    def sentry_name(self) -> str:
        return f"{self.track.name}@{self.version}"


def plan_night(quick: bool, seed: int) -> tuple[list[TrackPlan], list[ReleasePlan]]:
    tracks = [
        TrackPlan("alpha", "gameday", "com.acme.alpha", pulled=False),
        TrackPlan("bravo", "gameday_pulled", "com.acme.bravo", pulled=True),
        TrackPlan("charlie", "gameday", None, pulled=False),
        TrackPlan("delta", "gameday_pulled", None, pulled=True),
    ]
    by = {t.name: t for t in tracks}
    # (track, how many, bad stages by index, first start, spacing)
    if quick:
        layout = [("alpha", 2, {0: "rollout_25"}), ("bravo", 1, {}), ("charlie", 2, {1: "rollout_5"}), ("delta", 1, {0: "rollout_5"})]
        spacing = {"alpha": 0.5, "bravo": 0.5, "charlie": 4.0, "delta": 0.0}
    else:
        layout = [
            ("alpha", 5, {1: "rollout_25", 3: "rollout_5"}),
            ("bravo", 3, {1: "rollout_5"}),
            ("charlie", 6, {0: "rollout_100", 2: "rollout_5", 4: "rollout_25"}),
            ("delta", 6, {1: "rollout_5", 4: "rollout_5"}),
        ]
        spacing = {"alpha": 0.5, "bravo": 0.5, "charlie": 9.0, "delta": 10.0}  # a Play track's train goes in version order
    rng = random.Random(seed)
    releases = []
    for name, n, bad in layout:
        t = by[name]
        for i in range(n):
            releases.append(
                ReleasePlan(
                    t,
                    f"3.{i}.0",
                    str(300 + i),
                    start_at=1.0 + i * spacing[name] + rng.uniform(0, 0.4),
                    bad_stage=bad.get(i),
                    stale=(i % 2 == 0),
                )  # fmt: skip
            )
    return tracks, releases


# ---------------------------------------------------------------------------- the sender


class Sender:
    """Signs and posts generic events like a CI or crash reporter would: retried until answered 202."""

    def __init__(self, url: str, secret: str, rng: random.Random, dup_rate: float, t0: float):
        import httpx
        from standardwebhooks.webhooks import Webhook

        self.url, self.hook, self.rng, self.dup_rate, self.t0 = url, Webhook(secret), rng, dup_rate, t0
        self.client = httpx.Client(timeout=15.0)
        self.pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="sender")
        self.lock = threading.Lock()
        self.accepted: dict[str, int] = {}  # webhook-id -> event id (the first 202)
        self.answers: Counter[str] = Counter()
        self.posts = 0
        self.duplicates_sent = 0
        self.futures: list[Any] = []
        self.n = 0

    def send(self, body: dict[str, Any], *, dup: bool | None = None) -> str:
        with self.lock:
            self.n += 1
            msg_id = f"msg_gameday_{self.n:05d}"
        raw = json.dumps({**body, "id": msg_id})
        twice = self.rng.random() < self.dup_rate if dup is None else dup
        copies = 2 if twice else 1
        for _ in range(copies):
            self.futures.append(self.pool.submit(self._deliver, msg_id, raw))
        if twice:
            self.duplicates_sent += 1
            if self.rng.random() < 0.5:  # and once more, later (a sender that never saw our 202)
                delay = self.rng.uniform(5, 15)
                self.futures.append(self.pool.submit(self._later, delay, msg_id, raw))
        return msg_id

    def _later(self, delay: float, msg_id: str, raw: str) -> None:
        time.sleep(delay)
        self._deliver(msg_id, raw)

    def _deliver(self, msg_id: str, raw: str) -> None:
        import httpx

        deadline = time.monotonic() + 120
        wait = 0.3
        while True:
            now = datetime.now(UTC)
            headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": self.hook.sign(msg_id, now, raw), "content-type": "application/json"}  # fmt: skip
            try:
                r = self.client.post(self.url, content=raw, headers=headers)
                status = str(r.status_code)
            except httpx.HTTPError as exc:
                r, status = None, exc.__class__.__name__
            with self.lock:
                self.posts += 1
                self.answers[status] += 1
                if r is not None and r.status_code == 202:
                    self.accepted.setdefault(msg_id, r.json()["event_id"])
                    return
            if r is not None and r.status_code in (400, 401, 404, 422):
                raise RuntimeError(f"webhook {msg_id} refused: {r.status_code} {r.text}")
            if time.monotonic() > deadline:
                return  # never accepted: not counted as accepted, so not as lost either
            time.sleep(wait)
            wait = min(wait * 2, 3.0)

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for f in list(self.futures):
            f.result(timeout=max(0.1, deadline - time.monotonic()))


def ci_events(p: ReleasePlan) -> list[dict[str, Any]]:
    base = {"repository": p.track.repo, "branch": f"release/{p.version}", "sha": f"{abs(hash(p.key)) % 16**7:07x}"}
    return [
        {"type": "build.finished", **base, "outcome": "success", "build": p.build},
        {"type": "tests.finished", **base, "outcome": "success", "signals": [{"name": "tests_pass_rate", "value": 1.0, "samples": 900}]},
    ]


def crash_event(p: ReleasePlan, value: float, *, age: timedelta = timedelta(0)) -> dict[str, Any]:
    samples = 20_000
    return {
        "type": "signal", "repository": p.track.repo, "branch": f"release/{p.version}",
        "signals": [{"name": "crash_free_sessions", "value": value, "samples": samples, "events": round(samples * value / 100)}],
        "occurred_at": (datetime.now(UTC) - age).isoformat(),
    }  # fmt: skip


# ---------------------------------------------------------------------------- the night


class GameDay:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = args.quick
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="conductor-gameday-"))
        self.tmp.chmod(0o711)  # the postgres user reaches its data directory inside
        self.logdir = self.tmp / "logs"
        self.logdir.mkdir()
        self.faults: list[str] = []
        self.procs: dict[str, Proc] = {}
        self.pg: Postgres | None = None
        self.redis: Redis | None = None
        self.servers: list[Any] = []
        self.halt_commits_after: list[str] = []

    def say(self, what: str) -> None:
        log(self.t0, what)

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        import sqlalchemy as sa

        from conductor.store.db import upgrade

        self.tracks, self.releases = plan_night(self.quick, self.args.seed)
        pgdir, redisdir = self.tmp / "pg", self.tmp / "redis"
        pgdir.mkdir()
        redisdir.mkdir()
        self.pg = Postgres(pgdir)
        admin = sa.create_engine(self.pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE conductor"))
        admin.dispose()
        self.db_url = self.pg.url("conductor")
        upgrade(self.db_url)
        self.redis = Redis(redisdir)
        defs = self.tmp / "definitions"
        defs.mkdir()
        for name, (beta, soak) in SOAKS.items():
            text = PIPELINE.format(name=name, beta=beta, soak=soak, PASS=PASS, FAIL=FAIL, MIN_SAMPLES=MIN_SAMPLES)
            (defs / f"{name}.yaml").write_text(text)
        # The vendors.
        packages = {t.play: [p.build for p in self.releases if p.track is t] for t in self.tracks if t.play}
        self.play_server, self.play, play_key = play_world(_fault_server(), packages)
        self.servers.append(self.play_server)
        for t in self.tracks:
            if t.pulled:
                t.sentry = sentry_world()
                self.servers.append(t.sentry.server)
        self.secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        os.environ.update(PLAY_KEY=play_key, CONDUCTOR_PLAY_API_ENDPOINT=self.play_server.url, SENTRY_TOKEN=SENTRY_TOKEN)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
        self.env.update(
            CONDUCTOR_DATABASE_URL=self.db_url,
            CONDUCTOR_BROKER_URL=self.redis.url,
            CONDUCTOR_DEFINITIONS_DIR=str(defs),
            CONDUCTOR_WEBHOOK_SECRET=self.secret,
            CONDUCTOR_LOG_FORMAT="json",
            CONDUCTOR_LOG_LEVEL="WARNING",
            CONDUCTOR_TICK_INTERVAL_S="1",
            CONDUCTOR_SWEEP_INTERVAL_S="1",
            CONDUCTOR_SWEEP_GRACE_S="5",
            CONDUCTOR_SOURCE_POLL_TICK_S="1",
            CONDUCTOR_STORE_SYNC_INTERVAL_S="5",
            CONDUCTOR_BROKER_VISIBILITY_TIMEOUT_S="30",
            CONDUCTOR_ACTION_TIMEOUT_S="5",
            CONDUCTOR_PLAY_API_ENDPOINT=self.play_server.url,
            PLAY_KEY=play_key,
            SENTRY_TOKEN=SENTRY_TOKEN,
            TMPDIR=str(self.tmp),  # beat's schedule file
            PYTHONUNBUFFERED="1",
        )
        # Tracks, their store and sources: what an admin does once.
        from conductor.domain.loader import DefinitionCatalog
        from conductor.facade import Conductor
        from conductor.service import Actor
        from conductor.service.sources import set_sources
        from conductor.service.tracks import connect_store
        from conductor.store.db import Database

        self.c = Conductor(Database(self.db_url), DefinitionCatalog(defs))
        admin_actor = Actor(ADMIN_NAME, "admin")
        for t in self.tracks:
            self.c.ensure_track(t.name, t.definition, repository=t.repo)
            if t.play:
                store = {"kind": "play", "package": t.play, "credentials": {"env": "PLAY_KEY"}, "rings": {"beta": "beta"}}
                connect_store(self.c, t.name, admin_actor, store)
            if t.pulled:
                set_sources(self.c, t.name, admin_actor, {
                    "release_name": f"{t.name}@{{version}}",
                    "sources": [{"kind": "sentry", "base_url": t.sentry.server.url, "organization": "acme", "project": 42,
                                 "token": {"env": "SENTRY_TOKEN"}, "interval": "30s",
                                 "signals": {"crash_free_sessions": "crash_free_sessions"}}],
                })  # fmt: skip
        # The processes.
        self.api_port = free_port()
        py = sys.executable
        self.procs["api"] = Proc("api", [py, "-m", "conductor.cli", "api", "--port", str(self.api_port)], self.env, self.logdir)
        for name in ("w1", "w2"):
            self.procs[name] = Proc(name, [py, "-m", "celery", "-A", "workers", "worker", "-n", f"{name}@%h", "-c", "1", "-P", "prefork",
                                           "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
                                    self.env, self.logdir)  # fmt: skip
        self.procs["beat"] = Proc("beat", [py, "-m", "celery", "-A", "workers", "beat", "--loglevel", "WARNING"], self.env, self.logdir)
        self.wait_api()
        self.sender = Sender(f"http://127.0.0.1:{self.api_port}/webhooks/generic", self.secret, self.rng, 0.25, self.t0)

    def wait_api(self) -> None:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not self.procs["api"].alive():
                raise RuntimeError(f"the API died:\n{self.procs['api'].log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("the API did not come up")

    # ------------------------------------------------------------------ faults

    def schedule(self) -> list[tuple[float, str]]:
        if self.quick:
            return [(8, "kill_worker:w1"), (14, "store_outage:15"), (30, "redis_restart"), (42, "postgres_restart")]
        return [
            (15, "kill_worker:w1"),
            (30, "store_outage:20"),
            (50, "redis_restart"),
            (68, "postgres_restart"),
            (85, "kill_worker:w2"),
            (100, "store_outage:15"),
            (115, "redis_restart"),
            (128, "postgres_restart"),
            (140, "kill_worker:w1"),
        ]

    def run_faults(self, stop: threading.Event) -> None:
        for at, fault in self.schedule():
            while time.monotonic() - self.t0 < at:
                if stop.wait(0.2):
                    return
            try:
                self.inject(fault)
            except Exception as exc:  # a fault that could not be injected is reported, never hidden
                self.faults.append(f"{fault}:FAILED({exc})")
                self.say(f"fault {fault} could not be injected: {exc}")

    def inject(self, fault: str) -> None:
        name, _, arg = fault.partition(":")
        self.say(f"FAULT {fault}")
        if name == "kill_worker":
            self.procs[arg].kill9()
            time.sleep(2)
            self.procs[arg].start()
        elif name == "store_outage":
            self.play_server.outage_until = time.monotonic() + float(arg)
        elif name == "redis_restart":
            assert self.redis is not None
            self.redis.kill()
            time.sleep(3)
            self.redis.start()
        elif name == "postgres_restart":
            assert self.pg is not None
            self.pg.restart()
        self.faults.append(fault)

    # ------------------------------------------------------------------ the director

    def read_stages(self) -> dict[tuple[str, str], tuple[int, str]]:
        from sqlalchemy import text

        for attempt in range(40):
            try:
                with self.c.db.engine.connect() as conn:
                    rows = conn.execute(text("SELECT id, track_id, version, stage FROM releases")).all()
                return {(r.track_id, r.version): (r.id, r.stage) for r in rows}
            except Exception:
                if attempt == 39:
                    raise
                time.sleep(0.5)
        return {}

    def start_release(self, p: ReleasePlan) -> None:
        for attempt in range(40):
            try:
                p.rid = self.c.start_release(p.track.name, p.version)
                return
            except Exception:
                if attempt == 39:
                    raise
                time.sleep(0.5)

    def send_ci(self, p: ReleasePlan) -> None:
        """CI builds and tests the release branch; a pulled track's crash reporter knows the release
        from then on (a poll before it did would find nothing and back off)."""
        if p.track.pulled:
            self.feed(p, GOOD)
        for e in ci_events(p):
            self.sender.send(e)

    def feed(self, p: ReleasePlan, value: float) -> None:
        if p.track.pulled:
            from tests.fakes.sentry import ReleaseHealth

            p.track.sentry.releases[p.sentry_name] = ReleaseHealth(sessions=20_000, crash_free_sessions=value / 100, users=5_000,
                                                                   crash_free_users=value / 100)  # fmt: skip
        else:
            self.sender.send(crash_event(p, value))

    def slot_free(self, p: ReleasePlan, stages: dict[tuple[str, str], tuple[int, str]]) -> bool:
        """On a Play track, one release past its branch at a time (Play has one staged rollout): the
        earlier ones are released or halted. Their store actions may still be waiting out an
        outage: Conductor sends one app's store actions in order, so the next release's submit
        waits for them (conductor/service/outbox.py)."""
        if not p.track.play:
            return True
        earlier = [q for q in self.releases if q.track is p.track and q.start_at < p.start_at]
        return all(q.key in stages and stages[q.key][1] in TERMINAL for q in earlier)

    def direct(self, deadline: float) -> bool:
        """Feed the releases as the night goes; True when every release reached a terminal stage."""
        while time.monotonic() < deadline:
            now = time.monotonic() - self.t0
            stages = self.read_stages()
            for p in self.releases:
                if p.rid is None:
                    if now >= p.start_at:
                        self.start_release(p)
                    continue
                stage = stages.get(p.key, (0, "?"))[1]
                if stage in TERMINAL:
                    if stage == "halted" and p.stale and "stale_good" not in p.fed:
                        p.fed.add("stale_good")  # out of order: a good reading from before the drop
                        self.sender.send(crash_event(p, GOOD, age=timedelta(minutes=10)))
                    continue
                if stage == "branch" and "ci" not in p.fed and self.slot_free(p, stages):
                    p.fed.add("ci")
                    self.send_ci(p)
                elif stage == "beta" and "beta" not in p.fed:
                    p.fed.add("beta")
                    if not p.track.pulled:
                        self.feed(p, GOOD)
                elif stage in ROLLOUTS and stage not in p.fed:
                    p.fed.add(stage)
                    if p.bad_sent_at is not None:
                        continue  # moved on before the bad value was read (a pulled source): nothing new
                    if p.bad_stage == stage:
                        p.bad_sent_at = now
                        self.feed(p, BAD)
                        self.say(f"{p.track.name}/{p.version} goes bad in {stage}")
                    else:
                        if not p.track.pulled:
                            self.feed(p, GOOD)  # the ring's fresh numbers
                        if p.stale and stage == "rollout_25" and p.bad_stage is None:
                            # Out of order: a bad reading measured 10 minutes before the stored one.
                            self.sender.send(crash_event(p, BAD, age=timedelta(minutes=10)))
            if all(p.rid is not None and stages.get(p.key, (0, "?"))[1] in TERMINAL for p in self.releases):
                return True
            time.sleep(0.3)
        return False

    def drain(self, timeout: float) -> dict[str, int]:
        """Wait until nothing is pending: events, actions (a halt is retried until the store confirms)."""
        from sqlalchemy import text

        self.sender.drain(timeout)
        deadline = time.monotonic() + timeout
        left: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                with self.c.db.engine.connect() as conn:
                    left = {
                        "events": conn.scalar(text("SELECT count(*) FROM inbox WHERE status = 'pending'")) or 0,
                        "actions": conn.scalar(text("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")) or 0,
                    }
            except Exception:
                time.sleep(0.5)
                continue
            if left == {"events": 0, "actions": 0}:
                return left
            time.sleep(0.5)
        return left

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        stop = threading.Event()
        ok = False
        try:
            self.setup()
            self.say(f"world up: {len(self.releases)} releases on {len(self.tracks)} tracks; temp dir {self.tmp}")
            self.t0 = time.monotonic()  # the night starts now (fault times and plan times count from here)
            self.sender.t0 = self.t0
            faults = threading.Thread(target=self.run_faults, args=(stop,), daemon=True)
            faults.start()
            done = self.direct(self.t0 + (150 if self.quick else 330))
            self.say("every release released or halted" if done else "the night ran out of time")
            faults.join(timeout=120)
            stop.set()
            left = self.drain(120)
            seconds = time.monotonic() - self.t0
            report = self.measure(left, seconds)
            ok = report
        finally:
            stop.set()
            self.teardown(keep=self.args.keep or not ok)
        return 0 if ok else 1

    def teardown(self, keep: bool) -> None:
        for p in self.procs.values():
            p.stop()
        for s in self.servers:
            s.stop()
        if self.redis:
            self.redis.kill()
        if hasattr(self, "c"):
            self.c.db.dispose()
        if self.pg:
            self.pg.stop()
        if keep:
            print(f"logs and data kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ measures

    def measure(self, left: dict[str, int], seconds: float) -> bool:
        from sqlalchemy import text

        with self.c.db.engine.connect() as conn:
            q = lambda sql: conn.execute(text(sql)).all()  # noqa: E731
            releases = {r.id: r for r in q("SELECT id, track_id, version, stage, halted_from, paused, pause_reason, build FROM releases")}
            audit = q("SELECT id, release_id, at, kind, from_stage, to_stage, evaluation_id, event_id, actor FROM audit_log "
                      "WHERE release_id IS NOT NULL ORDER BY id")  # fmt: skip
            signals = q("SELECT id, release_id, name, value, samples, observed_at, recorded_at, stage, event_id, source FROM signals "
                        "ORDER BY id")  # fmt: skip
            evaluations = q("SELECT id, release_id, created_at, verdict, stage, trigger FROM evaluations ORDER BY id")
            inbox = {r.id: r for r in q("SELECT id, delivery_id, status, note FROM inbox")}
            outbox = q("SELECT id, release_id, action, params, status, attempts, idempotency_key, last_error FROM outbox ORDER BY id")
        problems: list[str] = []
        plans = {(p.track.name, p.version): p for p in self.releases}
        rid_plan = {r.id: plans[(r.track_id, r.version)] for r in releases.values()}

        # lost: accepted (202) but not processed.
        lost = 0
        for msg_id, event_id in self.sender.accepted.items():
            row = inbox.get(event_id)
            if row is None or row.status not in ("processed", "unmatched", "ignored"):
                lost += 1
                problems.append(f"LOST webhook {msg_id} -> event {event_id}: {row.status if row else 'no row'} {row.note if row else ''}")
        stuck = sum(1 for o in outbox if o.status in ("pending", "sending"))
        for o in outbox:
            if o.status in ("pending", "sending"):
                problems.append(f"STUCK action {o.id} {o.action} of release {o.release_id}: {o.status} after {o.attempts} attempts")

        # doubled: the same thing done twice.
        doubled = 0
        per_event = Counter((s.event_id, s.name) for s in signals if s.event_id is not None)
        for (event_id, name), n in per_event.items():
            if n > 1:
                doubled += n - 1
                problems.append(f"DOUBLED signal {name} of event {event_id} stored {n} times")
        moves = Counter((a.release_id, a.kind, a.from_stage, a.to_stage) for a in audit if a.kind in ("transitioned", "halted"))
        for key, n in moves.items():
            if n > 1:
                doubled += n - 1
                problems.append(f"DOUBLED {key[1]} {key[2]}->{key[3]} of release {key[0]} audited {n} times")
        store_actions = Counter((o.release_id, o.action, (o.params or {}).get("stage")) for o in outbox
                                if o.action in ("distribute", "submit_to_store", "set_rollout", "halt_rollout"))  # fmt: skip
        for key, n in store_actions.items():
            if n > 1:
                doubled += n - 1
                problems.append(f"DOUBLED action {key[1]} for stage {key[2]} of release {key[0]} queued {n} times")
        commits = []  # (package, track, build, status, fraction) in commit order
        commit_times = []
        for edit in self.play.commits:
            for body in edit.updates:
                for rel in body.get("releases", []):
                    for code in rel.get("versionCodes", []):
                        commits.append((edit.package, body.get("track"), str(code), rel.get("status"), rel.get("userFraction")))
                        commit_times.append(self.play.committed_at.get(edit.id))
        for key, n in Counter(commits).items():
            if n > 1:
                doubled += n - 1
                problems.append(f"DOUBLED Play commit {key} committed {n} times")

        # wrong advances, and where each bad release halted.
        wrong = 0
        sig_by_release: dict[int, list[Any]] = defaultdict(list)
        for s in signals:
            sig_by_release[s.release_id].append(s)
        evals_by_release: dict[int, list[Any]] = defaultdict(list)
        for e in evaluations:
            evals_by_release[e.release_id].append(e)
        defs = {t.name: t.definition for t in self.tracks}
        entered: dict[int, datetime] = {}
        first_bad: dict[int, Any] = {}
        for rid in releases:
            newest = None
            for s in sig_by_release[rid]:
                if s.name != "crash_free_sessions":
                    continue
                stale = newest is not None and s.observed_at < newest
                newest = s.observed_at if newest is None or s.observed_at > newest else newest
                if not stale and s.value is not None and s.value < FAIL and s.stage in ROLLOUTS and rid not in first_bad:
                    first_bad[rid] = s
        halted_at: dict[int, Any] = {}
        for a in audit:
            if a.kind == "release_started":
                entered[a.release_id] = a.at
            if a.kind not in ("transitioned", "halted", "resumed", "cancelled"):
                continue
            rid = a.release_id
            p = rid_plan[rid]
            if a.kind == "halted":
                halted_at.setdefault(rid, a)
            elif rid in halted_at:
                wrong += 1
                problems.append(f"WRONG move of halted {p.key}: {a.kind} {a.from_stage}->{a.to_stage}")
            if a.kind == "transitioned":
                why = self.gates_failing(defs[p.track.name], a, sig_by_release[rid], entered.get(rid))
                bad = first_bad.get(rid)
                if bad is not None and bad.recorded_at <= a.at:
                    why = why or f"after its first bad value ({bad.value} recorded in {bad.stage})"
                if why:
                    wrong += 1
                    problems.append(f"WRONG advance {p.key} {a.from_stage}->{a.to_stage} at {a.at:%H:%M:%S.%f}: {why}")
            entered[rid] = a.at
        # At the store: a build rolled out (not halted) after the robot halted its release.
        halt_time = {(p.track.play, p.build): _aware(halted_at[p.rid].at) for p in self.releases if p.track.play and p.rid in halted_at}
        for (package, track, code, status, fraction), at in zip(commits, commit_times, strict=True):
            halted = halt_time.get((package, code))
            if track == "production" and status != "halted" and halted is not None and at is not None and at > halted:
                wrong += 1
                problems.append(f"WRONG Play commit at {at:%H:%M:%S.%f}: build {code} of {package} rolled out ({status} {fraction}) "
                                f"after its release halted at {halted:%H:%M:%S.%f}")  # fmt: skip

        bad_plans = [p for p in self.releases if p.bad_stage is not None]
        halted_first = 0
        for p in bad_plans:
            r = releases[p.rid]
            bad = first_bad.get(p.rid)
            halt = halted_at.get(p.rid)
            if bad is None or halt is None or r.stage != "halted":
                problems.append(f"NOT HALTED bad {p.key}: stage {r.stage}, first bad value {bad}, halt {halt}")
                continue
            after = [e for e in evals_by_release[p.rid] if e.created_at >= bad.recorded_at]
            first_judgement = after[0] if after else None
            if (
                r.halted_from == bad.stage
                and halt.from_stage == bad.stage
                and first_judgement is not None
                and first_judgement.verdict == "halt"
                and halt.evaluation_id == first_judgement.id
            ):
                halted_first += 1
            else:
                problems.append(
                    f"LATE HALT of {p.key}: first bad value in {bad.stage} (signal {bad.id}), halted from {r.halted_from} "
                    f"(evaluation {halt.evaluation_id}, first judgement after the value: {first_judgement})"
                )
        good_plans = [p for p in self.releases if p.bad_stage is None]
        good_released = sum(1 for p in good_plans if releases[p.rid].stage == "released")
        for p in good_plans:
            r = releases[p.rid]
            if r.stage != "released":
                problems.append(f"GOOD {p.key} ended in {r.stage} (paused={r.paused} {r.pause_reason or ''})")

        # The store at the end: a released build serves everyone (or was superseded by a later
        # completed release); a halted one is halted there, or not served at all.
        store_wrong = 0
        for p in self.releases:
            if not p.track.play:
                continue
            r = releases[p.rid]
            app = self.play.apps[p.track.play]
            served = [x for x in app.tracks["production"] if p.build in x.get("versionCodes", [])]
            superseded = [x for x in app.previous.get("production", []) if p.build in x.get("versionCodes", [])]
            state = served[0] if served else (superseded[0] if superseded else None)
            if r.stage == "released":
                right = state is not None and state.get("status") == "completed"
            else:
                right = not served or served[0].get("status") == "halted"
            if not right:
                store_wrong += 1
                problems.append(f"STORE {p.key} is {r.stage} but Play production has build {p.build} as {state}")
        violations = list(self.play_server.violations) + [v for t in self.tracks if t.sentry for v in t.sentry.server.violations]
        for v in violations:
            problems.append(f"CONTRACT violation at a fake: {v}")

        # Report.
        counts = Counter(r.status for r in inbox.values())
        actions = Counter((o.action, o.status) for o in outbox)
        print()
        print(f"releases: {len(releases)} ({len(bad_plans)} bad); stages at the end: {dict(Counter(r.stage for r in releases.values()))}")
        print(f"webhooks: {self.sender.n} deliveries, {self.sender.posts} POSTs ({dict(self.sender.answers)}), "
              f"{len(self.sender.accepted)} accepted, {self.sender.duplicates_sent} sent twice or more")  # fmt: skip
        print(f"inbox: {dict(counts)}; outbox: {dict(sorted(actions.items()))}")
        print(f"Play: {len(self.play.commits)} commits, {self.play_server.refused} requests refused during outages; "
              f"polls of Sentry: {sum(len(t.sentry.server.requests) for t in self.tracks if t.sentry)}")  # fmt: skip
        print(f"faults: {', '.join(self.faults)}")
        print(f"left pending after the drain: {left}")
        for o in outbox:
            if o.status == "failed":  # visible on the release; not a broken promise by itself
                print(f"  failed action {o.id} {o.action} of {rid_plan[o.release_id].key}: {o.last_error}")
        for line in problems:
            print("  " + line)
        print(
            f"lost={lost} doubled={doubled} wrong_advances={wrong} halted_on_first_bad={halted_first}/{len(bad_plans)} "
            f"good_released={good_released}/{len(good_plans)} store_wrong={store_wrong} stuck_actions={stuck} "
            f"contract_violations={len(violations)} events={len(inbox)} faults={len(self.faults)} seconds={seconds:.0f}"
        )
        return (
            (lost, doubled, wrong, store_wrong, stuck, len(violations)) == (0, 0, 0, 0, 0, 0)
            and halted_first == len(bad_plans)
            and (good_released == len(good_plans))
        )

    def gates_failing(self, definition: str, a: Any, sigs: list[Any], entered: datetime | None) -> str | None:
        """Why the gates of the transition audited in `a` did not pass on what was recorded by then (None: they did)."""
        known = [s for s in sigs if s.recorded_at <= a.at]

        def newest(name: str) -> Any:
            rows = [s for s in known if s.name == name]
            return max(rows, key=lambda s: (s.observed_at, s.id)) if rows else None

        soak = MIN_SOAK[definition].get(a.from_stage, 0)
        if entered is not None and (a.at - entered).total_seconds() < soak - 0.01:
            return f"soak of {soak}s not over ({(a.at - entered).total_seconds():.1f}s)"
        if a.from_stage == "branch":
            b, t = newest("build_green"), newest("tests_pass_rate")
            if b is None or b.value != 1.0 or t is None or t.value < 1.0:
                return f"CI not green (build {b and b.value}, tests {t and t.value})"
            return None
        s = newest("crash_free_sessions")
        if s is None or s.value is None or s.value < PASS or (s.samples or 0) < MIN_SAMPLES:
            return f"crash-free not passing ({s and s.value}, {s and s.samples} samples)"
        if a.from_stage == "beta":
            b = newest("build_green")
            if b is None or b.value != 1.0:
                return "build not green"
        return None


def _aware(at: datetime) -> datetime:
    """The database's timestamps are UTC (naive on some backends)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 releases, each fault once (the test in make test)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) afterwards")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        raise SystemExit(f"the game day needs {', '.join(missing)}")
    quiet_logs()
    sys.exit(GameDay(args).run())


if __name__ == "__main__":
    main()
