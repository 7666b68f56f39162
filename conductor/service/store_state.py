"""What Conductor set at the store for a release, what the store says, and what happens when the
two part: the store_states row of a release.

- A store action that is done records what it set (`wanted`, for production changes) and what the
  store answered (`seen`), and the build it used becomes the release's build if it had none.
- `sync_stores` (a periodic job: beat, or the embedded runner) reads the store's state of every
  release with a production rollout that is not finished. When it differs from what Conductor last
  set, and no store action of the release is on its way, someone changed the rollout in the
  store's console: the release is marked "store drift" and paused, so the robot stops acting on it
  until a release manager accepts the store's state (`accept_drift`) or re-applies Conductor's
  (`reapply`). Both are audited.
- Apple allows a phased release 30 days of pauses in all: five days before they run out, a release
  manager is asked to decide (resume, release to all, or pull the version), with the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, select

from conductor.actions.base import ActionFailed
from conductor.actions.connections import parse_connections, store_client
from conductor.actions.registry import ActionAdapters
from conductor.actions.stores.base import APPLE_MAX_PAUSE_DAYS, StoreRollout
from conductor.context import Context
from conductor.domain.actions import STORE_ACTIONS
from conductor.domain.errors import ConductorError, IllegalTransition
from conductor.domain.kinds import ROBOT, ActionStatus, AuditKind
from conductor.service.step import Actor, ReleaseStep, open_step
from conductor.store.statements import OUTBOX, RELEASES, STORE_STATES, TRACKS, upsert

log = structlog.get_logger("conductor.store_state")

DRIFT_PREFIX = "store drift: "
BUDGET_WARNING = timedelta(days=5)  # ask this long before Apple's pause budget runs out
_COLUMNS = ("store", "build", "wanted", "wanted_at", "seen", "synced_at", "drift_since", "drift", "budget_asked_at")


def _row(conn: Connection, release_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(STORE_STATES).where(STORE_STATES.c.release_id == release_id)).first()
    return dict(row._mapping) if row is not None else None


def _write(step: ReleaseStep, values: dict[str, Any], current: dict[str, Any] | None = None) -> None:
    """Create or change the release's row: `values` over `current` (read now when not given). One
    write per step: the writes are buffered, so a second read in the same step would not see the first."""
    if current is None:
        current = _row(step.conn, step.release.id) or {c: None for c in _COLUMNS}
    merged = {**current, **values, "release_id": step.release.id}
    step.buffer.add(
        upsert(step.conn.dialect.name, STORE_STATES, ("release_id",), _COLUMNS), {c: merged.get(c) for c in ("release_id", *_COLUMNS)}
    )


def record_action(step: ReleaseStep, action: str, result: dict[str, Any]) -> None:
    """A store action is done: remember what it set and what the store said (in the step)."""
    now = step.now()
    build = result.get("build")
    if build and not step.release.build:
        step.release.build = str(build)
        step.audit(AuditKind.BUILD_SET, ROBOT, f"store build {build} (used by {action})", data={"build": build, "from": action})
    seen = result["store"]
    values: dict[str, Any] = {"store": result.get("kind", "store"), "build": build, "seen": seen, "synced_at": now}
    if result.get("production"):
        values |= {"wanted": {"status": seen.get("status"), "percent": seen.get("percent")}, "wanted_at": now}
    _write(step, values)


def differs(store: str, wanted: dict[str, Any], seen: dict[str, Any]) -> str | None:
    """How the store's state departs from what Conductor set, in words; None when it does not.
    (Apple moves a phased release's percentage by itself each day: only its status counts.)"""
    if wanted.get("status") != seen.get("status"):
        return f"the store says {seen.get('status')}, Conductor set {wanted.get('status')}"
    w, s = wanted.get("percent"), seen.get("percent")
    if store == "play" and wanted.get("status") == "in_progress" and w is not None and s is not None and abs(w - s) > 0.01:
        return f"the store rolls out to {s:g}%, Conductor set {w:g}%"
    return None


@dataclass
class SyncReport:
    read: int = 0
    drifted: int = 0
    failed: int = 0


def sync_stores(ctx: Context, adapters: ActionAdapters, *, limit: int = 500) -> SyncReport:
    """Read the store's state of each release with a production rollout under way; mark drift."""
    report = SyncReport()
    with ctx.db.reading() as conn:
        rows = conn.execute(
            select(STORE_STATES.c.release_id, RELEASES.c.track_id, RELEASES.c.version, RELEASES.c.stage, RELEASES.c.definition_hash,
                   STORE_STATES.c.build, TRACKS.c.settings)
            .join(RELEASES, RELEASES.c.id == STORE_STATES.c.release_id)
            .join(TRACKS, TRACKS.c.id == RELEASES.c.track_id)
            .where(STORE_STATES.c.wanted.is_not(None))
            .order_by(STORE_STATES.c.synced_at)
            .limit(limit)
        ).all()  # fmt: skip
        live = [r for r in rows if ctx.pinned(conn, r.definition_hash).stages[r.stage].kind in ("rollout", "halted")]
    for r in live:
        connection = parse_connections(r.track_id, dict(r.settings or {})).store
        if connection is None or not r.build:
            continue
        try:
            state = store_client(connection, adapters.client, clock=ctx.clock).read(r.build, r.version)
        except (ActionFailed, ConductorError) as exc:
            report.failed += 1
            log.warning("store_read_failed", release_id=r.release_id, error=str(exc))
            continue
        report.read += 1
        report.drifted += _observe(ctx, r.release_id, state)
    return report


def _observe(ctx: Context, release_id: int, state: StoreRollout) -> int:
    """Record what the store said; mark drift (1) when it departs from what Conductor set."""
    with open_step(ctx, release_id) as step:
        conn = step.conn
        row = _row(conn, release_id)
        assert row is not None
        now = step.now()
        changes: dict[str, Any] = {"seen": state.as_dict(), "synced_at": now, **_pause_budget(step, row, state)}
        in_flight = conn.execute(
            select(OUTBOX.c.id).where(OUTBOX.c.release_id == release_id, OUTBOX.c.action.in_(STORE_ACTIONS),
                                      OUTBOX.c.status.in_((ActionStatus.PENDING.value, ActionStatus.SENDING.value)))
        ).first()  # fmt: skip
        why = differs(row["store"], row["wanted"], state.as_dict())
        drifted = 0
        if why and in_flight is None and row["drift_since"] is None:
            r = step.release
            changes |= {"drift_since": now, "drift": {"detail": why, "wanted": row["wanted"], "seen": state.as_dict()}}
            r.paused, r.pause_reason = True, DRIFT_PREFIX + why
            step.audit(AuditKind.STORE_DRIFT, ROBOT, f"{why}; the robot stops acting on this release until a release manager decides",
                       data={"wanted": row["wanted"], "seen": state.as_dict()})  # fmt: skip
            step.queue_action(f"drift:{now.isoformat()}", "notify", {"event": "store_drift", "summary": why, "stage": r.stage})
            log.warning("store_drift", release_id=release_id, detail=why)
            drifted = 1
        _write(step, changes, row)
        return drifted


def _pause_budget(step: ReleaseStep, row: dict[str, Any], state: StoreRollout) -> dict[str, Any]:
    """Ask a release manager before Apple's 30 days of pauses run out (once per release); the
    store_states changes that records."""
    if row["store"] != "appstore" or state.paused_total_s is None or row["budget_asked_at"] is not None:
        return {}
    left = timedelta(days=APPLE_MAX_PAUSE_DAYS) - timedelta(seconds=state.paused_total_s)
    if left > BUDGET_WARNING:
        return {}
    deadline: datetime = step.now() + left
    why = (f"the phased release has been paused {state.paused_total_s / 86400:.0f} of Apple's {APPLE_MAX_PAUSE_DAYS} days; "
           f"decide by {deadline:%a %d %b %H:%M %Z}: resume, release to all, or pull the version")  # fmt: skip
    step.audit(AuditKind.PAUSE_BUDGET_LOW, ROBOT, why, data={"paused_total_s": state.paused_total_s, "deadline": deadline.isoformat()})
    step.queue_action(
        f"budget:{step.release.id}", "notify", {"event": "pause_budget_low", "summary": why, "deadline": deadline.isoformat()}
    )
    return {"budget_asked_at": step.now()}


def accept_drift(ctx: Context, ref: int | str, actor: Actor, reason: str) -> None:
    """The store's state is right: it becomes what Conductor wants, and the robot acts again."""
    with open_step(ctx, ref) as step:
        row = _drifting(step)
        seen = row["seen"] or {}
        _write(step, {"wanted": {"status": seen.get("status"), "percent": seen.get("percent")}, "wanted_at": step.now(),
                      "drift_since": None, "drift": None})  # fmt: skip
        _unpause(step)
        step.audit(AuditKind.DRIFT_ACCEPTED, actor.name, reason, data={"accepted": seen})


def reapply(ctx: Context, ref: int | str, actor: Actor, reason: str) -> str:
    """Conductor's state is right: queue the store action that restores it; the robot acts again."""
    with open_step(ctx, ref) as step:
        row = _drifting(step)
        wanted = row["wanted"] or {}
        action, params = _restoring(row["store"], wanted)
        step.queue_action(f"reapply:{step.now().isoformat()}", action, {"stage": step.release.stage, **params})
        _write(step, {"drift_since": None, "drift": None})
        _unpause(step)
        step.audit(AuditKind.DRIFT_REAPPLIED, actor.name, reason, data={"wanted": wanted, "action": action})
        return action


def _restoring(store: str, wanted: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    status = wanted.get("status")
    if status in ("halted", "paused"):
        return "halt_rollout", {}
    if status == "completed":
        return "set_rollout", {"percent": 100}
    if store == "appstore":
        return "resume_rollout", {}
    return "set_rollout", {"percent": wanted.get("percent")}


def _drifting(step: ReleaseStep) -> dict[str, Any]:
    row = _row(step.conn, step.release.id)
    if row is None or row["drift_since"] is None:
        raise IllegalTransition(f"{step.release.key} is not in store drift")
    return row


def _unpause(step: ReleaseStep) -> None:
    r = step.release
    if r.paused and (r.pause_reason or "").startswith(DRIFT_PREFIX):
        r.paused, r.pause_reason = False, None
