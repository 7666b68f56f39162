"""Pulled signals: a track's sources polled for its releases, and what they answer recorded.

- `set_sources` validates a track's sources (conductor.sources.pull.config) against its pipeline's
  signals and keeps them in Track.settings (credentials stay references). Audited.
- `poll_sources` (a periodic job: beat, or the embedded runner) first makes sure every release in a
  stage whose outgoing gates read a source's signals has a due row for that source (source_polls),
  then claims the due rows, fetches them in parallel (bounded), and records the readings:
  * a vendor fault is a SOURCE_ERROR signal with its reason (inconclusive, never a pass);
  * a value equal to the last one (same value, samples and events; or the same error) is not new
    evidence: nothing is written, nothing is judged again, nobody is asked again;
  * a value older than the one already stored is ignored;
  * the next poll is due after the source's interval (+-10 % jitter), after a backoff when it
    failed (doubling, at most an hour), and never before a 429's Retry-After.
- `check_sources` runs each source once for a release and returns what it would record, writing
  nothing: the first command after configuring (`conductor sources check`).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import Connection, delete, select

from conductor.context import Context
from conductor.domain.definition import Pipeline
from conductor.domain.errors import ConductorError, DefinitionError, DefinitionProblem, NotFound
from conductor.domain.kinds import AuditKind
from conductor.service.evaluation import judge
from conductor.service.signals import add_signal, audit_intake
from conductor.service.step import Actor, ReleaseStep, open_step
from conductor.sources.pull.base import FetchResult, PullTarget, Reading
from conductor.sources.pull.config import NamedSource, TrackSources, parse_sources
from conductor.store.statements import INSERT_AUDIT, RELEASES, SOURCE_POLLS, TRACKS, insert_unless_present

log = structlog.get_logger("conductor.sources")

SOURCES_KEY = "sources"
SOURCE_ACTOR = Actor("sources", "source")
LEASE = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=1)
REFRESH = timedelta(hours=1)  # an unchanged value is stored again this long after the last one


# ------------------------------------------------------------------ configuration


def track_sources(track_id: str, settings: dict[str, Any] | None) -> TrackSources | None:
    """The track's stored sources (validated again: a stored mapping is trusted no more than a file)."""
    raw = (settings or {}).get(SOURCES_KEY)
    if not raw:
        return None
    try:
        return parse_sources(raw, f"track {track_id} settings.sources")
    except DefinitionError as exc:
        log.error("track_sources_invalid", track=track_id, problems=[str(p) for p in exc.problems])
        return None


def set_sources(
    ctx: Context, track_id: str, actor: Actor, raw: dict[str, Any] | TrackSources | None, filename: str = "sources"
) -> TrackSources | None:
    """Validate `raw` (or, with None, remove the sources) and keep it; DefinitionError with every
    problem (file, line, field) when it does not fit, and nothing is kept."""
    with ctx.db.begin() as conn:
        row = conn.execute(select(TRACKS.c.settings, TRACKS.c.definition_name).where(TRACKS.c.id == track_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"unknown track {track_id!r}")
        settings = dict(row.settings or {})
        parsed = None
        if raw is None:
            settings.pop(SOURCES_KEY, None)
        else:
            parsed = raw if isinstance(raw, TrackSources) else parse_sources(raw, filename)
            _check_signals(parsed, ctx.catalog.get(row.definition_name), filename)
            settings[SOURCES_KEY] = parsed.as_settings()
        conn.execute(TRACKS.update().where(TRACKS.c.id == track_id).values(settings=settings))
        names = [s.name for s in parsed.sources] if parsed else []
        why = f"sources: {', '.join(names)}" if parsed else "sources removed"
        audit = {"release_id": None, "track_id": track_id, "at": ctx.now(), "actor": actor.name, "kind": AuditKind.TRACK_UPDATED.value,
                 "reason": why, "data": {"fields": ["sources"], "sources": names}}  # fmt: skip
        conn.execute(INSERT_AUDIT, audit)
    log.info("track_sources_set", track=track_id, sources=names, actor=actor.name)
    return parsed


def _check_signals(parsed: TrackSources, pipeline: Pipeline, filename: str) -> None:
    problems = [
        DefinitionProblem(filename, None, f"sources.{i}.signals.{signal}", f"{pipeline.name} declares no signal {signal!r}")
        for i, s in enumerate(parsed.sources)
        for signal in s.config.signals
        if signal not in pipeline.signals
    ]
    if problems:
        raise DefinitionError(problems)


def needed_sources(pipeline: Pipeline, stage: str, sources: TrackSources) -> list[NamedSource]:
    """The sources whose signals the stage's outgoing gates read (polled only while they matter)."""
    transition = pipeline.advance_from(stage)
    if transition is None:
        return []
    wanted = {getattr(pipeline.gates[g], "signal", None) for g in transition.gates}
    return [s for s in sources.sources if wanted & set(s.config.signals)]


def target_of(release: Any, sources: TrackSources, package: str | None) -> PullTarget:
    """The release as the vendors name it (the track's release_name template applied)."""
    name = None
    if sources.release_name:
        name = sources.release_name.format(
            version=release.version, build=release.build or "", track=release.track_id, package=package or ""
        )
    return PullTarget(release.track_id, release.version, release.stage, release.build, name, package)


# ------------------------------------------------------------------ polling


@dataclass
class PollReport:
    scheduled: int = 0
    polled: int = 0
    recorded: int = 0
    unchanged: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Due:
    poll_id: int
    release_id: int
    source: NamedSource
    target: PullTarget
    failures: int


def poll_sources(ctx: Context, http: httpx.Client, *, limit: int = 200, workers: int = 8, rng: random.Random | None = None) -> PollReport:
    """Schedule, claim, fetch (at most `workers` at a time) and record the due polls."""
    report = PollReport(scheduled=_schedule(ctx))
    due = _claim(ctx, limit)
    if not due:
        return report
    from conductor.sources.pull.registry import build_source

    now = ctx.now()

    def fetch(d: _Due) -> FetchResult:
        return build_source(d.source.config, http).fetch(d.target, now)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(due))), thread_name_prefix="poll") as pool:
        results = list(pool.map(fetch, due))
    for d, result in zip(due, results, strict=True):
        _record(ctx, d, result, report, rng or random.Random())
    return report


def _schedule(ctx: Context) -> int:
    """A due row for every (release, needed source) that has none; rows of finished releases go."""
    created = 0
    now = ctx.now()
    with ctx.db.begin() as conn:
        rows = conn.execute(
            select(RELEASES.c.id, RELEASES.c.track_id, RELEASES.c.stage, RELEASES.c.definition_hash, TRACKS.c.settings).join(
                TRACKS, TRACKS.c.id == RELEASES.c.track_id
            )
        ).all()
        finished = []
        for r in rows:
            sources = track_sources(r.track_id, dict(r.settings or {})) if (r.settings or {}).get(SOURCES_KEY) else None
            pipeline = ctx.pinned(conn, r.definition_hash)
            if pipeline.is_terminal(r.stage):
                finished.append(r.id)
                continue
            for s in needed_sources(pipeline, r.stage, sources) if sources else []:
                created += _ensure_row(conn, r.id, r.track_id, s, now)
        if finished:
            conn.execute(delete(SOURCE_POLLS).where(SOURCE_POLLS.c.release_id.in_(finished)))
    return created


def _ensure_row(conn: Connection, release_id: int, track_id: str, s: NamedSource, now: datetime) -> int:
    stmt = insert_unless_present(conn.dialect.name, SOURCE_POLLS, ("release_id", "source"))
    result = conn.execute(stmt, {"release_id": release_id, "track_id": track_id, "source": s.name, "kind": s.config.kind, "due_at": now,
                                 "failures": 0, "polls": 0, "errors": 0})  # fmt: skip
    return max(result.rowcount or 0, 0)


def _claim(ctx: Context, limit: int) -> list[_Due]:
    """Lease the due rows whose source the release's stage still needs (others wait a while)."""
    now = ctx.now()
    out: list[_Due] = []
    with ctx.db.begin() as conn:
        p = SOURCE_POLLS.c
        rows = conn.execute(
            select(p.id, p.release_id, p.source, p.failures, RELEASES.c.track_id, RELEASES.c.version, RELEASES.c.stage, RELEASES.c.build,
                   RELEASES.c.definition_hash, TRACKS.c.settings)
            .join(RELEASES, RELEASES.c.id == p.release_id).join(TRACKS, TRACKS.c.id == p.track_id)
            .where(p.due_at <= now, (p.lease_until.is_(None)) | (p.lease_until <= now))
            .order_by(p.due_at).limit(limit).with_for_update(skip_locked=True)
        ).all()  # fmt: skip
        for r in rows:
            settings = dict(r.settings or {})
            sources = track_sources(r.track_id, settings)
            source = next((s for s in sources.sources if s.name == r.source), None) if sources else None
            pipeline = ctx.pinned(conn, r.definition_hash)
            if source is None or source not in needed_sources(pipeline, r.stage, sources):  # type: ignore[arg-type]
                conn.execute(SOURCE_POLLS.update().where(p.id == r.id).values(due_at=now + timedelta(minutes=10)))
                continue
            conn.execute(SOURCE_POLLS.update().where(p.id == r.id).values(lease_until=now + LEASE))
            package = ((settings.get("store") or {}).get("package")) if isinstance(settings.get("store"), dict) else None
            out.append(_Due(r.id, r.release_id, source, target_of(r, sources, package), r.failures))  # type: ignore[arg-type]
    return out


def _record(ctx: Context, d: _Due, result: FetchResult, report: PollReport, rng: random.Random) -> None:
    """Store what is new in one fetch, judge the release once if anything was, and book the poll."""
    report.polled += 1
    failed = [r for r in result.readings if r.error]
    if result.latency_s is not None:
        report.latencies_ms.append(result.latency_s * 1000)
    try:
        with open_step(ctx, d.release_id) as step:
            new = [r for r in result.readings if _is_new(step, r)]
            report.unchanged += len(result.readings) - len(new)
            for r in new:
                add_signal(step, r.signal, r.value, actor=SOURCE_ACTOR, source=d.source.name, samples=r.samples, events=r.events,
                           observed_at=min(r.observed_at, step.now()), error=r.error)  # fmt: skip
            if new:
                report.recorded += len(new)
                values = {r.signal: r.value if r.error is None else f"error: {r.error}" for r in new}
                audit_intake(step, SOURCE_ACTOR, d.source.name, values, sha=None, what="pulled")
                judge(step, trigger=f"poll:{d.source.name}")
            _book(step, d, result, failed, rng)
    except ConductorError as exc:  # e.g. a value the pipeline refuses: the poll failed, visibly
        log.warning("poll_not_recorded", release_id=d.release_id, source=d.source.name, error=str(exc))
        with ctx.db.begin() as conn:
            conn.execute(SOURCE_POLLS.update().where(SOURCE_POLLS.c.id == d.poll_id)
                         .values(lease_until=None, due_at=ctx.now() + d.source.config.interval, last_error=str(exc)[:2000]))  # fmt: skip
    if failed:
        report.errors += 1


def _is_new(step: ReleaseStep, r: Reading) -> bool:
    """Worth storing: not older than the stored value, and not the same (value, samples and events,
    or the same error) -- except that the same value measured an hour later is stored again, so a
    gate's max_age sees the source is alive (its evidence digest is unchanged: no new decision)."""
    old = step.latest_signals().get(r.signal)
    if old is None:
        return True
    if r.error is not None:
        return old.error != r.error
    if r.observed_at < old.observed_at:
        return False
    same = (old.value, old.samples, old.events, old.error) == (r.value, r.samples, r.events, None)
    return not same or r.observed_at - old.observed_at >= REFRESH


def _book(step: ReleaseStep, d: _Due, result: FetchResult, failed: list[Reading], rng: random.Random) -> None:
    now = step.now()
    interval = d.source.config.interval
    failures = d.failures + 1 if failed else 0
    wait = min(interval * (2 ** min(failures, 6)), MAX_BACKOFF) if failed else interval * rng.uniform(0.9, 1.1)
    if result.retry_after_s:
        wait = max(wait, timedelta(seconds=result.retry_after_s))
    p = SOURCE_POLLS.c
    values: dict[str, Any] = {
        "due_at": now + wait, "lease_until": None, "failures": failures, "last_polled_at": now, "polls": p.polls + 1,
        "errors": p.errors + (1 if failed else 0),
        "last_latency_ms": result.latency_s * 1000 if result.latency_s is not None else None,
    }  # fmt: skip
    if failed:
        values["last_error"] = "; ".join(sorted({r.error or "" for r in failed}))[:2000]
    else:
        values |= {"last_success_at": now, "last_error": None}
    step.buffer.add(SOURCE_POLLS.update().where(p.id == d.poll_id).values(**values), {})


# ------------------------------------------------------------------ checking


def check_sources(ctx: Context, http: httpx.Client, track_id: str, release: int | str | None = None) -> list[tuple[str, FetchResult]]:
    """Each source of the track fetched once for `release` (default: the track's newest release, or a
    made-up one at version 0.0.0); nothing is written."""
    from conductor.sources.pull.registry import build_source

    with ctx.db.reading() as conn:
        track = conn.execute(select(TRACKS.c.settings).where(TRACKS.c.id == track_id)).first()
        if track is None:
            raise NotFound(f"unknown track {track_id!r}")
        q = select(RELEASES.c.track_id, RELEASES.c.version, RELEASES.c.stage, RELEASES.c.build).where(RELEASES.c.track_id == track_id)
        if release is not None:
            key = str(release).rsplit("/", 1)[-1]
            q = q.where((RELEASES.c.version == key) | (RELEASES.c.id == (int(key) if key.isdigit() else -1)))
        row = conn.execute(q.order_by(RELEASES.c.id.desc()).limit(1)).first()
    if release is not None and row is None:
        raise NotFound(f"unknown release {release!r} of {track_id}")
    settings = dict(track.settings or {})
    sources = track_sources(track_id, settings)
    if sources is None:
        raise ConductorError(f"track {track_id} has no sources: conductor track sources {track_id} --file sources.yaml")
    rel = row or type("Release", (), {"track_id": track_id, "version": "0.0.0", "stage": "?", "build": None})()
    package = (settings.get("store") or {}).get("package") if isinstance(settings.get("store"), dict) else None
    target = target_of(rel, sources, package)
    now = ctx.now()
    return [(s.name, build_source(s.config, http).fetch(target, now)) for s in sources.sources]
