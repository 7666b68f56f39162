"""Use cases: start a release, record signals and sign-offs, evaluate, approve, pause, tick.

Each public method is one unit of work: it locks the release row, rebuilds the release's
machine from its pinned definition, applies the step, and commits the new state, the audit
entries, the evaluation evidence, the outbox actions and the timers together. Calling any of
them twice with the same input changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from statemachine.exceptions import TransitionNotAllowed

from conductor.clock import Clock, system_clock
from conductor.domain.decisions import Decision, Verdict, decide, unapproved_change_result
from conductor.domain.definition import Pipeline, SignalType
from conductor.domain.gates import GateContext, SignalValue, Signoff
from conductor.domain.loader import DefinitionCatalog, pipeline_from_json
from conductor.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    ConductorError,
    Forbidden,
    IllegalTransition,
    InvalidSignal,
    NotFound,
    NotPaused,
    StaleApproval,
)
from conductor.machines import machine_for
from conductor.store.db import Database
from conductor.store.models import (
    Approval,
    AuditEntry,
    DefinitionRow,
    Evaluation,
    OutboxAction,
    Release,
    Timer,
    Track,
)
from conductor.store.statements import (
    INSERT_AUDIT,
    INSERT_EVALUATION,
    INSERT_SIGNAL,
    LAST_EVALUATION,
    LATEST_SIGNALS,
    OUTBOX,
    RETIRE_STAGE_TIMERS,
    TIMERS,
    insert_if_new,
    insert_new_id,
)

log = structlog.get_logger("conductor.service")

ROBOT = "conductor"
# The inbound event being applied, so every audit row of that step names it.
current_event_id: ContextVar[int | None] = ContextVar("current_event_id", default=None)
# The release version (version_id) a client last saw (HTTP If-Match); a locked write on a newer row is refused.
expected_version: ContextVar[int | None] = ContextVar("expected_version", default=None)


@dataclass
class ActionHandOff:
    """The outbox rows a step queued, for whoever sends them right after its commit (a worker job).

    Rows queued under a hand-off are written already leased (next_attempt_at = now + lease), so the
    periodic relay leaves them to the job, which sends their ids without another transaction; if
    the job dies between the commit and the send, the relay picks them up when the lease runs out.
    Ids of a step that rolled back are dropped (_commit_guard)."""

    lease: timedelta
    ids: list[int] = field(default_factory=list)


queued_actions: ContextVar[ActionHandOff | None] = ContextVar("queued_actions", default=None)
# A chain of passing transitions with zero soak is followed within one step, up to this many.
MAX_STEPS_PER_EVALUATION = 20


@dataclass(frozen=True)
class EvaluationRef:
    """The stored evaluation a step acts on (what an Evaluation row is to the hot path)."""

    id: int
    fingerprint: str


@dataclass(frozen=True)
class Actor:
    name: str
    role: str = "release_manager"


ROBOT_ACTOR = Actor(ROBOT, "robot")


def _check_signal_value(name: str, kind: SignalType, value: Any) -> float:
    """The value as float if it fits the declared type, else InvalidSignal naming both."""
    if isinstance(value, bool):
        if kind == "boolean":
            return 1.0 if value else 0.0
        raise InvalidSignal(f"signal {name!r} is a {kind}, got a boolean")
    if isinstance(value, str):
        text = value.strip().lower()
        if kind == "boolean" and text in ("true", "false", "pass", "fail", "1", "0"):
            return 1.0 if text in ("true", "pass", "1") else 0.0
        try:
            value = float(text)
        except ValueError:
            raise InvalidSignal(f"signal {name!r} is a {kind}; {value!r} is not a number") from None
    if not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
        raise InvalidSignal(f"signal {name!r} is a {kind}; {value!r} is not a finite number")
    v = float(value)
    if kind == "boolean" and v not in (0.0, 1.0):
        raise InvalidSignal(f"signal {name!r} is a boolean; use 1/0 or true/false, not {value!r}")
    if kind == "count" and (v < 0 or not v.is_integer()):
        raise InvalidSignal(f"signal {name!r} is a count; {value!r} is not a whole number >= 0")
    if kind == "ratio" and not 0.0 <= v <= 1.0:
        raise InvalidSignal(f"signal {name!r} is a ratio; {value!r} is outside 0..1")
    if kind == "percent" and not 0.0 <= v <= 100.0:
        raise InvalidSignal(f"signal {name!r} is a percent; {value!r} is outside 0..100")
    return v


class Conductor:
    """The service layer. Holds no release state: everything is read from and written to `db`."""

    def __init__(self, db: Database, catalog: DefinitionCatalog, clock: Clock = system_clock):
        self.db = db
        self.catalog = catalog
        self.clock = clock
        self._pipelines: dict[str, Pipeline] = {}

    # ------------------------------------------------------------------ helpers

    def now(self) -> datetime:
        return self.clock()

    def pipeline_of(self, session: Session, release: Release) -> Pipeline:
        """The definition the release pinned when it started (not the file as it is today)."""
        p = self._pipelines.get(release.definition_hash)
        if p is None:
            row = session.get(DefinitionRow, release.definition_hash)
            if row is None:
                raise NotFound(f"definition {release.definition_hash[:12]} pinned by {release.key} is missing")
            p = pipeline_from_json(row.body)
            self._pipelines[release.definition_hash] = p
        return p

    def _find(self, session: Session, ref: int | str, lock: bool = False) -> Release:
        """A release by id or 'track/version'; with lock, the row is held until commit."""
        q = select(Release)
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            q = q.where(Release.id == int(ref))
        elif isinstance(ref, str) and "/" in ref:
            track, version = ref.rsplit("/", 1)
            q = q.where(Release.track_id == track, Release.version == version)
        else:
            raise NotFound(f"unknown release {ref!r}; use its id or TRACK/VERSION")
        if lock:
            # populate_existing: a row this session read before taking the lock is refreshed, so
            # the write sees what the lock holder committed (not a stale version -> lost event).
            q = q.with_for_update().execution_options(populate_existing=True)
        release = session.scalars(q).one_or_none()
        if release is None:
            raise NotFound(f"unknown release {ref!r}")
        want = expected_version.get()
        if lock and want is not None and release.version_id != want:
            raise ConcurrentUpdate(f"release {release.key} is at version {release.version_id}, not {want}; reload it and retry")
        return release

    def _audit(
        self,
        session: Session,
        release: Release,
        kind: str,
        actor: str,
        reason: str = "",
        *,
        from_stage: str | None = None,
        to_stage: str | None = None,
        evaluation_id: int | None = None,
        event_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        session.connection().execute(INSERT_AUDIT, {
            "release_id": release.id, "track_id": None, "at": self.now(), "actor": actor, "kind": kind,
            "from_stage": from_stage, "to_stage": to_stage, "reason": reason, "evaluation_id": evaluation_id,
            "event_id": event_id if event_id is not None else current_event_id.get(), "data": data or {},
        })
        log.info(kind, release_id=release.id, release=release.key, actor=actor, from_stage=from_stage, to_stage=to_stage, reason=reason)

    def _outbox(self, session: Session, release: Release, key: str, action: str, params: dict[str, Any]) -> None:
        """Queue an action; the idempotency key makes a repeated step queue it once."""
        idem = f"{release.id}:{key}:{action}"
        now = self.now()
        handoff = queued_actions.get()
        new_id = insert_new_id(session.connection(), OUTBOX, "idempotency_key", {
            "release_id": release.id, "idempotency_key": idem, "action": action,
            "params": {"release": release.key, **params}, "created_at": now,
            "next_attempt_at": now + handoff.lease if handoff is not None else now,
        })
        if new_id is not None and handoff is not None:
            handoff.ids.append(new_id)

    def _timer(self, session: Session, release: Release, kind: str, due: datetime, payload: dict[str, Any] | None = None, *, tag: str = "") -> None:
        """A durable wait; the key (release, stage, kind, due, tag) makes re-arming it a no-op."""
        key = f"{release.id}:{release.stage}:{kind}:{due.isoformat()}:{tag}"
        insert_if_new(session.connection(), TIMERS, "key",
                      {"release_id": release.id, "key": key, "kind": kind, "due_at": due, "fired_at": None, "payload": payload or {}})

    def _send(self, pipeline: Pipeline, release: Release, event: str) -> tuple[str, str]:
        before = release.stage
        try:
            machine_for(pipeline, release, content_hash=release.definition_hash).send(event)
        except TransitionNotAllowed:
            raise IllegalTransition(f"release {release.key} cannot {event} from stage {before!r}") from None
        self._drop_stage_timers(self._session_of(release), release, before)
        release.entered_stage_at = self.now()
        release.updated_at = self.now()
        return before, release.stage

    @staticmethod
    def _session_of(release: Release) -> Session:
        from sqlalchemy.orm import object_session

        session = object_session(release)
        assert session is not None
        return session

    def _drop_stage_timers(self, s: Session, release: Release, stage: str) -> None:
        """Timers belong to a stage visit; leaving the stage retires them (marked fired, never run)."""
        s.connection().execute(RETIRE_STAGE_TIMERS, {"b_release_id": release.id, "prefix": f"{release.id}:{stage}:%", "now": self.now()})

    @contextmanager
    def _commit_guard(self) -> Iterator[Session]:
        """One unit of work; the optimistic-lock error of a concurrent writer becomes ConcurrentUpdate."""
        handoff = queued_actions.get()
        mark = len(handoff.ids) if handoff is not None else 0
        try:
            with self.db.transaction() as s:
                yield s
        except BaseException as exc:
            if handoff is not None:
                del handoff.ids[mark:]  # rolled back: those rows do not exist
            if isinstance(exc, StaleDataError):
                raise ConcurrentUpdate("the release changed while this step ran; retry") from None
            raise

    # ------------------------------------------------------------------ tracks and releases

    def ensure_track(
        self,
        track_id: str,
        definition: str,
        *,
        repository: str | None = None,
        branch_pattern: str = "release/{version}",
        four_eyes: bool = False,
        actor: Actor = ROBOT_ACTOR,
    ) -> Track:
        """The track, created (and audited) through tracks.create_track if it does not exist yet."""
        from conductor.service.tracks import create_track

        with self.db.read() as s:
            track = s.get(Track, track_id)
        if track is None:
            try:
                return create_track(self, track_id, definition, actor, repository=repository,
                                    branch_pattern=branch_pattern, four_eyes=four_eyes)
            except AlreadyExists:  # created concurrently: fall through and check it
                with self.db.read() as s:
                    track = s.get(Track, track_id)
        if track.definition_name != definition:
            raise AlreadyExists(f"track {track_id!r} exists with definition {track.definition_name!r}, not {definition!r}")
        return track

    def start_release(self, track_id: str, version: str, actor: Actor = ROBOT_ACTOR) -> int:
        """Start a release on the track's current definition, pinned by content hash; returns its id."""
        with self._commit_guard() as s:
            track = s.get(Track, track_id)
            if track is None:
                raise NotFound(f"unknown track {track_id!r}; create it with --definition")
            pipeline = self.catalog.get(track.definition_name)
            h = pipeline.content_hash()
            if s.get(DefinitionRow, h) is None:
                s.add(DefinitionRow(hash=h, name=pipeline.name, body=pipeline.model_dump(mode="json", by_alias=True), created_at=self.now()))
            if s.scalar(select(Release.id).where(Release.track_id == track_id, Release.version == version)) is not None:
                raise AlreadyExists(f"release {track_id}/{version} already exists")
            now = self.now()
            release = Release(
                track_id=track_id,
                version=version,
                stage=pipeline.initial_stage,
                definition_hash=h,
                entered_stage_at=now,
                branch=track.branch_pattern.format(version=version),
                created_at=now,
                updated_at=now,
            )
            s.add(release)
            s.flush()
            self._audit(s, release, "release_started", actor.name, f"on {pipeline.name}", to_stage=release.stage, data={"definition_hash": h})
            self._evaluate_locked(s, release, pipeline, trigger="start")
            return release.id

    # ------------------------------------------------------------------ signals

    def record_signal(
        self,
        ref: int | str,
        name: str,
        value: Any,
        *,
        samples: int | None = None,
        source: str = "manual",
        observed_at: datetime | None = None,
        sha: str | None = None,
        error: str | None = None,
        actor: Actor = ROBOT_ACTOR,
        event_id: int | None = None,
        evaluate: bool = True,
    ) -> str | None:
        """Store a signal value (or a source error) and re-evaluate; returns the verdict, if any."""
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            pipeline = self.pipeline_of(s, release)
            self._add_signal(s, release, pipeline, name, value, samples=samples, source=source, observed_at=observed_at, sha=sha, error=error, actor=actor, event_id=event_id)
            if not evaluate:
                return None
            d = self._evaluate_locked(s, release, pipeline, trigger=f"signal:{name}")
            return d.verdict.value if d else None

    def _add_signal(
        self,
        s: Session,
        release: Release,
        pipeline: Pipeline,
        name: str,
        value: Any,
        *,
        samples: int | None = None,
        source: str = "manual",
        observed_at: datetime | None = None,
        sha: str | None = None,
        error: str | None = None,
        actor: Actor = ROBOT_ACTOR,
        event_id: int | None = None,
    ) -> None:
        spec = pipeline.signals.get(name)
        if spec is None:
            raise InvalidSignal(f"unknown signal {name!r} for {release.key}; declared: {', '.join(sorted(pipeline.signals))}")
        v = None if error is not None else _check_signal_value(name, spec.type, value)
        if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 0):
            raise InvalidSignal(f"samples of {name!r} must be a whole number >= 0, got {samples!r}")
        now = self.now()
        self._insert_signal(s, release, {
            "release_id": release.id, "name": name, "value": v, "samples": samples, "source": source, "sha": sha,
            "error": error, "actor": actor.name, "event_id": event_id, "observed_at": observed_at or now, "recorded_at": now,
        })
        log.info("signal_recorded", release_id=release.id, signal=name, value=v, samples=samples, source=source, event_id=event_id)

    def sign_off(self, ref: int | str, team: str, actor: Actor, *, approved: bool = True, reason: str = "") -> str | None:
        """A team's sign-off (or its refusal) for the release; re-evaluates."""
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            pipeline = self.pipeline_of(s, release)
            teams = {t for g in pipeline.gates.values() if g.kind == "signoff" for t in g.teams}
            if team not in teams:
                raise InvalidSignal(f"team {team!r} signs off nothing in {pipeline.name}; teams: {', '.join(sorted(teams)) or 'none'}")
            now = self.now()
            self._insert_signal(s, release, {
                "release_id": release.id, "name": f"signoff.{team}", "value": 1.0 if approved else 0.0, "samples": None,
                "source": "signoff", "sha": None, "error": None, "actor": actor.name, "event_id": None,
                "observed_at": now, "recorded_at": now,
            })
            self._audit(s, release, "signed_off" if approved else "signoff_refused", actor.name, reason or team, data={"team": team})
            d = self._evaluate_locked(s, release, pipeline, trigger=f"signoff:{team}")
            return d.verdict.value if d else None

    # The latest signal of each name and the latest evaluation of a release, read once per
    # transaction and kept up to date by this step's own writes (it holds the release's lock, so
    # nobody else writes them meanwhile): a batch of events or a chain of transitions does not
    # read them again for every evaluation. The cache lives in the session, i.e. one transaction.

    @staticmethod
    def _latest_signals(s: Session, release: Release) -> dict[str, Any]:
        cache = s.info.setdefault("latest_signals", {})
        latest = cache.get(release.id)
        if latest is None:
            latest = cache[release.id] = {r.name: r for r in s.connection().execute(LATEST_SIGNALS, {"release_id": release.id})}
        return latest

    @staticmethod
    def _insert_signal(s: Session, release: Release, values: dict[str, Any]) -> None:
        new_id = s.connection().execute(INSERT_SIGNAL, values).scalar_one()
        latest = s.info.get("latest_signals", {}).get(release.id)
        if latest is not None:
            old = latest.get(values["name"])
            # The latest is the newest observation, the newest row among equals (as LATEST_SIGNALS orders).
            if old is None or values["observed_at"] >= old.observed_at:
                latest[values["name"]] = SimpleNamespace(id=new_id, **values)

    def _context(self, s: Session, release: Release) -> GateContext:
        rows = sorted(self._latest_signals(s, release).values(), key=lambda r: (r.observed_at, r.id))
        signals: dict[str, SignalValue] = {}
        signoffs: dict[str, Signoff] = {}
        for r in rows:
            if r.name.startswith("signoff."):
                team = r.name.removeprefix("signoff.")
                signoffs[team] = Signoff(team, r.value == 1.0, r.actor or "?", r.observed_at)
            else:
                signals[r.name] = SignalValue(r.name, r.value, r.observed_at, r.source, r.samples, r.sha, r.id, r.error)
        return GateContext(self.now(), release.entered_stage_at, release.head_sha, signals, signoffs)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, ref: int | str, trigger: str = "manual") -> Decision | None:
        """Judge the release's outgoing transition now and act on the verdict."""
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            return self._evaluate_locked(s, release, self.pipeline_of(s, release), trigger)

    def _store_evaluation(self, s: Session, release: Release, d: Decision, trigger: str) -> tuple[EvaluationRef, bool]:
        """The stored evaluation for this evidence: the latest one if nothing changed, else a new row."""
        cache = s.info.setdefault("last_evaluation", {})
        if release.id not in cache:
            cache[release.id] = s.connection().execute(LAST_EVALUATION, {"release_id": release.id}).first()
        last = cache[release.id]
        fp = d.fingerprint
        if last is not None and last.fingerprint == fp and last.stage == release.stage:
            return EvaluationRef(last.id, last.fingerprint), False
        ev = self._insert_evaluation(s, release, d.transition, d.verdict.value, fp, d.evidence(), trigger)
        log.info("gates_evaluated", release_id=release.id, stage=release.stage, verdict=d.verdict.value, fingerprint=fp, summary=d.summary)
        return ev, True

    def _insert_evaluation(
        self, s: Session, release: Release, transition: str, verdict: str, fingerprint: str, evidence: dict[str, Any], trigger: str
    ) -> EvaluationRef:
        new_id = s.connection().execute(INSERT_EVALUATION, {
            "release_id": release.id, "stage": release.stage, "transition": transition, "verdict": verdict,
            "fingerprint": fingerprint, "evidence": evidence, "trigger": trigger, "created_at": self.now(),
        }).scalar_one()
        s.info.setdefault("last_evaluation", {})[release.id] = SimpleNamespace(id=new_id, stage=release.stage, fingerprint=fingerprint)
        return EvaluationRef(new_id, fingerprint)

    def _evaluate_locked(self, s: Session, release: Release, pipeline: Pipeline, trigger: str) -> Decision | None:
        last: Decision | None = None
        for _ in range(MAX_STEPS_PER_EVALUATION):
            if release.paused or pipeline.stages[release.stage].kind in ("final", "cancelled", "halted"):
                return last
            d = decide(pipeline, release.stage, self._context(s, release), self._extra_results(s, release))
            if d is None:
                return last
            last = d
            ev, changed = self._store_evaluation(s, release, d, trigger)
            if d.verdict is Verdict.ADVANCE:
                self._advance(s, release, pipeline, ev, ROBOT, "all gates pass")
                continue
            if release.pending_evaluation_id is not None and release.pending_evaluation_id != ev.id:
                # The evidence behind a pending question changed: withdraw it; ASK below re-asks.
                self._audit(s, release, "decision_withdrawn", ROBOT, "evidence changed", evaluation_id=release.pending_evaluation_id)
                release.pending_evaluation_id = None
                release.updated_at = self.now()
            if d.verdict is Verdict.WAIT:
                if d.wait_until is not None:
                    self._timer(s, release, "wait", d.wait_until, {"evaluation_id": ev.id})
            elif d.verdict is Verdict.ASK:
                if release.rejected_fingerprint == ev.fingerprint:
                    return d  # already answered no to exactly this evidence
                if release.pending_evaluation_id != ev.id:
                    release.pending_evaluation_id = ev.id
                    release.updated_at = self.now()
                    self._audit(s, release, "approval_requested", ROBOT, d.summary, evaluation_id=ev.id, from_stage=release.stage, to_stage=d.target)
                    self._outbox(s, release, f"ask:{ev.id}", "notify", {"event": "approval_requested", "summary": d.summary, "evaluation_id": ev.id})
                    self._timer(s, release, "approval_deadline", self.now() + pipeline.approval.deadline, {"evaluation_id": ev.id}, tag=str(ev.id))
            elif d.verdict is Verdict.HOLD:
                if changed:
                    self._audit(s, release, "held", ROBOT, d.summary, evaluation_id=ev.id, from_stage=release.stage)
                    self._outbox(s, release, f"hold:{ev.id}", "notify", {"event": "held", "summary": d.summary})
            elif d.verdict is Verdict.HALT:
                if release.rejected_fingerprint == ev.fingerprint:
                    return d  # a human resumed over exactly this evidence; only new evidence halts again
                self._halt(s, release, pipeline, ROBOT, d.summary, ev.id)
            return d
        return last

    def _advance(self, s: Session, release: Release, pipeline: Pipeline, ev: Evaluation | EvaluationRef, actor: str, reason: str) -> None:
        transition = pipeline.advance_from(release.stage)
        assert transition is not None
        before, after = self._send(pipeline, release, "advance")
        release.pending_evaluation_id = None
        release.rejected_fingerprint = None
        self._audit(s, release, "transitioned", actor, reason, from_stage=before, to_stage=after, evaluation_id=ev.id)
        final_event = "released" if after != pipeline.cancel_stage else "cancelled"
        declared_notify = False
        for i, action in enumerate(transition.actions):
            params = {"stage": after, **action.params}
            if action.action == "notify" and pipeline.is_terminal(after):
                params.setdefault("event", final_event)  # the definition's own notify is the release notice
                declared_notify = True
            self._outbox(s, release, f"{before}->{after}:{ev.id}:{i}", action.action, params)
        if pipeline.is_terminal(after) and not declared_notify:
            self._outbox(s, release, f"done:{after}", "notify", {"event": final_event})

    @staticmethod
    def _extra_results(s: Session, release: Release) -> tuple:
        """Pseudo-gates that come from the release rather than the definition (critical-fix rule)."""
        if not release.unreviewed_commits:
            return ()
        track = s.get(Track, release.track_id)
        marker = track.critical_fix_marker if track else "Release-Fix: critical"
        return (unapproved_change_result(list(release.unreviewed_commits), marker),)

    @staticmethod
    def _check_four_eyes(s: Session, release: Release, ev: Evaluation, actor: Actor) -> None:
        track = s.get(Track, release.track_id)
        if track is None or not track.four_eyes:
            return
        authors = {c.get("author") for c in release.unreviewed_commits} | {
            c.get("author") for g in ev.evidence.get("gates", []) for c in g.get("inputs", {}).get("commits", []) or []
        }
        if actor.name in authors:
            raise Forbidden(f"four-eyes: {actor.name} authored a change behind decision {ev.id} and cannot approve it")

    def _branch_cut(self, s: Session, release: Release, pipeline: Pipeline, actor: Actor, reason: str) -> None:
        """The release branch exists (CI saw it created): leave the initial stage whatever the schedule."""
        transition = pipeline.advance_from(release.stage)
        assert transition is not None
        ev = self._insert_evaluation(
            s, release, transition.name, "advance", "branch-cut",
            {"transition": transition.name, "stage": release.stage, "target": transition.target, "verdict": "advance",
             "summary": reason, "gates": []},
            "branch_created",
        )
        self._advance(s, release, pipeline, ev, actor.name, reason)

    def _halt(self, s: Session, release: Release, pipeline: Pipeline, actor: str, reason: str, evaluation_id: int | None) -> None:
        stage = release.stage
        release.halted_from = stage
        before, after = self._send(pipeline, release, "halt")
        release.pending_evaluation_id = None
        self._audit(s, release, "halted", actor, reason, from_stage=before, to_stage=after, evaluation_id=evaluation_id)
        key = f"halt:{evaluation_id}:{release.updated_at.isoformat()}"
        self._outbox(s, release, key, "halt_rollout", {"stage": stage})
        self._outbox(s, release, key, "notify", {"event": "halted", "summary": reason})

    # ------------------------------------------------------------------ human decisions

    def _pending(self, s: Session, release: Release, evaluation_id: int | None) -> Evaluation:
        if release.pending_evaluation_id is None:
            raise NotPaused(f"release {release.key} is not waiting for approval (stage {release.stage})")
        if evaluation_id is not None and evaluation_id != release.pending_evaluation_id:
            raise StaleApproval(
                f"decision {evaluation_id} of {release.key} was superseded by decision {release.pending_evaluation_id}; review that one"
            )
        ev = s.get(Evaluation, release.pending_evaluation_id)
        assert ev is not None
        return ev

    def approve(
        self, ref: int | str, actor: Actor, reason: str, *, evaluation_id: int | None = None, fingerprint: str | None = None
    ) -> str:
        """Approve the pending decision; StaleApproval if its evidence changed since it was shown."""
        if not reason.strip():
            raise ConductorError("an approval needs a reason")
        try:
            with self._commit_guard() as s:
                release = self._find(s, ref, lock=True)
                pipeline = self.pipeline_of(s, release)
                ev = self._pending(s, release, evaluation_id)
                if fingerprint is not None and fingerprint != ev.fingerprint:
                    raise StaleApproval(f"fingerprint {fingerprint[:12]} does not match decision {ev.id} ({ev.fingerprint[:12]})")
                self._check_four_eyes(s, release, ev, actor)
                now_d = decide(pipeline, release.stage, self._context(s, release), self._extra_results(s, release))
                if now_d is None or now_d.fingerprint != ev.fingerprint:
                    raise StaleApproval(f"the evidence of decision {ev.id} for {release.key} changed since it was shown; review the new one")
                s.add(Approval(release_id=release.id, evaluation_id=ev.id, fingerprint=ev.fingerprint, verdict="approve", actor=actor.name, role=actor.role, reason=reason, created_at=self.now()))
                self._audit(s, release, "approved", actor.name, reason, evaluation_id=ev.id, from_stage=release.stage, to_stage=now_d.target)
                release.unreviewed_commits = []  # the human has seen them in the evidence
                self._advance(s, release, pipeline, ev, actor.name, f"approved: {reason}")
                self._evaluate_locked(s, release, pipeline, trigger="approval")
                return release.stage
        except StaleApproval:
            self.evaluate(ref, trigger="stale_approval")  # surface the new decision for review
            raise

    def reject(self, ref: int | str, actor: Actor, reason: str, *, evaluation_id: int | None = None) -> str:
        """Reject the pending decision: the transition's on_fail applies (hold, or halt in rollout)."""
        if not reason.strip():
            raise ConductorError("a rejection needs a reason")
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            pipeline = self.pipeline_of(s, release)
            ev = self._pending(s, release, evaluation_id)
            s.add(Approval(release_id=release.id, evaluation_id=ev.id, fingerprint=ev.fingerprint, verdict="reject", actor=actor.name, role=actor.role, reason=reason, created_at=self.now()))
            release.pending_evaluation_id = None
            release.rejected_fingerprint = ev.fingerprint
            release.updated_at = self.now()
            self._audit(s, release, "rejected", actor.name, reason, evaluation_id=ev.id, from_stage=release.stage)
            transition = pipeline.advance_from(release.stage)
            if transition is not None and transition.on_fail == "halt":
                self._halt(s, release, pipeline, actor.name, f"rejected: {reason}", ev.id)
            return release.stage

    def pause(self, ref: int | str, actor: Actor, reason: str) -> bool:
        """Stop the robot from advancing this release; False if it was already paused."""
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            pipeline = self.pipeline_of(s, release)
            if pipeline.is_terminal(release.stage):
                raise IllegalTransition(f"release {release.key} is {release.stage}; nothing to pause")
            if release.paused:
                return False
            release.paused, release.pause_reason, release.updated_at = True, reason, self.now()
            self._audit(s, release, "paused", actor.name, reason, from_stage=release.stage)
            return True

    def resume(self, ref: int | str, actor: Actor, reason: str) -> str:
        """Lift a manual pause, or bring a halted release back to the rollout stage it halted in."""
        if not reason.strip():
            raise ConductorError("resuming needs a reason")
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            pipeline = self.pipeline_of(s, release)
            if pipeline.stages[release.stage].kind == "halted":
                s.add(Approval(release_id=release.id, evaluation_id=None, fingerprint=None, verdict="resume", actor=actor.name, role=actor.role, reason=reason, created_at=self.now()))
                before, after = self._send(pipeline, release, "resume")
                release.halted_from = None
                # The human has ruled on the evidence that halted it: do not halt again on exactly that.
                release.rejected_fingerprint = s.scalar(
                    select(Evaluation.fingerprint).where(Evaluation.release_id == release.id).order_by(Evaluation.id.desc()).limit(1)
                )
                self._audit(s, release, "resumed", actor.name, reason, from_stage=before, to_stage=after)
                self._outbox(s, release, f"resume:{release.updated_at.isoformat()}", "resume_rollout", {"stage": after})
            elif release.paused:
                release.paused, release.pause_reason, release.updated_at = False, None, self.now()
                self._audit(s, release, "resumed", actor.name, reason, from_stage=release.stage)
            else:
                raise NotPaused(f"release {release.key} is neither paused nor halted (stage {release.stage})")
            self._evaluate_locked(s, release, pipeline, trigger="resume")
            return release.stage

    def cancel(self, ref: int | str, actor: Actor, reason: str) -> str:
        """Abandon the release from any live stage."""
        if not reason.strip():
            raise ConductorError("cancelling needs a reason")
        with self._commit_guard() as s:
            release = self._find(s, ref, lock=True)
            pipeline = self.pipeline_of(s, release)
            if release.stage == pipeline.cancel_stage:
                return release.stage
            before, after = self._send(pipeline, release, "cancel")
            release.pending_evaluation_id = None
            self._audit(s, release, "cancelled", actor.name, reason, from_stage=before, to_stage=after)
            self._outbox(s, release, "cancelled", "notify", {"event": "cancelled", "summary": reason})
            return release.stage

    # ------------------------------------------------------------------ time

    def tick(self, limit: int = 500) -> int:
        """Fire every timer that is due (each in its own transaction); returns how many fired."""
        now = self.now()
        with self.db.read() as s:
            due = s.execute(
                select(Timer.id, Timer.release_id).where(Timer.fired_at.is_(None), Timer.due_at <= now).order_by(Timer.due_at).limit(limit)
            ).all()
        fired = 0
        for timer_id, release_id in due:
            try:
                fired += self._fire(timer_id, release_id)
            except ConcurrentUpdate:
                log.warning("timer_retry", timer_id=timer_id, release_id=release_id)
        return fired

    def _fire(self, timer_id: int, release_id: int) -> int:
        with self._commit_guard() as s:
            release = self._find(s, release_id, lock=True)
            timer = s.get(Timer, timer_id)
            if timer is None or timer.fired_at is not None:
                return 0  # another worker fired it first
            timer.fired_at = self.now()
            pipeline = self.pipeline_of(s, release)
            log.info("timer_fired", release_id=release.id, timer=timer.kind, due_at=timer.due_at.isoformat())
            if timer.kind == "approval_deadline":
                ev_id = timer.payload.get("evaluation_id")
                if release.pending_evaluation_id == ev_id:
                    policy = pipeline.approval.on_timeout
                    self._audit(s, release, "approval_escalated", ROBOT, f"no answer within {pipeline.approval.deadline}; {policy}", evaluation_id=ev_id)
                    self._outbox(s, release, f"escalate:{ev_id}", "notify", {"event": "approval_escalated", "evaluation_id": ev_id})
                    ev = s.get(Evaluation, ev_id)
                    release.pending_evaluation_id = None
                    release.rejected_fingerprint = ev.fingerprint if ev else None
                    if policy == "cancel":
                        before, after = self._send(pipeline, release, "cancel")
                        self._audit(s, release, "cancelled", ROBOT, "approval deadline passed", from_stage=before, to_stage=after)
                    else:
                        self._audit(s, release, "held", ROBOT, "approval deadline passed", from_stage=release.stage, evaluation_id=ev_id)
                return 1
            self._evaluate_locked(s, release, pipeline, trigger=f"timer:{timer.kind}")
            return 1

    def next_due(self) -> datetime | None:
        with self.db.read() as s:
            return s.scalar(select(func.min(Timer.due_at)).where(Timer.fired_at.is_(None)))

    # ------------------------------------------------------------------ read side

    def release_ids(self) -> list[int]:
        with self.db.read() as s:
            return list(s.scalars(select(Release.id).order_by(Release.id)))

    def snapshot(self, ref: int | str) -> "ReleaseSnapshot":
        """Everything the CLI and API show about one release, read in one session."""
        with self.db.read() as s:
            release = self._find(s, ref)
            pipeline = self.pipeline_of(s, release)
            latest = s.scalars(
                select(Evaluation).where(Evaluation.release_id == release.id).order_by(Evaluation.id.desc()).limit(1)
            ).first()
            pending = s.get(Evaluation, release.pending_evaluation_id) if release.pending_evaluation_id else None
            audit = s.scalars(select(AuditEntry).where(AuditEntry.release_id == release.id).order_by(AuditEntry.id)).all()
            outbox = s.scalars(select(OutboxAction).where(OutboxAction.release_id == release.id).order_by(OutboxAction.id)).all()
            timers = s.scalars(
                select(Timer).where(Timer.release_id == release.id, Timer.fired_at.is_(None)).order_by(Timer.due_at)
            ).all()
            s.expunge_all()
            return ReleaseSnapshot(release, pipeline, latest, pending, list(audit), list(outbox), list(timers))


@dataclass
class ReleaseSnapshot:
    release: Release
    pipeline: Pipeline
    latest: Evaluation | None
    pending: Evaluation | None
    audit: list[AuditEntry]
    outbox: list[OutboxAction]
    timers: list[Timer]

    @property
    def status(self) -> str:
        r, p = self.release, self.pipeline
        kind = p.stages[r.stage].kind
        if kind == "final":
            return "released"
        if kind == "cancelled":
            return "cancelled"
        if kind == "halted":
            return "halted"
        if r.paused:
            return "paused"
        if self.pending is not None:
            return "awaiting_approval"
        if self.latest is not None and self.latest.stage == r.stage:
            return {"wait": "waiting", "hold": "held", "ask": "held", "advance": "advancing"}.get(self.latest.verdict, self.latest.verdict)
        return "waiting"

    @property
    def waiting_for(self) -> str:
        r = self.release
        if r.paused:
            return f"resume (paused: {r.pause_reason})"
        if self.pending is not None:
            return f"approval of decision {self.pending.id}"
        if self.status == "halted":
            return "a release manager to resume or cancel"
        if self.latest is not None and self.latest.stage == r.stage and self.status not in ("released", "cancelled"):
            return self.latest.evidence.get("summary", "")
        return ""

    def gate_lights(self) -> list[tuple[str, str]]:
        ev = self.latest
        if ev is None or ev.stage != self.release.stage:
            t = self.pipeline.advance_from(self.release.stage)
            return [(g, "no_data") for g in (t.gates if t else [])]
        return [(g["gate"], g["outcome"]) for g in ev.evidence.get("gates", [])]

