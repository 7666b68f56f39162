"""`conductor demo`: two weekly releases of music-android on a compressed clock, embedded SQLite.

Release A (8.8.0) is the track's first: its crash and ANR rates have nothing to be compared with,
so the robot pauses at each ring and a scripted release manager approves. Release B (8.9.0) starts
a week later and is compared with A ring by ring; at its 1 % store rollout its crash-free rate is
0.6 pp worse than A's in production, and the statistical gate halts it by itself, the card saying
by how much and how sure; the kill switch turns its flags off. Signals come from
`SimulatedSources`, the demo's stand-in for CI, the crash reporter and the bug tracker; the branch
cuts and flags go to the repository's contract fakes of GitHub and Unleash; everything else is the
real engine.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conductor.bootstrap import conductor as wire
from conductor.clock import ManualClock
from conductor.config import PACKAGE_DEFINITIONS, Settings
from conductor.console import print_decision, print_timeline
from conductor.demo_hands import DemoHands
from conductor.domain.kinds import AuditKind
from conductor.facade import Conductor
from conductor.service import Actor

TRACK = "music-android"
RELEASE_MANAGER = Actor("maria.rm", "release_manager")
STEP = timedelta(hours=1)
MAX_SIM = timedelta(days=21)


@dataclass
class Profile:
    """How a simulated release behaves in each ring: crash-free % per stage."""

    crash_free: dict[str, float]
    anr: float = 0.21
    sha: str = "a1b2c3d4e5f6"
    reported: set[str] = field(default_factory=set)


class SimulatedSources:
    """The demo's CI, crash reporter, bug tracker and team sign-offs, reporting once per hour."""

    def __init__(self, conductor: Conductor, clock: ManualClock, seed: int):
        self.c, self.clock, self.rng = conductor, clock, random.Random(seed)
        self.users: dict[int, int] = {}

    def report(self, rid: int, stage: str, entered: datetime, profile: Profile) -> None:
        hours_in = (self.clock.now - entered).total_seconds() / 3600
        c = self.c
        if stage in ("branch", "nightly", "alpha", "beta") and f"ci:{stage}" not in profile.reported and hours_in >= 1:
            profile.reported.add(f"ci:{stage}")
            c.record_signal(rid, "build_green", True, source="github-actions", sha=profile.sha, evaluate=False)
            c.record_signal(rid, "tests_pass_rate", 1.0, samples=1843, source="junit", sha=profile.sha, evaluate=False)
            c.record_signal(rid, "tests_failed", 0, source="junit", sha=profile.sha, evaluate=False)
        if stage not in ("trunk", "branch") and int(hours_in) % 6 == 1:
            c.record_signal(rid, "open_blockers", 0, source="jira", evaluate=False)
        if stage in profile.crash_free and hours_in >= 3:
            self.users[rid] = self.users.get(rid, 0) + self.rng.randint(600, 900)
            base = profile.crash_free[stage]
            value = round(base + self.rng.uniform(-0.02, 0.02), 2)
            c.record_signal(rid, "crash_free_sessions", value, samples=self.users[rid] * 3, source="crashlytics", evaluate=False)
            c.record_signal(rid, "anr_rate", profile.anr, samples=self.users[rid] * 3, source="play-vitals", evaluate=False)
            c.record_signal(rid, "active_users", self.users[rid], source="analytics", evaluate=False)
        if stage == "beta":
            for i, team in enumerate(("playback", "search", "payments", "growth")):
                if hours_in >= 4 + 6 * i and f"so:{team}" not in profile.reported:
                    profile.reported.add(f"so:{team}")
                    c.sign_off(rid, team, Actor(f"{team}-lead", "team"), reason="regression suite done")


SHOWN_ACTIONS = ("cut_branch", "kill_switch", "tag_release")


def _stage_bar(order: list[str], stage: str, halted: bool) -> Text:
    t = Text()
    reached = order.index(stage) if stage in order else -1
    for i, s in enumerate(order):
        style = "bold green" if i < reached else ("bold reverse yellow" if i == reached else "bright_black")
        t.append(f" {s} ", style=style)
    if halted:
        t.append(" HALTED ", style="bold reverse red")
    return t


DONE = ("released", "halted", "cancelled")
NARRATED = (AuditKind.TRANSITIONED, AuditKind.HALTED, AuditKind.APPROVAL_REQUESTED, AuditKind.APPROVED, AuditKind.RESUMED)
APPROVAL_REASON = "first release on this track: nothing to compare with yet; the numbers look normal for a release"
B_STARTS_AFTER = timedelta(days=7)  # next week's train


class Scenario:
    """Two weekly releases, their simulated sources and the scripted release manager, an hour at a time.

    A (8.8.0) is the track's first release: with no earlier release to compare its crash and ANR
    rates with, the compare gates cannot decide, and the robot asks a release manager at each ring.
    B (8.9.0), a week later, is judged against A, ring by ring, and in its 1 % store rollout against
    A in production: its crash-free rate is 0.6 percentage points worse, and the robot halts it
    by itself once it is 99 % sure the regression is beyond the 0.25 pp that matters."""

    def __init__(self, c: Conductor, clock: ManualClock, seed: int, hands: DemoHands | None = None, runtime: Any = None):
        self.c, self.clock, self.hands, self.runtime = c, clock, hands, runtime
        c.ensure_track(TRACK, "mobile_weekly", repository="spotify/music-android")
        if hands is not None:
            from conductor.service.tracks import connect

            for key, connection in hands.connections().items():
                connect(c, TRACK, Actor("demo-admin", "admin"), key, connection)
        self.seen_actions: set[int] = set()
        self.a = c.start_release(TRACK, "8.8.0", RELEASE_MANAGER)
        self.b: int | None = None
        self.b_starts = clock.now + B_STARTS_AFTER
        self.profiles = {self.a: Profile({"alpha": 99.71, "beta": 99.69, "rollout_1": 99.78, "rollout_100": 99.80}, sha="9f8e7d6c5b4a")}
        self.sources = SimulatedSources(c, clock, seed)
        self.order = c.snapshot(self.a).pipeline.stage_order()
        self.seen_audit = {self.a: 0}
        self.cards_shown = 0
        self.halt_shown: set[int] = set()

    def releases(self) -> list[int]:
        return [self.a] + ([self.b] if self.b is not None else [])

    def _start_b(self) -> None:
        if self.b is None and self.clock.now >= self.b_starts:
            self.b = self.c.start_release(TRACK, "8.9.0", RELEASE_MANAGER)
            self.profiles[self.b] = Profile({"alpha": 99.70, "beta": 99.69, "rollout_1": 99.20, "rollout_100": 99.7}, sha="1234abcd5678")
            self.seen_audit[self.b] = 0

    def _narrate_actions(self, console: Console, snap: Any) -> None:
        """The robot's hands at work: the branch cut, the kill switch (done, failed or skipped, and why)."""
        for o in snap.outbox:
            if o.action in SHOWN_ACTIONS and o.status in ("done", "failed", "skipped") and o.id not in self.seen_actions:
                self.seen_actions.add(o.id)
                detail = (o.result or {}).get("detail") or o.last_error or ""
                at = o.done_at or self.clock.now
                console.print(Text(f"{at:%a %H:%M}  {snap.key:22} {o.action + ' ' + o.status:18} {detail[:90]}", style="cyan"))

    def board(self) -> Group:
        t = Table(title=f"simulated time {self.clock.now:%a %d %b %H:%M} UTC")
        for col in ("release", "stages", "status", "waiting for"):
            t.add_column(col)
        for rid in self.releases():
            snap = self.c.snapshot(rid)
            bar = _stage_bar(self.order, snap.release.halted_from or snap.release.stage, snap.status == "halted")
            t.add_row(Text(snap.key), bar, snap.status, Text(snap.waiting_for[:70]))
        return Group(t)

    def finished(self) -> bool:
        return self.b is not None and all(self.c.snapshot(rid).status in DONE for rid in self.releases())

    def hour(self, console: Console) -> None:
        """One simulated hour: the sources report, the robot judges, timers fire, the release manager answers."""
        self.clock.advance(STEP)
        self._start_b()
        for rid in self.releases():
            snap = self.c.snapshot(rid)
            if snap.status not in DONE:
                self.sources.report(rid, snap.release.stage, snap.release.entered_stage_at, self.profiles[rid])
                self.c.evaluate(rid, trigger="demo_poll")
        self.c.tick()
        if self.runtime is not None:
            from conductor.service.jobs import relay_outbox

            relay_outbox(self.runtime)  # the actions the hour queued: branch cut, kill switch, ...
        for rid in self.releases():
            snap = self.c.snapshot(rid)
            self._narrate_actions(console, snap)
            for entry in snap.audit[self.seen_audit[rid] :]:
                if entry.kind in NARRATED:
                    arrow = f"{entry.from_stage} -> {entry.to_stage}" if entry.to_stage else entry.from_stage
                    console.print(Text(f"{entry.at:%a %H:%M}  {snap.key:22} {entry.kind:18} {arrow}  {entry.reason[:60]}"))
            self.seen_audit[rid] = len(snap.audit)
            if snap.pending is not None:
                if self.cards_shown == 0:
                    console.print(f"\n[bold yellow]{snap.key} paused for approval[/]; the decision card:")
                    print_decision(console, snap.pending)
                self.cards_shown += 1
                console.print(Text(f"{RELEASE_MANAGER.name} approves decision {snap.pending.id} of {snap.key}: {APPROVAL_REASON}"))
                self.c.approve(rid, RELEASE_MANAGER, APPROVAL_REASON, evaluation_id=snap.pending.id, fingerprint=snap.pending.fingerprint)
            if snap.status == "halted" and snap.latest is not None and rid not in self.halt_shown:
                self.halt_shown.add(rid)
                console.print(f"\n[bold red]{snap.key} halted by the robot[/]; the decision card says by how much and how sure:")
                print_decision(console, snap.latest)


def run_demo(console: Console, speed: float = 60.0, seed: int = 7, workdir: Path | None = None) -> int:
    """Run the scenario; returns the exit code (0 when both releases end where the script expects)."""
    from conductor.logging import configure_logging

    started = time.monotonic()
    tmp = workdir or _fresh_demo_dir()
    log_path = tmp / "conductor.log"
    configure_logging("json", "INFO", stream=log_path.open("a"))
    url = f"sqlite:///{tmp / 'demo.db'}"
    # A Monday 08:00 UTC three weeks back, so the story (about 17 days) has ended by now and the
    # dashboard shows it as history; branch day is Friday 10:00 Europe/Stockholm.
    today = datetime.now(UTC).date()
    monday = today - timedelta(days=today.weekday() + 21)
    clock = ManualClock(datetime(monday.year, monday.month, monday.day, 8, 0, tzinfo=UTC))
    settings = Settings(database_url=url, definitions_dir=PACKAGE_DEFINITIONS, broker_url=None)
    c = wire(settings, clock=clock)
    from conductor.bootstrap import build

    hands = DemoHands.start()
    app = build(settings, mode="inline", context=c)
    scenario = Scenario(c, clock, seed, hands, app.runtime)
    console.print(f"[bold]Conductor demo[/]: database {url}, logs {log_path}")
    if hands is None:
        console.print("(no tests/fakes here: the branch cut and the kill switch are skipped; run make demo from a checkout to see them)")
    else:
        console.print(f"GitHub and Unleash: the repository's contract fakes at {hands.server.url}; kill switch {hands.flags()}")
    console.print("Release A = music-android/8.8.0, the track's first (nothing to compare with: the robot asks at each ring);")
    console.print("release B = music-android/8.9.0 a week later (0.6 pp worse crash-free at 1%: the statistical gate halts it)\n")
    end = clock.now + MAX_SIM
    with Live(scenario.board(), console=console, refresh_per_second=8, transient=False) as live:
        while clock.now < end and not scenario.finished():
            scenario.hour(live.console)
            live.update(scenario.board())
            if speed > 0:
                time.sleep(1.0 / speed)
    final = {rid: c.snapshot(rid) for rid in scenario.releases()}
    from conductor.service.digest import digest

    console.print("\n[bold]The morning digest[/] (sent to Slack at 09:00 on working days; here the last 24 hours):")
    console.print(Text(digest(c, TRACK, clock.now - timedelta(days=1), clock.now).text()))
    if hands is not None:
        console.print(Text(f"\nAt GitHub: branches {', '.join(sorted(r.removeprefix('heads/') for r in hands.github.refs))}; "
                           f"at Unleash: {hands.flags()}"))  # fmt: skip
        hands.close()
    app.runtime.adapters.close()
    console.print()
    for snap in final.values():
        print_timeline(console, snap)
    a = final[scenario.a].release
    b = final[scenario.b].release if scenario.b is not None else a
    ok = a.stage == "released" and b.stage == "halted"
    console.print(
        f"\nA: {a.stage}, B: {b.stage} (halted from {b.halted_from}); "
        f"{'as scripted' if ok else 'NOT as scripted'}; {time.monotonic() - started:.1f}s real time"
    )
    _next_steps(console, url)
    return 0 if ok else 1


def demo_dir() -> Path:
    """Where the demo keeps its database and logs (the user cache directory)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("conductor")) / "demo"


def _fresh_demo_dir() -> Path:
    """The demo's one directory (database and logs), emptied at each run: nothing piles up in /tmp."""
    import shutil

    path = demo_dir()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _next_steps(console: Console, url: str) -> None:
    import sys

    # As the user would type it: `make demo` runs .venv/bin/conductor, which is not on PATH.
    prog = sys.argv[0] if Path(sys.argv[0]).name == "conductor" else "conductor"
    console.print("\n[bold]What to try next[/]")
    for line in (
        f"  look at it in the dashboard:  {prog} demo --serve   (runs it again, then serves its database with a token)",
        f"                                or CONDUCTOR_DATABASE_URL={url} {prog} serve",
        f"  try another definition on it: CONDUCTOR_DATABASE_URL={url} {prog} replay --definition my.yaml",
        "  walk a release yourself:      the 5-minute tour in README.md (the `trial` pipeline)",
    ):
        console.print(Text(line))
