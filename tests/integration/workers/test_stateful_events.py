"""A hypothesis state machine over the event path, in process on SQLite: events, duplicate
deliveries, redelivered tasks, approvals, rejections, resumes, clock moves and worker restarts
(a new Conductor on the same database), checking after every step that

- an event is applied at most once (its signals recorded once, no transition repeated by it),
- every stage move is a legal edge and the audit's moves chain to the release's stage,
- nothing leaves `halted` without a human's resume (an approval row), or a cancel.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from event_flow import REPO, TRACK, check_invariants
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule, run_state_machine_as_test

from conductor.actions import ActionAdapters
from conductor.clock import ManualClock
from conductor.domain.errors import ConductorError
from conductor.domain.loader import DefinitionCatalog
from conductor.facade import Conductor
from conductor.service import Actor
from conductor.service.inbox import store_event
from conductor.sources.events import InboundEvent, SignalIn
from conductor.store.db import Database, make_engine
from tests.conftest import apply_event, inline

DEFINITIONS = Path(__file__).resolve().parents[3] / "state_definitions"
START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
RM = Actor("rita", "release_manager")
VERSIONS = ["1.0.0", "1.1.0"]
SHAS = ["aaa111", "aaa111", "aaa111", "bbb222"]  # mostly the branch head; sometimes another commit
TEAMS = ("playback", "search", "payments", "growth")

# Ring signals in one event: good, grey zone (asks a human), bad (holds, or halts a rollout).
RING = {
    "good": [("open_blockers", 0.0, None), ("active_users", 9000.0, None), ("crash_free_sessions", 99.8, 40000), ("anr_rate", 0.2, 40000)],
    "grey": [("open_blockers", 0.0, None), ("active_users", 9000.0, None), ("crash_free_sessions", 99.3, 40000), ("anr_rate", 0.2, 40000)],
    "bad": [("open_blockers", 0.0, None), ("active_users", 9000.0, None), ("crash_free_sessions", 98.0, 40000), ("anr_rate", 0.6, 40000)],
}
CI = {
    "green": [("build_green", 1.0, None), ("tests_pass_rate", 1.0, 900)],
    "red": [("build_green", 0.0, None), ("tests_pass_rate", 0.97, 900)],
}


def fast_sqlite(url: str):
    """The usual SQLite engine without an fsync per commit: this test checks logic, not durability."""
    from sqlalchemy import event

    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _no_fsync(dbapi_conn, _):
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    return engine


class EventPath(RuleBasedStateMachine):
    template: Path  # a migrated SQLite file, set by the test

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="conductor-stateful-"))
        shutil.copy(self.template, self.dir / "c.db")
        self.url = f"sqlite:///{self.dir / 'c.db'}"
        self.clock = ManualClock(START)
        self.conductor: Conductor | None = None
        self.deliveries = 0
        self.restart()

    def teardown(self):
        if self.conductor is not None:
            self.conductor.db.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    events = Bundle("events")

    # ------------------------------------------------------------------ setup and restarts

    @initialize(target=events)
    def track(self):
        self.conductor.ensure_track(TRACK, "mobile_weekly", repository=REPO)
        for version in VERSIONS:
            self.conductor.start_release(TRACK, version, RM)
        self.cuts = [self.branch_cut(version, "aaa111") for version in VERSIONS]
        for version in VERSIONS:  # sign-offs do not expire: give them up front, the rest is random
            self.teams_sign_off(version)
        return multiple(*self.cuts)

    @rule()
    def restart(self):
        """A worker restart: a new process has a new Conductor, engine and caches; the database stays."""
        if self.conductor is not None:
            self.conductor.db.dispose()
        self.conductor = Conductor(Database(self.url, engine=fast_sqlite(self.url)), DefinitionCatalog(DEFINITIONS), self.clock)
        never = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
        self.dispatcher = inline(self.conductor, adapters=ActionAdapters(never)).dispatcher

    # ------------------------------------------------------------------ events

    def _deliver(self, event: InboundEvent) -> int:
        stored = store_event(self.conductor, event)
        self.dispatcher.event_stored(stored.event_id)
        return stored.event_id

    def branch_cut(self, version, sha):
        self.deliveries += 1
        return self._deliver(
            InboundEvent(
                source="generic",
                delivery_id=f"cut-{version}-{sha}",
                kind="branch_created",
                raw_type="create",
                repository=REPO,
                branch=f"release/{version}",
                sha=sha,
            )
        )

    def _signals(self, version, sha, kind, values) -> int:
        self.deliveries += 1
        signals = [SignalIn(name=n, value=v, samples=k) for n, v, k in values]
        return self._deliver(
            InboundEvent(
                source="generic",
                delivery_id=f"d{self.deliveries}",
                kind=kind,
                raw_type=kind,
                repository=REPO,
                branch=f"release/{version}",
                sha=sha,
                signals=signals,
            )
        )

    @rule(
        target=events,
        version=st.sampled_from(VERSIONS),
        sha=st.sampled_from(SHAS),
        result=st.sampled_from(["green", "green", "green", "red"]),
    )
    def ci_finished(self, version, sha, result):
        return self._signals(version, sha, "build_finished", CI[result])

    @rule(target=events, version=st.sampled_from(VERSIONS), quality=st.sampled_from(["good", "good", "grey", "bad"]))
    def ring_report(self, version, quality):
        return self._signals(version, "aaa111", "signal", RING[quality])

    @rule(event_id=events)
    def redelivered_task(self, event_id):
        """The broker hands the same task out again (or a sweeper resent it)."""
        apply_event(self.conductor, event_id)

    @rule(event_id=events)
    def duplicate_webhook(self, event_id):
        """The sender retries the same delivery id: the inbox finds its row, nothing new is applied."""
        from conductor.store.models import InboxEvent

        with self.conductor.db.read() as s:
            row = s.get(InboxEvent, event_id)
            event = InboundEvent.model_validate(row.payload)
        assert self._deliver(event) == event_id

    # ------------------------------------------------------------------ humans and time

    def teams_sign_off(self, version):
        for team in TEAMS:
            try:
                self.conductor.sign_off(f"{TRACK}/{version}", team, Actor(f"{team}-lead", "team"))
            except ConductorError:
                pass

    @rule(version=st.sampled_from(VERSIONS), stale=st.sampled_from([False, False, False, True]))
    def approve(self, version, stale):
        try:
            snap = self.conductor.snapshot(f"{TRACK}/{version}")
            fp = "0" * 32 if stale or snap.pending is None else snap.pending.fingerprint
            self.conductor.approve(snap.release.id, RM, "looked at it", fingerprint=fp)
        except ConductorError:
            pass

    @rule(version=st.sampled_from(VERSIONS))
    def reject(self, version):
        try:
            self.conductor.reject(f"{TRACK}/{version}", RM, "not like this")
        except ConductorError:
            pass

    @rule(version=st.sampled_from(VERSIONS))
    def resume(self, version):
        try:
            self.conductor.resume(f"{TRACK}/{version}", RM, "fix verified")
        except ConductorError:
            pass

    @rule(target=events, version=st.sampled_from(VERSIONS))
    def good_day(self, version):
        """A day of healthy CI and ring data: the macro step that lets runs reach the rollout stages."""
        self.time_passes(25)
        self.ci_finished(version, "aaa111", "green")
        return self.ring_report(version, "good")

    @rule(target=events, version=st.sampled_from(VERSIONS))
    def good_week(self, version):
        """Three healthy days: reaches the rollout stages, where bad ring data halts."""
        for _ in range(2):
            self.good_day(version)
        return self.good_day(version)

    @rule(hours=st.sampled_from([6, 13, 25, 49]))
    def time_passes(self, hours):
        self.clock.advance(timedelta(hours=hours))
        self.conductor.tick()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def exactly_once_and_legal(self):
        check_invariants(self.conductor)


def test_event_path_state_machine(sqlite_template):
    EventPath.template = sqlite_template
    run_state_machine_as_test(
        EventPath,
        settings=settings(
            max_examples=12,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
