"""`ReleaseStep`: the unit of work on one locked release.

A step holds, as plain fields, everything a use case needs to change one release: the connection
of the open transaction and its buffered writes, the locked release row (read together with its
track's settings and its last evaluation), its pinned pipeline and the clock, the inbound event
being applied (if any), the version the caller expects (checked when the row is locked) and the
outbox actions the step queued. Every write a use case makes goes through the step's methods:
signals, evaluations, the stage change, audit rows, timers and the outbox. The release row itself
is written once, by `save`, when the step ends.

    with open_step(ctx, "music-android/9.1.0", expected_version=7) as step:
        ...                                   # read and change step.release, call the domain
    # committed here; step.queued holds the idempotency keys of the actions it handed off

Use cases never commit on their own: `open_step` commits when the block ends and rolls back
everything if it raises. The writes wait in `step.writes` until then and leave with the COMMIT
(conductor.store.writes); only a new evaluation is inserted at once, because its id is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection
from statemachine.exceptions import TransitionNotAllowed

from conductor.actions.cdevents import EMITTED
from conductor.clock import Clock
from conductor.context import Context
from conductor.domain.definition import CompareGate, Pipeline
from conductor.domain.errors import ConcurrentUpdate, IllegalTransition, NotFound
from conductor.domain.gates import Baseline, GateContext, SignalValue, Signoff
from conductor.domain.kinds import ROBOT, SIGNOFF_PREFIX, AnswerVerdict, AuditKind, TimerKind
from conductor.machines import machine_for
from conductor.store.releases import ReleaseRecord, StaleRelease, lock_releases, records, release_filter, save, update_statement
from conductor.store.statements import (
    BASELINE_IN_PRODUCTION,
    BASELINE_IN_RING,
    INSERT_APPROVAL,
    INSERT_AUDIT,
    INSERT_EVALUATION,
    INSERT_SIGNAL,
    LATEST_SIGNALS,
    LATEST_SIGNALS_OF,
    OUTBOX,
    OUTBOX_IDS_BY_KEY,
    RETIRE_STAGE_TIMERS,
    TIMERS,
    insert_unless_present,
)
from conductor.store.writes import Writes

log = structlog.get_logger("conductor.service")


@dataclass(frozen=True)
class Actor:
    """Who acts: a token's name and role, a CI source, or the robot itself. `identities` are the
    VCS logins and emails the holder commits as (declared on the token; four-eyes compares them)."""

    name: str
    role: str = "release_manager"
    identities: frozenset[str] = frozenset()

    def authored(self, commit: dict[str, Any]) -> bool:
        """Whether a recorded commit is this actor's: its author login or email is the actor's
        name or one of its identities (compared case-insensitively, as GitHub compares logins)."""
        mine = {self.name.casefold(), *(i.casefold() for i in self.identities)}
        return any(isinstance(v, str) and v.casefold() in mine for v in (commit.get("author"), commit.get("email")))


ROBOT_ACTOR = Actor(ROBOT, "robot")


@dataclass(frozen=True)
class EvaluationRef:
    """A stored evaluation as the hot path needs it: its id, stage, the question it put
    (fingerprint) and the digest of its evidence (not the evidence)."""

    id: int
    stage: str
    fingerprint: str
    digest: str | None = None


# Rows written by this step have no id yet (they leave with the commit); they sort after every
# stored row of the same observed time, in the order written.
_UNSTORED = 1 << 62


@dataclass(frozen=True)
class LatestSignal:
    """The newest stored row of one signal name (what a gate judges)."""

    id: int
    name: str
    value: float | None
    observed_at: datetime
    source: str
    samples: int | None
    sha: str | None
    error: str | None
    actor: str | None
    events: int | None = None
    runs: int = 1


@dataclass(eq=False)
class ReleaseStep:
    """One locked release inside one open transaction (see the module docstring)."""

    conn: Connection
    release: ReleaseRecord
    pipeline: Pipeline
    clock: Clock
    event_id: int | None = None
    # With a lease, queued actions are written already leased (due when it runs out) and handed to
    # the caller (`queued`, their idempotency keys), which sends them right after the commit; the
    # periodic relay picks them up only if that caller dies first. Without one they are due at
    # once, for the relay.
    lease: timedelta | None = None
    queued: list[str] = field(default_factory=list)
    # Shared by the steps of one transaction (a batch of events); committed by its owner.
    writes: Writes | None = None
    # The latest signal of each name, read once and kept current by the step's own writes, and
    # the last evaluation (read with the row): it holds the release's lock, so nobody else writes
    # them meanwhile.
    _latest: dict[str, LatestSignal] | None = field(default=None, repr=False)
    _last_evaluation: EvaluationRef | None = field(default=None, repr=False)
    _written: int = field(default=0, repr=False)
    _baselines: tuple[tuple[str, datetime], dict[str, Baseline]] | None = field(default=None, repr=False)
    left: list[str] = field(default_factory=list)  # stages left in this step (their timers are retired)

    def __post_init__(self) -> None:
        if self.writes is None:
            self.writes = Writes(self.conn)
        r = self.release
        if r.last_evaluation_id is not None and r.last_evaluation_stage is not None and r.last_evaluation_fingerprint is not None:
            self._last_evaluation = EvaluationRef(
                r.last_evaluation_id, r.last_evaluation_stage, r.last_evaluation_fingerprint, r.last_evaluation_digest
            )

    @property
    def buffer(self) -> Writes:
        assert self.writes is not None
        return self.writes

    def now(self) -> datetime:
        return self.clock()

    # ------------------------------------------------------------------ writes

    def audit(
        self,
        kind: AuditKind,
        actor: str,
        reason: str = "",
        *,
        from_stage: str | None = None,
        to_stage: str | None = None,
        evaluation_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit row naming the release and the inbound event being applied."""
        r = self.release
        self.buffer.add(INSERT_AUDIT, {
            "release_id": r.id, "track_id": None, "at": self.now(), "actor": actor, "kind": kind.value,
            "from_stage": from_stage, "to_stage": to_stage, "reason": reason, "evaluation_id": evaluation_id,
            "event_id": self.event_id, "data": data or {},
        })  # fmt: skip
        log.info(kind.value, release_id=r.id, release=r.key, actor=actor, from_stage=from_stage, to_stage=to_stage, reason=reason)
        self._emit(kind, actor, reason, from_stage, to_stage)

    def _emit(self, kind: AuditKind, actor: str, reason: str, from_stage: str | None, to_stage: str | None) -> None:
        """A fact the track's CDEvents sink hears about (conductor.actions.cdevents), through the outbox."""
        if kind.value not in EMITTED or not (self.release.track_settings or {}).get("cdevents"):
            return
        now = self.now()
        rollout = to_stage is not None and to_stage in self.pipeline.stages and self.pipeline.stages[to_stage].kind in ("rollout", "final")
        self.queue_action(f"cde:{kind.value}:{from_stage}:{to_stage}:{now.isoformat()}:{self._written}", "emit_cdevent", {
            "fact": kind.value, "from": from_stage, "to": to_stage, "actor": actor, "reason": reason[:500], "at": now.isoformat(),
            "rollout": rollout,
        })  # fmt: skip

    def queue_action(self, key: str, action: str, params: dict[str, Any]) -> None:
        """Queue an outbox action; its idempotency key makes a repeated step queue it once."""
        now = self.now()
        idempotency_key = f"{self.release.id}:{key}:{action}"
        self.buffer.add(insert_unless_present(self.conn.dialect.name, OUTBOX, ("idempotency_key",)), {
            "release_id": self.release.id, "idempotency_key": idempotency_key, "action": action,
            "params": {"release": self.release.key, **params}, "created_at": now,
            "next_attempt_at": now + self.lease if self.lease is not None else now,
        })  # fmt: skip
        if self.lease is not None:
            self.queued.append(idempotency_key)

    def arm_timer(self, kind: TimerKind, due: datetime, payload: dict[str, Any] | None = None, *, tag: str = "") -> None:
        """A durable wait for this stage visit; re-arming the same one (same key) is a no-op."""
        r = self.release
        self.buffer.add(insert_unless_present(self.conn.dialect.name, TIMERS, ("key",)), {
            "release_id": r.id, "key": f"{r.id}:{r.stage}:{kind.value}:{due.isoformat()}:{tag}", "kind": kind.value,
            "due_at": due, "fired_at": None, "payload": payload or {},
        })  # fmt: skip

    def move(self, event: str) -> tuple[str, str]:
        """Send `event` (advance, halt, resume, cancel) to the release's machine; (from, to) stages.

        The timers of the stage left behind are retired. IllegalTransition if the stage has no
        such edge."""
        r = self.release
        before = r.stage
        try:
            machine_for(self.pipeline, r, content_hash=r.definition_hash).send(event)
        except TransitionNotAllowed:
            raise IllegalTransition(f"release {r.key} cannot {event} from stage {before!r}") from None
        self.buffer.add(RETIRE_STAGE_TIMERS, {"b_release_id": r.id, "prefix": f"{r.id}:{before}:%", "now": self.now()})
        self.left.append(before)
        r.entered_stage_at = r.updated_at = self.now()
        return before, r.stage

    def touch(self) -> None:
        self.release.updated_at = self.now()

    def add_signal(
        self,
        name: str,
        value: float | None,
        *,
        actor: str,
        source: str,
        samples: int | None = None,
        observed_at: datetime | None = None,
        sha: str | None = None,
        error: str | None = None,
        events: int | None = None,
    ) -> None:
        """Store one value (already checked against its declaration) and keep the latest current."""
        latest = self.latest_signals()  # read before the write waits in the buffer, never after
        now = self.now()
        observed = observed_at or now
        self.buffer.add(INSERT_SIGNAL, {
            "release_id": self.release.id, "name": name, "value": value, "samples": samples, "events": events, "source": source,
            "sha": sha, "error": error, "actor": actor, "event_id": self.event_id, "observed_at": observed, "recorded_at": now,
            "stage": self.release.stage,
        })  # fmt: skip
        self._written += 1
        old = latest.get(name)
        runs = old.runs + 1 if old is not None and sha is not None and old.sha == sha else 1
        # The latest is the newest observation, the newest row among equals (as LATEST_SIGNALS orders).
        if old is None or observed >= old.observed_at:
            latest[name] = LatestSignal(_UNSTORED + self._written, name, value, observed, source, samples, sha, error, actor, events, runs)

    def add_evaluation(
        self, transition: str, verdict: str, fingerprint: str, evidence: dict[str, Any], trigger: str, digest: str | None = None
    ) -> EvaluationRef:
        """Store a judgement with its evidence, at once (its id goes into what follows); it becomes
        the step's last evaluation."""
        r = self.release
        new_id = self.conn.execute(INSERT_EVALUATION, {
            "release_id": r.id, "stage": r.stage, "transition": transition, "verdict": verdict, "fingerprint": fingerprint,
            "digest": digest, "evidence": evidence, "trigger": trigger, "created_at": self.now(),
        }).scalar_one()  # fmt: skip
        self._last_evaluation = EvaluationRef(new_id, r.stage, fingerprint, digest)
        return self._last_evaluation

    def add_answer(self, verdict: AnswerVerdict, actor: Actor, reason: str, evaluation: EvaluationRef | None) -> None:
        """Store a release manager's answer (approve, reject, resume) and what it answered."""
        self.buffer.add(INSERT_APPROVAL, {
            "release_id": self.release.id, "evaluation_id": evaluation.id if evaluation else None,
            "fingerprint": evaluation.fingerprint if evaluation else None, "verdict": verdict.value, "actor": actor.name,
            "role": actor.role, "reason": reason, "created_at": self.now(),
        })  # fmt: skip

    def save(self) -> None:
        """Write the release row if it changed (with the buffered writes when the row is locked);
        ConcurrentUpdate if a row read without its lock was changed by someone else first."""
        if self.release.locked:
            update = update_statement(self.release)
            if update is not None:
                self.buffer.add(*update)
            return
        try:
            save(self.conn, self.release)
        except StaleRelease:
            raise ConcurrentUpdate("the release changed while this step ran; retry") from None

    # ------------------------------------------------------------------ reads

    def latest_signals(self) -> dict[str, LatestSignal]:
        if self._latest is None:
            rows = self.conn.execute(LATEST_SIGNALS, {"release_id": self.release.id})
            self._latest = {row.name: _latest(row) for row in rows}
        return self._latest

    def last_evaluation(self) -> EvaluationRef | None:
        return self._last_evaluation

    def gate_context(self) -> GateContext:
        """What the gates judge: the latest value of each signal, each team's latest sign-off, and
        for compare gates the baseline release's value."""
        signals: dict[str, SignalValue] = {}
        signoffs: dict[str, Signoff] = {}
        for r in sorted(self.latest_signals().values(), key=lambda r: (r.observed_at, r.id)):
            if r.name.startswith(SIGNOFF_PREFIX):
                team = r.name.removeprefix(SIGNOFF_PREFIX)
                signoffs[team] = Signoff(team, r.value == 1.0, r.actor or "?", r.observed_at)
            else:
                signals[r.name] = SignalValue(r.name, r.value, r.observed_at, r.source, r.samples, r.sha, r.error, r.events, r.runs)
        rel = self.release
        return GateContext(self.now(), rel.entered_stage_at, rel.head_sha, signals, signoffs, self.baselines())

    def baselines(self) -> dict[str, Baseline]:
        """The baselines the compare gates of the outgoing transition read, by signal (read once per
        stage visit: the previous release's values do not move while this one is judged)."""
        r = self.release
        key = (r.stage, r.entered_stage_at)
        if self._baselines is not None and self._baselines[0] == key:
            return self._baselines[1]
        transition = self.pipeline.advance_from(r.stage)
        found: dict[str, Baseline] = {}
        for name in transition.gates if transition else ():
            gate = self.pipeline.gates[name]
            if isinstance(gate, CompareGate) and gate.signal not in found:
                baseline = self._baseline(gate)
                if baseline is not None:
                    found[gate.signal] = baseline
        self._baselines = (key, found)
        return found

    def _baseline(self, gate: CompareGate) -> Baseline | None:
        r = self.release
        if gate.baseline == "previous":
            stopped = [s for s in (self.pipeline.halt_stage, self.pipeline.cancel_stage) if s is not None]
            params: dict[str, Any] = {"name": gate.signal, "stage": r.stage, "track_id": r.track_id, "release_id": r.id, "stopped": stopped}
            row = self.conn.execute(BASELINE_IN_RING, params).first()
        else:
            stages = [s for s, st in self.pipeline.stages.items() if st.kind in ("rollout", "final")]
            params = {"name": gate.signal, "track_id": r.track_id, "release_id": r.id, "stages": stages}
            row = self.conn.execute(BASELINE_IN_PRODUCTION, params).first()
        if row is None:
            return None
        value = SignalValue(row.name, row.value, row.observed_at, row.source, row.samples, row.sha, None, row.events)
        return Baseline(f"{row.track_id}/{row.version}", value)


def _latest(row: Any) -> LatestSignal:
    return LatestSignal(row.id, row.name, row.value, row.observed_at, row.source, row.samples, row.sha, row.error, row.actor,
                        row.events, row.runs)  # fmt: skip


def preload_signals(conn: Connection, steps: list[ReleaseStep]) -> None:
    """Read the latest signals of several steps' releases in one statement (a batch, a tick)."""
    todo = {step.release.id: step for step in steps if step._latest is None}
    if not todo:
        return
    for step in todo.values():
        step._latest = {}
    for row in conn.execute(LATEST_SIGNALS_OF, {"release_ids": list(todo)}):
        todo[row.release_id]._latest[row.name] = _latest(row)  # type: ignore[index]


def lock_one(conn: Connection, ref: int | str, *, lock: bool = True) -> ReleaseRecord:
    """The release (by id or 'track/version'), row-locked until the transaction ends unless told
    not to; NotFound otherwise."""
    named = release_filter(ref)
    if named is None:
        raise NotFound(f"unknown release {ref!r}; use its id or TRACK/VERSION")
    by, params = named
    found = records(conn, lock_releases(by, lock=lock), params, locked=lock)
    if not found:
        raise NotFound(f"unknown release {ref!r}")
    return found[0]


@contextmanager
def open_step(
    ctx: Context,
    ref: int | str,
    *,
    expected_version: int | None = None,
    event_id: int | None = None,
    lease: timedelta | None = None,
) -> Iterator[ReleaseStep]:
    """Begin a transaction, lock the release and yield its step; save and commit when the block ends.

    ConcurrentUpdate when `expected_version` is given and the release is at another version (the
    caller based its write on a state that moved on)."""
    with ctx.db.begin() as conn:
        release = lock_one(conn, ref)
        if expected_version is not None and release.version_id != expected_version:
            raise ConcurrentUpdate(f"release {release.key} is at version {release.version_id}, not {expected_version}; reload it and retry")
        step = ReleaseStep(conn, release, ctx.pinned(conn, release.definition_hash), ctx.clock, event_id=event_id, lease=lease)
        yield step
        step.save()
        step.buffer.commit()


def handed_off(ctx: Context, keys: list[str]) -> list[int]:
    """The ids of the outbox rows a committed step handed off (their idempotency keys), still pending."""
    if not keys:
        return []
    with ctx.db.autocommit() as conn:  # one statement: no BEGIN, no ROLLBACK
        return list(conn.scalars(OUTBOX_IDS_BY_KEY, {"keys": keys}))
