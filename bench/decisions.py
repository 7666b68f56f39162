"""Decision bench: how well does the robot's REAL decide() guard a weekly mobile release train?

    python bench/decisions.py [--releases 1000 | --quick] [--seed 7] [--definition PATH] [--jobs 2]

It loads a pipeline definition (the shipped state_definitions/mobile_weekly.yaml by default) with
the real loader, simulates weekly releases hour by hour, and every hour calls the real
conductor.domain.decisions.decide() on what a Conductor service would know at that moment; it
then acts on the verdict the way conductor/service/evaluation.py, approvals.py and timers.py do.
It prints figures, then one line of key=value pairs (see METRICS).

The world model (every number is a parameter of `World`):

Releases. One release a week; trunk from Thursday 12:00 (Europe/Stockholm), cut on the definition's
  schedule. 10% are BAD: a crash regression (55%), an ANR regression (35%) or both (10%). A crash
  regression lowers crash-free sessions by 0.05 to 2 percentage points in production, an ANR
  regression raises the ANR rate by 0.05 to 1 point, both log-uniform (small ones are the common
  ones). 30% of regressions are on one device segment only: the segment is 15% of store users, 15%
  of beta testers, 10% of alpha testers and 3% of employees (they carry flagships), and the effect
  in the segment is the production figure / 0.15, so a ring sees it in proportion to its share.
  A GOOD release is not a perfect copy of the last one: its true rates move by a release-to-release
  wobble (crash-free sd 0.006 pp, ANR sd 0.004 pp) around a slowly drifting app-wide level (AR(1),
  phi 0.9, innovations 0.003 / 0.002 pp). There is no release between "good" and "bad": a change of
  0.02 to 0.05 pp does not happen, which is the indifference zone a tolerance sits in.
Rings. nightly = employees (2k users), alpha 20k, beta 100k, rollout_1 = 1% of store users (10k),
  rollout_100 = all 1M. Rings differ in their base rates (crash-free 99.50 / 99.60 / 99.65 / 99.70 /
  99.70 %, ANR 0.30 / 0.26 / 0.23 / 0.20 / 0.20 %). The share of a ring on the release ramps as
  cap * (1 - exp(-t / tau)): tau 4h / 12h / 24h / 36h / 36h, cap 0.9 (beta 0.85). A user has 3
  sessions a day, with a daily rhythm (+-50% around 12:00 UTC). Sessions are Poisson, crash-free
  and ANR sessions binomial per session (no over-dispersion: sessions are independent).
Reports. Crash and ANR data per ring, hourly, 3 hours late, cumulative since the release entered
  the ring (samples = sessions, events = crash-free sessions / ANR sessions, observed_at = the end
  of the data window); active_users = users on the build in the ring. Reports of a ring the
  release has left are dropped. Baselines are what the service's statements read: `previous` is
  the previous release's last report in that ring (BASELINE_IN_RING), whatever that release's
  fate; `production` is the latest report of the latest release in the store (BASELINE_IN_PRODUCTION):
  a released release goes on reporting from its 100% ring until the next release reads it. Four
  warm-up releases per chain fill the baselines before anything is counted.
CI. A push (the branch cut, or a fix) is built 1 h later and tested (2000 tests) 1 h after a
  green build. Builds fail for infrastructure reasons 1% of the time, a test run has one flaky
  failure 3% of the time; CI reruns a failed job automatically (build 1 h, tests 2 h later), at
  most twice. 4% of branch cuts and 2% of fixes are really broken (1 to 30 tests fail on every
  run); a developer pushes a fix 2 to 10 office hours later. CI cancels the runs of a superseded
  commit, so the latest build and test reports are of the head (or of nothing newer).
Bugs. Release blockers appear (Poisson, 0.3 a release) in the first four days after the cut; one
  that appears after the release reached the store is left for the next release. Each is fixed
  2 to 12 office hours later by a critical-fix commit on the branch (marked, so not an unreviewed
  change), which closes it and goes through CI. The tracker reports open blockers hourly.
Sign-offs. Each of the definition's signoff teams signs during beta, 3 to 16 office hours after
  beta starts, and always approves (a refusal is not modelled).
People. A release manager works Mon-Fri 09:00-18:00 Europe/Stockholm (no holidays), answers a
  question 30-90 minutes after it is asked in office hours, else 30-90 minutes after the next
  office hours start, and is right 90% of the time (approves a good release, rejects a bad one;
  before any ring has used the build, nobody can tell, and a bad one is answered as a good one).
  A robot halt of a good release is resumed by the release manager, at the same reply times, over
  the halting question (resume: the soak starts again and exactly that question will not halt it
  again). A robot hold of a bad release is a catch: it stays held in its ring (still used, still
  reporting) until the release manager cancels it; a halt or a rejection of a bad one is a catch
  and ends it. A good release a human rejected is held (before the store: the robot goes on, and
  may advance or ask anew when the question changes) or halted and lost (in the store: nobody
  resumes what they just stopped). An escalated question holds the release; it waits for a human
  until the robot moves it (its question changed) or the release manager comes, who can only
  cancel it (the service has no answer to an escalated question). A release still unfinished 28
  days after its start is counted as stuck.
Service semantics mirrored here: decide() every hour after the due reports are stored; ADVANCE
  follows a chain of passing transitions; one question per pause (an open question stays open while
  the fingerprint is unchanged; a changed question withdraws it, and a new ASK asks again in the same
  pause); a rejected fingerprint is not asked again; the 12h approval deadline counts from the ask
  of that fingerprint, then escalates and holds (the fingerprint counts as rejected); HOLD acts on
  a new question only; a HALT over the fingerprint a human resumed over does nothing; an approval
  takes the transition only if the current decision still has the question's fingerprint.
Not modelled: releases overlapping in time (each release's baselines are its predecessor's final
  counts), unreviewed changes, sign-off refusals, blockers found in the store, holidays, sources
  that fail, crash-rate over-dispersion (users who crash repeatedly), changes of build within a ring.

Four chains of releases (fixed, whatever --jobs) run in parallel; each release draws from its own
seeded generator, so a run is deterministic for a seed and a size.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conductor.domain.decisions import Decision, Verdict, decide  # noqa: E402
from conductor.domain.definition import CompareGate, Pipeline  # noqa: E402
from conductor.domain.gates import Baseline, GateContext, Outcome, SignalValue, Signoff  # noqa: E402
from conductor.domain.loader import load_pipeline  # noqa: E402

DEFAULT_DEFINITION = ROOT / "state_definitions" / "mobile_weekly.yaml"
METRICS = ("caught_before_100_pct", "caught_before_release_pct", "user_days_per_bad", "false_pauses_per_good",
           "false_halts_per_good", "asks_per_pause", "human_wait_h")  # fmt: skip
TARGETS = {"caught_before_release_pct": (">=", 99.0), "caught_before_100_pct": (">=", 90.0), "false_pauses_per_good": ("<=", 0.07),
           "false_halts_per_good": ("<=", 0.02), "asks_per_pause": ("==", 1.0), "human_wait_h": ("<=", 0.5)}  # fmt: skip
CHAINS = 4
WARMUP = 4
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
FIRST_START = datetime(2027, 1, 7, 12, 0, tzinfo=ZoneInfo("Europe/Stockholm"))  # a Thursday
OFFICE_TZ = ZoneInfo("Europe/Stockholm")
HEALTH_SIGNALS = frozenset({"crash_free_sessions", "anr_rate"})
STORE_STAGES = ("rollout_1", "rollout_100")


@dataclass(frozen=True)
class Ring:
    users: int
    tau_h: float
    cap: float
    crash_free: float  # base crash-free share of sessions (0..1)
    anr: float  # base ANR share of sessions
    segment: float  # share of the ring on the device segment a segment regression hits


@dataclass(frozen=True)
class World:
    rings: dict[str, Ring] = field(default_factory=lambda: {
        "nightly": Ring(2_000, 4, 0.90, 0.9950, 0.0030, 0.03),
        "alpha": Ring(20_000, 12, 0.90, 0.9960, 0.0026, 0.10),
        "beta": Ring(100_000, 24, 0.85, 0.99650, 0.0023, 0.15),
        "rollout_1": Ring(10_000, 36, 0.90, 0.9970, 0.0020, 0.15),
        "rollout_100": Ring(1_000_000, 36, 0.90, 0.9970, 0.0020, 0.15),
    })  # fmt: skip
    sessions_per_day: float = 3.0
    report_delay_h: int = 3
    bad_share: float = 0.10
    crash_pp: tuple[float, float] = (0.05, 2.0)
    anr_pp: tuple[float, float] = (0.05, 1.0)
    segment_only: float = 0.30
    production_segment: float = 0.15
    wobble_pp: tuple[float, float] = (0.006, 0.004)  # crash-free, ANR: release-to-release sd
    drift_pp: tuple[float, float] = (0.003, 0.002)  # AR(1) innovations of the app-wide level
    drift_phi: float = 0.9
    tests: int = 2000
    build_flake: float = 0.01
    test_flake: float = 0.03
    broken_cut: float = 0.04
    broken_fix: float = 0.02
    blockers_per_release: float = 0.3
    human_right: float = 0.90
    max_days: int = 28


@dataclass(frozen=True)
class Truth:
    """What is really true of a release (the robot never sees it)."""

    bad: bool
    crash_pp: float  # production crash-free drop, percentage points (0 if none)
    anr_pp: float  # production ANR rise, percentage points
    segment: bool
    crash_offset: float  # good wobble + drift, as a share (0..1)
    anr_offset: float

    def crash_free(self, world: World, stage: str) -> float:
        ring = world.rings[stage]
        drop = self.crash_pp / 100 * (ring.segment / world.production_segment if self.segment else 1.0)
        return min(max(ring.crash_free + self.crash_offset - drop, 0.0), 1.0)

    def anr(self, world: World, stage: str) -> float:
        ring = world.rings[stage]
        rise = self.anr_pp / 100 * (ring.segment / world.production_segment if self.segment else 1.0)
        return min(max(ring.anr + self.anr_offset + rise, 0.0), 1.0)


def draw_truth(rng: np.random.Generator, world: World, level: tuple[float, float]) -> Truth:
    bad = bool(rng.random() < world.bad_share)
    crash = anr = 0.0
    if bad:
        kind = rng.random()
        if kind < 0.55 or kind >= 0.90:
            crash = math.exp(rng.uniform(math.log(world.crash_pp[0]), math.log(world.crash_pp[1])))
        if kind >= 0.55:
            anr = math.exp(rng.uniform(math.log(world.anr_pp[0]), math.log(world.anr_pp[1])))
    segment = bad and bool(rng.random() < world.segment_only)
    crash_offset = level[0] + rng.normal(0, world.wobble_pp[0] / 100)
    anr_offset = level[1] + rng.normal(0, world.wobble_pp[1] / 100)
    return Truth(bad, crash, anr, segment, crash_offset, anr_offset)


# ---------------------------------------------------------------------------------------- time


@cache
def at(hour: int) -> datetime:
    """Simulated hour (hours since EPOCH) -> aware UTC datetime."""
    return EPOCH + timedelta(hours=hour)


@cache
def in_office(hour: int) -> bool:
    local = at(hour).astimezone(OFFICE_TZ)
    return local.weekday() < 5 and 9 <= local.hour < 18


def next_office_start(hour: int) -> int:
    """The first office hour at or after `hour`."""
    h = hour
    while not in_office(h):
        h += 1
    return h


def office_hours_later(hour: int, n: int) -> int:
    """The hour when `n` office hours have passed since `hour`."""
    h = hour
    while n > 0:
        h += 1
        n -= in_office(h)
    return h


def reply_at(hour: int, rng: np.random.Generator) -> float:
    """When a release manager answers something raised at `hour` (fractional hours)."""
    start = hour if in_office(hour) else next_office_start(hour)
    return start + rng.uniform(0.5, 1.5)


def diurnal(hour: int) -> float:
    return 1.0 + 0.5 * math.sin(2 * math.pi * ((hour % 24) - 6) / 24)


# ---------------------------------------------------------------------------------------- one release


@dataclass
class RingReport:
    samples: int
    crash_free: int
    anr: int
    observed: int


@dataclass
class Question:
    fingerprint: str
    asked: int
    answer_at: float
    approve: bool  # what the release manager will answer


@dataclass
class Result:
    index: int
    bad: bool
    crash_pp: float
    anr_pp: float
    segment: bool
    outcome: str = "stuck"  # released | caught | lost | stuck
    caught_in: str | None = None
    caught_by: str | None = None  # gate names, or "rejected"
    entered: list[str] = field(default_factory=list)
    asks: int = 0
    pauses: int = 0
    asks_health: int = 0
    false_holds: int = 0
    false_halts: int = 0
    real_holds: int = 0
    escalations: int = 0
    human_wait_h: float = 0.0
    user_days: float = 0.0
    hours_to_release: float | None = None
    ask_reasons: Counter[str] = field(default_factory=Counter)
    waits: list[tuple[str, int, float]] = field(default_factory=list)  # (stage, from hour, hours) waiting for a human


class Release:
    """One release walking the pipeline; `run()` returns its Result and leaves its ring reports."""

    def __init__(self, pipeline: Pipeline, world: World, index: int, truth: Truth, rng: np.random.Generator, start: int,
                 chain: Chain):  # fmt: skip
        self.p, self.w, self.truth, self.rng = pipeline, world, truth, rng
        self.name = f"app/{index}"
        self.result = Result(index, truth.bad, truth.crash_pp, truth.anr_pp, truth.segment)
        self.start = start
        self.stage = pipeline.initial_stage
        self.entered = start
        self.chain = chain
        self.baselines: dict[str, Baseline] = {}
        self.signals: dict[str, SignalValue] = {}
        self.signoffs: dict[str, Signoff] = {}
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.head: str | None = None
        self.commits = 0
        self.open_blockers = 0
        self.cut: int | None = None
        # ring data: the ring the data of this hour belongs to, and its cumulative counts
        self.ring: str | None = None
        self.ring_start = 0
        self.ring_epoch = 0
        self.counts = RingReport(0, 0, 0, 0)
        self.last_report: dict[str, RingReport] = {}
        # the service's view of the question
        self.last_fp: str | None = None
        self.last_stage: str | None = None
        self.pending: Question | None = None
        self.rejected_fp: str | None = None
        self.deadlines: list[tuple[int, str]] = []
        self.in_pause = False
        self.escalated: tuple[Question, str] | None = None
        self.cancel_at: float | None = None
        self.holding: str | None = None  # held since the last decision: "health" (a health gate failed) or "other"
        self.halted_from: str | None = None
        self.resume_at: float | None = None
        self.done = False
        self.trace: list[str] | None = None  # set to a list to record what happened, hour by hour

    def note(self, h: int, what: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{at(h).astimezone(OFFICE_TZ):%a %d %b %H:%M} [{self.stage}] {what}")

    # --- the clock

    def run(self) -> Result:
        end = self.start + self.w.max_days * 24
        h = self.start
        while not self.done and h < end:
            self.hour(h)
            h += 1
        return self.result

    def hour(self, h: int) -> None:
        self._ring_data(h)
        self._deliver(h)
        if self.done:
            return
        if self.cancel_at is not None:
            self.done = h >= self.cancel_at  # held, still used in its ring (and reporting) until cancelled
            return
        if self.halted_from is not None:
            self._halted(h)
        else:
            self._judge(h)
            self._answer_and_deadlines(h)
        if self.escalated is not None:
            self._after_escalation(h)
        if self.pending is None and self.in_pause:
            self.in_pause = False
        self._exposure(h)

    def push(self, due: float, kind: str, payload: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (due, self.seq, kind, payload))

    # --- the world's reports

    def _ring_data(self, h: int) -> None:
        """The sessions of the hour just ended in the current ring, reported report_delay_h later."""
        if self.ring is None or h <= self.ring_start:
            return
        ring = self.w.rings[self.ring]
        users = ring.users * ring.cap * (1 - math.exp(-(h - self.ring_start) / ring.tau_h))
        sessions = int(self.rng.poisson(users * self.w.sessions_per_day / 24 * diurnal(h)))
        c = self.counts
        if sessions:
            c.samples += sessions
            c.crash_free += int(self.rng.binomial(sessions, self.truth.crash_free(self.w, self.ring)))
            c.anr += int(self.rng.binomial(sessions, self.truth.anr(self.w, self.ring)))
        report = RingReport(c.samples, c.crash_free, c.anr, h)
        self.push(h + self.w.report_delay_h, "ring", (self.ring_epoch, self.ring, report, round(users)))

    def _deliver(self, h: int) -> None:
        if self.cut is not None:
            self.signals["open_blockers"] = SignalValue("open_blockers", float(self.open_blockers), at(h), "tracker")
        while self.events and self.events[0][0] <= h:
            _, _, kind, payload = heapq.heappop(self.events)
            getattr(self, f"_on_{kind}")(h, payload)

    def _on_ring(self, h: int, payload: tuple[int, str, RingReport, int]) -> None:
        epoch, ring, r, users = payload
        if epoch != self.ring_epoch or ring != self.stage:
            return  # a ring the release has left (or a halted release: stored under another stage)
        observed = at(r.observed)
        self.signals["crash_free_sessions"] = SignalValue("crash_free_sessions", 100 * r.crash_free / r.samples if r.samples else None,
                                                          observed, "crashes", r.samples, error=None if r.samples else "no sessions",
                                                          events=r.crash_free)  # fmt: skip
        self.signals["anr_rate"] = SignalValue("anr_rate", 100 * r.anr / r.samples if r.samples else None, observed, "vitals", r.samples,
                                               error=None if r.samples else "no sessions", events=r.anr)  # fmt: skip
        self.signals["active_users"] = SignalValue("active_users", float(users), observed, "analytics")
        if r.samples:
            self.last_report[ring] = r

    def _ci_report(self, h: int, name: str, sha: str, value: float, samples: int | None) -> None:
        if sha != self.head:
            return  # CI cancels the runs of a superseded commit
        old = self.signals.get(name)
        runs = old.runs + 1 if old is not None and old.sha == sha else 1
        self.signals[name] = SignalValue(name, value, at(h), "ci", samples, sha, runs=runs)

    def _on_build(self, h: int, payload: tuple[str, float]) -> None:
        self._ci_report(h, "build_green", payload[0], payload[1], None)

    def _on_tests(self, h: int, payload: tuple[str, float]) -> None:
        self._ci_report(h, "tests_pass_rate", payload[0], payload[1], self.w.tests)

    def _on_commit(self, h: int, broken: bool) -> None:
        """A push to the release branch: the new head, its CI runs, and a fix later if it is broken."""
        self.commits += 1
        sha = f"{self.result.index:05d}{self.commits:03d}" + "0" * 32
        self.head = sha
        t = h
        for attempt in range(3):
            t += 1
            green = self.rng.random() >= self.w.build_flake
            self.push(t, "build", (sha, 1.0 if green else 0.0))
            if green:
                break
            if attempt == 2:
                return
        for _ in range(3):
            t += 1
            failed = int(self.rng.integers(1, 31)) if broken else int(self.rng.random() < self.w.test_flake)
            self.push(t, "tests", (sha, 1 - failed / self.w.tests))
            if not failed:
                break
            t += 1
        if broken:
            self.push(office_hours_later(h, int(self.rng.integers(2, 11))), "commit", bool(self.rng.random() < self.w.broken_fix))

    def _on_blocker(self, h: int, payload: None) -> None:
        if self.stage in STORE_STAGES or self.p.is_terminal(self.stage) or self.halted_from is not None:
            return  # found after the release reached the store: it goes to the next release
        self.open_blockers += 1
        self.push(office_hours_later(h, int(self.rng.integers(2, 13))), "blocker_fix")

    def _on_blocker_fix(self, h: int, payload: None) -> None:
        self.open_blockers -= 1
        self._on_commit(h, bool(self.rng.random() < self.w.broken_fix))

    def _on_signoff(self, h: int, team: str) -> None:
        self.signoffs[team] = Signoff(team, True, f"{team}-lead", at(h))

    # --- the service

    def context(self, h: int) -> GateContext:
        return GateContext(at(h), at(self.entered), self.head, self.signals, self.signoffs, self.baselines)

    def _judge(self, h: int) -> None:
        """evaluation.judge(): decide and act until the release stops moving."""
        for _ in range(20):
            if self.done or self.halted_from is not None or self.p.stages[self.stage].kind in ("final", "cancelled", "halted"):
                return
            d = decide(self.p, self.stage, self.context(h))
            if d is None:
                return
            fp = d.fingerprint
            new_question = self.last_fp is None or self.last_stage != self.stage or self.last_fp != fp
            if new_question and self.trace is not None:
                self.note(h, f"{d.verdict.value}: {d.summary}")
            self.last_fp, self.last_stage = fp, self.stage
            if d.verdict is Verdict.ADVANCE:
                self._advance(h)
                continue
            if self.pending is not None and new_question:
                self._close_question(h)  # withdrawn: the question changed
            self._act(h, d, fp, new_question)
            return

    def _act(self, h: int, d: Decision, fp: str, new_question: bool) -> None:
        if d.verdict is not Verdict.HOLD:
            self.holding = None
        if d.verdict is Verdict.ASK:
            if self.rejected_fp == fp or self.pending is not None:
                return
            self._ask(h, d, fp)
        elif d.verdict is Verdict.HOLD:
            if new_question:
                self._failed(h, d, halt=False)
        elif d.verdict is Verdict.HALT and self.rejected_fp != fp:
            self._failed(h, d, halt=True)

    def _ask(self, h: int, d: Decision, fp: str) -> None:
        r = self.result
        r.asks += 1
        if not self.in_pause:
            r.pauses += 1
            self.in_pause = True
        unclear = [x for x in d.results if x.outcome is Outcome.INCONCLUSIVE]
        r.ask_reasons.update(f"{self.stage}:{x.gate}:{x.reason.value}" for x in unclear)
        if any(x.inputs.get("signal") in HEALTH_SIGNALS for x in unclear):
            r.asks_health += 1
        right = self.rng.random() < self.w.human_right
        # Before any ring has used the build nobody can know it is bad: it is answered as a good one.
        looks_bad = self.truth.bad and self.ring is not None
        self.pending = Question(fp, h, reply_at(h, self.rng), right != looks_bad)
        self.deadlines.append((h + round(self.p.approval.deadline.total_seconds() / 3600), fp))

    def _close_question(self, until: float) -> None:
        assert self.pending is not None
        self.result.human_wait_h += until - self.pending.asked
        self.result.waits.append((self.stage, self.pending.asked, until - self.pending.asked))
        self.pending = None

    def _failed(self, h: int, d: Decision, halt: bool) -> None:
        """A HOLD on a new question, or a HALT: a catch, a false alarm or a real CI/bug failure."""
        failed = [x for x in d.results if x.outcome is Outcome.FAIL]
        health = [x.gate for x in failed if x.inputs.get("signal") in HEALTH_SIGNALS]
        r = self.result
        if health and self.truth.bad:
            self._caught(h, ",".join(health), held=not halt)
            return
        kind = "health" if health else "other"
        if halt or self.holding != kind:  # a hold counts once however often its question changes
            if not health:
                r.real_holds += 1
            elif halt:
                r.false_halts += 1
            else:
                r.false_holds += 1
        self.holding = None if halt else kind
        if halt:
            self._halt(h, resume=True)

    def _halt(self, h: int, resume: bool) -> None:
        self.halted_from = self.stage
        self.stage = self.p.halt_stage or "halted"
        self.entered = h
        self.resume_at = reply_at(h, self.rng) if resume else None
        if not resume:
            self._end("lost")

    def _halted(self, h: int) -> None:
        """A halted good release waits for the release manager to resume it over the halting question."""
        assert self.resume_at is not None and self.halted_from is not None
        if h < self.resume_at:
            return
        self.result.human_wait_h += self.resume_at - self.entered
        self.result.waits.append(("halted", self.entered, self.resume_at - self.entered))
        self.stage, self.halted_from, self.resume_at = self.halted_from, None, None
        self.entered = h
        self.rejected_fp = self.last_fp
        self.baselines = self._baselines_for(self.stage, h)
        self._judge(h)

    def _answer_and_deadlines(self, h: int) -> None:
        q = self.pending
        deadline = min((due for due, fp in self.deadlines if q is not None and fp == q.fingerprint), default=math.inf)
        if q is not None and q.answer_at <= h and q.answer_at < deadline:
            self._answer(h, q)
        due = [x for x in self.deadlines if x[0] <= h]
        self.deadlines = [x for x in self.deadlines if x[0] > h]
        for _, fp in due:
            if self.pending is not None and self.pending.fingerprint == fp and not self.done:
                self.result.escalations += 1
                self.escalated = (self.pending, self.stage)
                self.pending = None
                self.rejected_fp = fp  # escalated, then held: not asked again on this question

    def _after_escalation(self, h: int) -> None:
        """Held after an unanswered question: the release waits for a human until the robot moves it
        (the question changed) or the release manager comes, who can only cancel it (nothing in the
        service answers an escalated question)."""
        assert self.escalated is not None
        q, stage = self.escalated
        moved = self.done or self.stage != stage or self.last_fp != q.fingerprint
        if not moved and h < q.answer_at:
            return
        until = h if moved else q.answer_at
        self.result.human_wait_h += until - q.asked
        self.result.waits.append((f"escalated:{stage}", q.asked, until - q.asked))
        self.escalated = None
        if not moved:
            self.note(h, "cancelled by the release manager after an escalation")
            if self.truth.bad:
                self._caught(h, "escalated")
            else:
                self._end("lost")

    def _answer(self, h: int, q: Question) -> None:
        self._close_question(q.answer_at)
        if q.approve:
            d = decide(self.p, self.stage, self.context(h))
            if d is not None and d.fingerprint == q.fingerprint:
                self._advance(h)
                self._judge(h)
            return
        self.rejected_fp = q.fingerprint
        if self.truth.bad:
            self._caught(h, "rejected")
        else:
            t = self.p.advance_from(self.stage)
            if t is not None and t.on_fail == "halt":
                self._halt(h, resume=False)

    def _advance(self, h: int) -> None:
        transition = self.p.advance_from(self.stage)
        assert transition is not None
        if self.pending is not None:
            self._close_question(h)  # withdrawn (the robot advances) or approved (closed already)
        self.stage, self.entered = transition.target, h
        self.rejected_fp = None
        self.result.entered.append(self.stage)
        self._entered_stage(h)

    def _entered_stage(self, h: int) -> None:
        if self.cut is None and self.stage != self.p.initial_stage:
            self.cut = h
            self._on_commit(h, bool(self.rng.random() < self.w.broken_cut))
            for _ in range(int(self.rng.poisson(self.w.blockers_per_release))):
                self.push(h + self.rng.uniform(0, 96), "blocker")
        if self.stage == "beta":
            for team in sorted({t for g in self.p.gates.values() for t in getattr(g, "teams", [])}):
                self.push(office_hours_later(h, int(self.rng.integers(3, 17))), "signoff", team)
        if self.stage in self.w.rings:
            self.ring, self.ring_start, self.ring_epoch = self.stage, h, self.ring_epoch + 1
            self.counts = RingReport(0, 0, 0, 0)
        self.baselines = self._baselines_for(self.stage, h)
        if self.p.stages[self.stage].kind == "final":
            self.result.hours_to_release = h - (self.cut or self.start)
            self._end("released")

    def _baselines_for(self, stage: str, h: int) -> dict[str, Baseline]:
        """What the service's baselines() reads for the outgoing transition's compare gates, by signal:
        the previous release's last report in this ring, or the last report of the latest release in
        the store (BASELINE_IN_PRODUCTION)."""
        transition = self.p.advance_from(stage)
        found: dict[str, Baseline] = {}
        for name in transition.gates if transition else ():
            gate = self.p.gates[name]
            if not isinstance(gate, CompareGate) or gate.signal in found or gate.signal not in HEALTH_SIGNALS:
                continue
            production = self.chain.production
            source = self.chain.in_ring.get(stage) if gate.baseline == "previous" else production and (production.release, production.at(h))
            if not source:
                continue
            release, r = source
            events = r.crash_free if gate.signal == "crash_free_sessions" else r.anr
            value = SignalValue(gate.signal, 100 * events / r.samples, at(r.observed), "source", r.samples, events=events)
            found[gate.signal] = Baseline(release, value)
        return found

    def _caught(self, h: int, by: str, held: bool = False) -> None:
        """A bad release stopped. Held by the robot, it stays in its stage (its ring goes on using it
        and reporting) until the release manager cancels it; halted or rejected, it ends now."""
        r = self.result
        r.caught_in = self.stage if self.halted_from is None else self.halted_from
        r.caught_by = by
        if held:
            r.outcome = "caught"
            self.cancel_at = reply_at(h, self.rng)
            if self.pending is not None:
                self._close_question(h)
        else:
            self._end("caught")

    def _end(self, outcome: str) -> None:
        self.result.outcome = outcome
        self.done = True
        if self.pending is not None:
            self._close_question(self.pending.asked)

    def _exposure(self, h: int) -> None:
        if self.truth.bad and self.stage in STORE_STAGES and self.ring == self.stage and not self.done:
            ring = self.w.rings[self.stage]
            self.result.user_days += ring.users * ring.cap * (1 - math.exp(-(h - self.ring_start) / ring.tau_h)) / 24


# ---------------------------------------------------------------------------------------- chains


@dataclass
class Chain:
    """What one release leaves the next: its last report in each ring, and the store's latest."""

    in_ring: dict[str, tuple[str, RingReport]] = field(default_factory=dict)
    production: Production | None = None

    def after(self, release: Release, seed: list[int]) -> None:
        for stage, report in release.last_report.items():
            self.in_ring[stage] = (release.name, report)
        kind = release.p.stages[release.stage].kind
        if release.last_report and kind in ("rollout", "final"):
            last = max(release.last_report.values(), key=lambda r: r.observed)
            ring = release.w.rings[release.ring] if kind == "final" and release.ring else None
            truth, w = release.truth, release.w
            self.production = Production(release.name, last, ring, release.ring_start, w.report_delay_h, w.sessions_per_day,
                                         truth.crash_free(w, release.ring or ""), truth.anr(w, release.ring or ""), seed)  # fmt: skip


@dataclass
class Production:
    """The latest release in the store. Released, it goes on reporting (cumulative, from the ring it
    was last in) until the next release reads it as its production baseline."""

    release: str
    report: RingReport  # its last report while it walked the pipeline
    ring: Ring | None  # None: not released (stuck in a rollout stage), it reports nothing more here
    ring_start: int
    delay_h: int
    sessions_per_day: float
    crash_free: float
    anr: float
    seed: list[int]

    def at(self, hour: int) -> RingReport:
        r, ring, until = self.report, self.ring, hour - self.delay_h
        if ring is None or until <= r.observed:
            return r
        a, b = r.observed - self.ring_start, until - self.ring_start
        user_hours = ring.users * ring.cap * ((b - a) - ring.tau_h * (math.exp(-a / ring.tau_h) - math.exp(-b / ring.tau_h)))
        rng = np.random.default_rng([*self.seed, hour])
        n = int(rng.poisson(user_hours * self.sessions_per_day / 24))
        crash_free, anr = int(rng.binomial(n, self.crash_free)), int(rng.binomial(n, self.anr))
        return RingReport(r.samples + n, r.crash_free + crash_free, r.anr + anr, until)


def start_hour(index: int) -> int:
    start = (FIRST_START + timedelta(weeks=index)).astimezone(UTC)
    return int((start - EPOCH).total_seconds() // 3600)


def chain_bounds(releases: int) -> list[int]:
    return [round(releases * c / CHAINS) for c in range(CHAINS + 1)]


def run_chain(args: tuple[str, World, int, int, int, int | None]) -> tuple[list[Result], list[str]]:
    """Releases [first, last) in order, each compared with its predecessors; four warm-up ones
    first. Returns their results, and the timeline of release `trace` if it is one of them."""
    definition, world, seed, first, last, trace = args
    pipeline = load_pipeline(definition)
    chain = Chain()
    level = (0.0, 0.0)
    results, timeline = [], []
    for index in [*range(-WARMUP, 0), *range(first, last)]:
        release_seed = [seed, first, WARMUP + index] if index < 0 else [seed, 1 << 20, index]
        rng = np.random.default_rng(release_seed)
        level = tuple(world.drift_phi * lv + rng.normal(0, sd / 100) for lv, sd in zip(level, world.drift_pp, strict=True))  # type: ignore[assignment]
        truth = draw_truth(rng, world, level)
        if index < 0:
            truth = Truth(False, 0.0, 0.0, False, truth.crash_offset, truth.anr_offset)
        release = Release(pipeline, world, index, truth, rng, start_hour(first + index if index < 0 else index), chain)
        if index == trace:
            release.trace = [f"release {index}: {truth}"]
        result = release.run()
        chain.after(release, [*release_seed, 1])
        if index >= 0:
            results.append(result)
        if index == trace:
            timeline = [*(release.trace or []), f"-> {result.outcome}"]
            break
    return results, timeline


def simulate(releases: int = 1000, seed: int = 7, definition: Path | str = DEFAULT_DEFINITION, jobs: int = 2,
             world: World | None = None) -> list[Result]:  # fmt: skip
    """The results of `releases` releases, in order (deterministic for a seed and a size)."""
    world = world or World()
    bounds = chain_bounds(releases)
    work = [(str(definition), world, seed, bounds[c], bounds[c + 1], None) for c in range(CHAINS) if bounds[c + 1] > bounds[c]]
    if jobs <= 1:
        chunks = [run_chain(w) for w in work]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(jobs, len(work))) as pool:
            chunks = pool.map(run_chain, work)
    return sorted((r for chunk, _ in chunks for r in chunk), key=lambda r: r.index)


def trace(index: int, releases: int = 1000, seed: int = 7, definition: Path | str = DEFAULT_DEFINITION) -> list[str]:
    """What happened to release `index` of a run of `releases`: each new question the robot put."""
    bounds = chain_bounds(releases)
    c = max(i for i in range(CHAINS) if bounds[i] <= index)
    return run_chain((str(definition), World(), seed, bounds[c], bounds[c + 1], index))[1]


# ---------------------------------------------------------------------------------------- figures


def metrics(results: list[Result]) -> dict[str, float]:
    bad = [r for r in results if r.bad]
    good = [r for r in results if not r.bad]
    asks = sum(r.asks for r in results)
    pauses = sum(r.pauses for r in results)
    return {
        "caught_before_100_pct": 100 * sum("rollout_100" not in r.entered for r in bad) / max(len(bad), 1),
        "caught_before_release_pct": 100 * sum(r.outcome != "released" for r in bad) / max(len(bad), 1),
        "user_days_per_bad": sum(r.user_days for r in bad) / max(len(bad), 1),
        "false_pauses_per_good": sum(r.asks for r in good) / max(len(good), 1),
        "false_halts_per_good": sum(r.false_halts + r.false_holds for r in good) / max(len(good), 1),
        "asks_per_pause": asks / pauses if pauses else 1.0,
        "human_wait_h": sum(r.human_wait_h for r in results) / max(len(results), 1),
    }


def meets_targets(m: dict[str, float]) -> dict[str, bool]:
    ok = {}
    for key, (op, target) in TARGETS.items():
        v = round(m[key], 4)
        ok[key] = v >= target if op == ">=" else v <= target if op == "<=" else v == target
    return ok


def report(results: list[Result], m: dict[str, float], definition: Path | str, seconds: float) -> str:
    bad = [r for r in results if r.bad]
    good = [r for r in results if not r.bad]
    lines = [f"decision bench: {len(results)} releases ({len(bad)} bad, {len(good)} good) on {definition}, {seconds:.0f} s"]
    caught_in = Counter(r.caught_in for r in bad if r.outcome == "caught")
    by = Counter(
        {"rejected": "a human", "escalated": "escalation"}.get(r.caught_by or "", "the robot") for r in bad if r.outcome == "caught"
    )
    lines.append(f"  bad releases caught by stage: {dict(caught_in)}; by {dict(by)}; released: "
                 f"{sum(r.outcome == 'released' for r in bad)}; still held or stuck: {sum(r.outcome == 'stuck' for r in bad)}")  # fmt: skip
    missed = sorted((r for r in bad if "rollout_100" in r.entered), key=lambda r: -(r.crash_pp + r.anr_pp))
    lines.append("  bad releases that reached 100%: " + (", ".join(
        f"#{r.index} crash -{r.crash_pp:.2f}pp anr +{r.anr_pp:.2f}pp{' (segment)' if r.segment else ''} -> {r.outcome}"
        for r in missed[:8]) or "none") + (" ..." if len(missed) > 8 else ""))  # fmt: skip
    done = [r.hours_to_release for r in good if r.hours_to_release is not None]
    lines.append(f"  good releases: released {len(done)}, lost {sum(r.outcome == 'lost' for r in good)}, stuck "
                 f"{sum(r.outcome == 'stuck' for r in good)}; cut to released median {np.median(done) / 24 if done else 0:.1f} d, "
                 f"p90 {np.percentile(done, 90) / 24 if done else 0:.1f} d")  # fmt: skip
    lines.append(f"  good releases: asks {sum(r.asks for r in good)} (health {sum(r.asks_health for r in good)}), false holds "
                 f"{sum(r.false_holds for r in good)}, false halts {sum(r.false_halts for r in good)}, holds on real CI failures or "
                 f"blockers {sum(r.real_holds for r in good)}, escalations {sum(r.escalations for r in good)}")  # fmt: skip
    lines.append(f"  all: asks {sum(r.asks for r in results)} in {sum(r.pauses for r in results)} pauses, escalations "
                 f"{sum(r.escalations for r in results)}")  # fmt: skip
    reasons = sum((r.ask_reasons for r in results), Counter())
    lines.append("  what was unclear when asking: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common(8)))
    lines.append("")
    lines += [
        "  caught_before_100_pct      bad releases stopped (robot hold/halt, human rejection, escalation hold) before rollout_100",
        "  caught_before_release_pct  bad releases that never reached the final stage",
        "  user_days_per_bad          store users who installed a bad build x days, until halted or released, per bad release",
        "  false_pauses_per_good      questions asked on good releases, per good release",
        "  false_halts_per_good       holds and halts of good releases by a failed crash/ANR gate, per good release (a hold once,",
        "                             however often its question changes; holds on real CI failures and blockers are not false)",
        "  asks_per_pause             approval requests per continuous period with an open question (1.0: one question a pause)",
        "  human_wait_h               hours per release with an open question, held after an escalation until someone came, or",
        "                             halted waiting for a resume",
    ]
    ok = meets_targets(m)
    lines.append("  targets: " + ", ".join(f"{k} {op} {t:g}: {'ok' if ok[k] else 'MISSED'}" for k, (op, t) in TARGETS.items()))
    return "\n".join(lines)


def keyline(m: dict[str, float]) -> str:
    return " ".join(f"{k}={m[k]:.3f}" if k in ("false_pauses_per_good", "false_halts_per_good", "asks_per_pause") else f"{k}={m[k]:.2f}"
                    for k in METRICS)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--releases", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="300 releases")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--definition", type=Path, default=DEFAULT_DEFINITION)
    ap.add_argument("--jobs", type=int, default=2, help="processes (the results do not depend on it)")
    ap.add_argument("--trace", type=int, metavar="INDEX", help="print what happened to one release of the run, and stop")
    args = ap.parse_args(argv)
    n = 300 if args.quick else args.releases
    if args.trace is not None:
        print("\n".join(trace(args.trace, n, args.seed, args.definition)))
        return
    t0 = time.perf_counter()
    results = simulate(n, args.seed, args.definition, args.jobs)
    m = metrics(results)
    print(report(results, m, args.definition, time.perf_counter() - t0))
    print(keyline(m))


if __name__ == "__main__":
    main()
