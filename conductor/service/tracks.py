"""Use cases for tracks: create one, change where its events come from, its secrets and its actions.

Every change is audited (a track's audit rows carry its id and no release), naming the actor and
what changed, each field as {"from": old, "to": new}; secrets only by name (which were set, which
removed), never their values. A change that changes nothing writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, select
from standardwebhooks.webhooks import Webhook

from conductor.actions.connections import CONNECTION_KEYS, STORE_KEY, AppStoreConnection, parse_connections
from conductor.actions.settings import parse_action_settings
from conductor.actions.stores.base import APPLE_PHASES
from conductor.context import Context
from conductor.domain.definition import Pipeline
from conductor.domain.errors import AlreadyExists, ConductorError, NotFound
from conductor.domain.kinds import AuditKind
from conductor.service.audit import add_audit
from conductor.service.inbox import branch_regex
from conductor.service.step import ROBOT_ACTOR, Actor
from conductor.store.statements import TRACKS, insert_new_id

log = structlog.get_logger("conductor.tracks")

# Keys of Track.settings that hold webhook secrets, per source.
SECRET_KEYS = {"github": "github_secret", "gitlab": "gitlab_token", "standard_webhooks": "webhook_secret"}
NOTIFY_FIELDS = ("slack_url", "webhook_url", "webhook_secret", "events")
TOP_FIELDS = ("actions_url", "actions_secret")
# Action settings audited by name only: the signing secrets, and the Slack URL (it is the credential).
SECRET_ACTION_FIELDS = frozenset({"slack_url", "webhook_secret", "actions_secret"})


@dataclass(frozen=True)
class TrackChanges:
    """What PATCH /tracks may change; a field left None is not changed (secrets: a None value removes it)."""

    repository: str | None = None
    clear_repository: bool = False
    branch_pattern: str | None = None
    critical_fix_marker: str | None = None
    four_eyes: bool | None = None
    secrets: dict[str, Any] | None = None


def check_branch_pattern(pattern: str) -> None:
    """ConductorError unless the pattern has {version} exactly once and no other placeholder."""
    branch_regex(pattern)
    try:
        formatted = pattern.format(version="1.0.0")
    except (KeyError, IndexError, ValueError):
        raise ConductorError(f"branch pattern {pattern!r} may contain no placeholder but {{version}}") from None
    if "{" in formatted or "}" in formatted:
        raise ConductorError(f"branch pattern {pattern!r} may contain no braces but {{version}}")


def check_secrets(secrets: dict[str, Any]) -> dict[str, Any]:
    """Validate per-track secrets (Standard Webhooks ones must be whsec_ base64); returns the non-empty ones."""
    allowed = set(SECRET_KEYS.values())
    out: dict[str, Any] = {}
    for key, value in secrets.items():
        if key not in allowed:
            raise ConductorError(f"unknown secret {key!r}; use one of {', '.join(sorted(allowed))}")
        if not value:
            continue
        if key == "webhook_secret":
            for v in [value] if isinstance(value, str) else value:
                try:
                    Webhook(v)
                except Exception:
                    raise ConductorError("webhook_secret must be a Standard Webhooks secret (whsec_ + base64)") from None
        out[key] = value
    return out


def _audit(conn: Connection, ctx: Context, track_id: str, kind: AuditKind, actor: Actor, reason: str, data: dict[str, Any]) -> None:
    add_audit(conn, ctx, kind, actor.name, reason, track_id=track_id, data=data)


def _secret_changes(before: dict[str, Any], after: dict[str, Any], names: Any) -> dict[str, list[str]]:
    """Which of the secrets `names` a change set (to a new value) and which it removed: names only."""
    names = sorted(names)
    return {
        "set": [k for k in names if after.get(k) and after.get(k) != before.get(k)],
        "removed": [k for k in names if before.get(k) and not after.get(k)],
    }


def _locked(conn: Connection, track_id: str) -> Any:
    row = conn.execute(select(TRACKS).where(TRACKS.c.id == track_id).with_for_update()).one_or_none()
    if row is None:
        raise NotFound(f"unknown track {track_id!r}")
    return row


def create_track(
    ctx: Context,
    track_id: str,
    definition: str,
    actor: Actor,
    *,
    repository: str | None = None,
    branch_pattern: str = "release/{version}",
    critical_fix_marker: str = "Release-Fix: critical",
    four_eyes: bool = False,
    secrets: dict[str, Any] | None = None,
) -> str:
    """A new track on an existing definition; AlreadyExists if the id is taken. Returns its id."""
    ctx.catalog.get(definition)  # NotFound before anything is written
    check_branch_pattern(branch_pattern)
    settings = check_secrets(secrets or {})
    with ctx.db.begin() as conn:
        created = insert_new_id(
            conn,
            TRACKS,
            "id",
            {
                "id": track_id,
                "definition_name": definition,
                "repository": repository,
                "branch_pattern": branch_pattern,
                "critical_fix_marker": critical_fix_marker,
                "four_eyes": four_eyes,
                "settings": settings,
                "created_at": ctx.now(),
            },
        )
        if created is None:
            raise AlreadyExists(f"track {track_id!r} already exists")
        _audit(
            conn,
            ctx,
            track_id,
            AuditKind.TRACK_CREATED,
            actor,
            f"on {definition}",
            {
                "repository": repository,
                "branch_pattern": branch_pattern,
                "four_eyes": four_eyes,
                "secrets": sorted(settings),  # secret names, never their values
            },
        )
    log.info("track_created", track=track_id, definition=definition, actor=actor.name, role=actor.role)
    return track_id


def ensure_track(
    ctx: Context,
    track_id: str,
    definition: str,
    *,
    repository: str | None = None,
    branch_pattern: str = "release/{version}",
    four_eyes: bool = False,
    actor: Actor = ROBOT_ACTOR,
) -> str:
    """The track, created (and audited) if it does not exist yet; AlreadyExists if it exists on another definition."""
    with ctx.db.reading() as conn:
        existing = conn.execute(select(TRACKS.c.definition_name).where(TRACKS.c.id == track_id)).scalar()
    if existing is None:
        try:
            return create_track(ctx, track_id, definition, actor, repository=repository, branch_pattern=branch_pattern, four_eyes=four_eyes)
        except AlreadyExists:  # created concurrently: fall through and check it
            with ctx.db.reading() as conn:
                existing = conn.execute(select(TRACKS.c.definition_name).where(TRACKS.c.id == track_id)).scalar()
    if existing != definition:
        raise AlreadyExists(f"track {track_id!r} exists with definition {existing!r}, not {definition!r}")
    return track_id


def update_track(ctx: Context, track_id: str, actor: Actor, changes: TrackChanges) -> str:
    """Change the given fields; a secret set to null or "" is removed. NotFound if no such track.

    Audited with each changed field's old and new value (secrets by name); a change that changes
    nothing (no field given, or each the same as before) writes nothing."""
    if changes.branch_pattern is not None:
        check_branch_pattern(changes.branch_pattern)
    with ctx.db.begin() as conn:
        track = _locked(conn, track_id)
        given: dict[str, Any] = {}
        if changes.repository is not None or changes.clear_repository:
            given["repository"] = changes.repository
        for name in ("branch_pattern", "critical_fix_marker", "four_eyes"):
            if getattr(changes, name) is not None:
                given[name] = getattr(changes, name)
        values = {k: v for k, v in given.items() if getattr(track, k) != v}
        data: dict[str, Any] = {k: {"from": getattr(track, k), "to": v} for k, v in values.items()}
        changed = list(values)
        if changes.secrets is not None:
            before = dict(track.settings or {})
            merged = {k: v for k, v in before.items() if k not in changes.secrets} | check_secrets(changes.secrets)
            secrets = _secret_changes(before, merged, changes.secrets)
            if secrets["set"] or secrets["removed"]:
                values["settings"] = merged
                data["secrets"] = secrets
                changed.append("secrets")
        if values:
            conn.execute(TRACKS.update().where(TRACKS.c.id == track_id).values(values))
            _audit(conn, ctx, track_id, AuditKind.TRACK_UPDATED, actor, ", ".join(changed), {"fields": changed, **data})
    log.info("track_updated", track=track_id, fields=changed, actor=actor.name, role=actor.role)
    return track_id


def configure_actions(ctx: Context, track_id: str, actor: Actor | None, changes: dict[str, Any]) -> dict[str, Any]:
    """Set where a track's notifications and actions go; a value of None or "" removes the key.

    `changes` keys: slack_url, webhook_url, webhook_secret, events (notify.*), actions_url,
    actions_secret. Returns the action settings with secrets masked. ConductorError names a bad
    field; NotFound an unknown track. Audited like update_track (the Slack URL and the secrets by
    name only); nothing is written when nothing changes.
    """
    unknown = set(changes) - set(NOTIFY_FIELDS) - set(TOP_FIELDS)
    if unknown:
        raise ConductorError(f"unknown action setting(s) {', '.join(sorted(unknown))}; use {', '.join(NOTIFY_FIELDS + TOP_FIELDS)}")
    with ctx.db.begin() as conn:
        settings = dict(_locked(conn, track_id).settings or {})
        before = {key: _action_setting(settings, key) for key in changes}
        notify = dict(settings.get("notify") or {})
        for key, value in changes.items():
            target = notify if key in NOTIFY_FIELDS else settings
            if value is None or value == "" or value == []:
                target.pop(key, None)
            else:
                target[key] = value
        if notify:
            settings["notify"] = notify
        else:
            settings.pop("notify", None)
        cfg = parse_action_settings(track_id, settings)
        if cfg.notify.webhook_url and not cfg.notify.webhook_secret:
            raise ConductorError(f"track {track_id}: a webhook_url needs a webhook_secret (whsec_...); outgoing webhooks are always signed")
        audited = _action_changes(before, {key: _action_setting(settings, key) for key in changes}, changes)
        if audited["fields"]:
            conn.execute(TRACKS.update().where(TRACKS.c.id == track_id).values(settings=settings))
            who = actor or ROBOT_ACTOR
            _audit(conn, ctx, track_id, AuditKind.TRACK_UPDATED, who, "actions: " + ", ".join(audited["fields"]), audited)
    log.info("track_actions_configured", track=track_id, fields=sorted(changes), actor=actor.name if actor else None)
    shown = cfg.model_dump(exclude_none=True)
    for part in (shown, shown.get("notify", {})):
        for key in ("webhook_secret", "actions_secret"):
            if part.get(key):
                part[key] = "whsec_…"
    return shown


def _action_setting(settings: dict[str, Any], key: str) -> Any:
    # notify.webhook_secret signs outgoing webhooks; the top-level webhook_secret checks incoming ones.
    return (settings.get("notify") or {}).get(key) if key in NOTIFY_FIELDS else settings.get(key)


def _action_changes(before: dict[str, Any], after: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The audit data of an action-settings change: {"fields": [...], field: {"from", "to"}, ...,
    "secrets": {"set": [...], "removed": [...]}} (the secret fields by name only)."""
    plain = [k for k in changes if k not in SECRET_ACTION_FIELDS and before.get(k) != after.get(k)]
    data: dict[str, Any] = {k: {"from": before.get(k), "to": after.get(k)} for k in plain}
    secrets = _secret_changes(before, after, SECRET_ACTION_FIELDS & set(changes))
    fields = plain + [k for k in sorted(SECRET_ACTION_FIELDS & set(changes)) if k in secrets["set"] + secrets["removed"]]
    if secrets["set"] or secrets["removed"]:
        data["secrets"] = secrets
    return {"fields": fields, **data}


def track_secrets(ctx: Context, source: str) -> dict[str, list[str]]:
    """Per-track webhook secrets of one source ('github', 'gitlab', 'standard_webhooks') by repository.

    A value in Track.settings may be one secret or a list (rotation). Tracks without a repository
    cannot be matched to a delivery, so their secrets are not offered.
    """
    key = SECRET_KEYS[source]
    out: dict[str, list[str]] = {}
    with ctx.db.reading() as conn:
        for repository, settings in conn.execute(select(TRACKS.c.repository, TRACKS.c.settings).where(TRACKS.c.repository.is_not(None))):
            value: Any = (settings or {}).get(key)
            values = [value] if isinstance(value, str) else list(value or [])
            secrets = [v for v in values if isinstance(v, str) and v]
            if secrets:
                out.setdefault(repository, []).extend(secrets)
    return out


def connect(ctx: Context, track_id: str, actor: Actor, key: str, connection: dict[str, Any] | None) -> str | None:
    """Connect the track's `key` system (store: Play or App Store Connect; vcs: GitHub or GitLab;
    flags: Unleash or Flagsmith) or, with None, disconnect it; the connection's description
    (credentials by reference only), or None. Audited; nothing is kept when it does not validate.

    An App Store track cannot carry custom rollout percentages: Apple's phased release is fixed
    (1, 2, 5, 10, 20, 50, 100 % over seven days), so a pipeline whose rollout stages say other
    percentages is refused here, naming them."""
    if key not in CONNECTION_KEYS:
        raise ConductorError(f"unknown connection {key!r}; use {', '.join(CONNECTION_KEYS)}")
    with ctx.db.begin() as conn:
        track = _locked(conn, track_id)
        settings = dict(track.settings or {})
        if connection is None:
            settings.pop(key, None)
            shown = None
        else:
            parsed = getattr(parse_connections(track_id, {key: connection}), key)
            if isinstance(parsed, AppStoreConnection):
                _check_apple_percents(ctx.catalog.get(track.definition_name))
            settings[key] = parsed.model_dump(mode="json", exclude_defaults=True) | {"kind": parsed.kind}
            shown = parsed.describe()
        conn.execute(TRACKS.update().where(TRACKS.c.id == track_id).values(settings=settings))
        why = f"{key}: {shown}" if shown else f"{key} disconnected"
        _audit(conn, ctx, track_id, AuditKind.TRACK_UPDATED, actor, why, {"fields": [key], key: shown})
    log.info("track_connected" if shown else "track_disconnected", track=track_id, connection=key, described=shown, actor=actor.name)
    return shown


def connect_store(ctx: Context, track_id: str, actor: Actor, connection: dict[str, Any] | None) -> str | None:
    """connect(..., "store", ...)."""
    return connect(ctx, track_id, actor, STORE_KEY, connection)


def _check_apple_percents(pipeline: Pipeline) -> None:
    custom = {s: st.percent for s, st in pipeline.stages.items() if st.percent is not None and st.percent not in APPLE_PHASES}
    if custom:
        listed = ", ".join(f"{s} {p:g}%" for s, p in custom.items())
        raise ConductorError(
            f"pipeline {pipeline.name} sets {listed}: the App Store's phased release is fixed at {', '.join(map(str, APPLE_PHASES))}% "
            "over seven days; use those percentages (or none) on an App Store track"
        )


def set_night(ctx: Context, track_id: str, actor: Actor, raw: dict[str, Any] | None) -> str | None:
    """Set (or, with None, remove) the track's night policy: quiet hours in the pipeline's time zone
    and what the robot may expose in them. Its description, or None. Audited."""
    from conductor.domain.errors import InvalidSettings
    from conductor.domain.policy import NightPolicy

    with ctx.db.begin() as conn:
        track = _locked(conn, track_id)
        settings = dict(track.settings or {})
        if raw is None:
            settings.pop("night", None)
            shown = None
        else:
            try:
                night = NightPolicy.model_validate(raw)
            except ValueError as exc:
                raise InvalidSettings(f"track {track_id}: night: {exc}") from None
            pipeline = ctx.catalog.get(track.definition_name)
            if night.up_to_stage is not None and night.up_to_stage not in pipeline.stages:
                raise InvalidSettings(f"track {track_id}: night.up_to_stage: {pipeline.name} has no stage {night.up_to_stage!r}")
            settings["night"] = night.model_dump(exclude_none=True)
            shown = f"{night.describe()} ({pipeline.timezone})"
        conn.execute(TRACKS.update().where(TRACKS.c.id == track_id).values(settings=settings))
        _audit(conn, ctx, track_id, AuditKind.TRACK_UPDATED, actor, f"night: {shown or 'off'}", {"fields": ["night"], "night": shown})
    return shown
