"""Track administration: create a track, change where its events come from and its webhook secrets.

Tracks have no audit table of their own (audit rows belong to a release), so each change is
logged as a structured event naming the actor.
"""

from __future__ import annotations

from typing import Any

import structlog

from conductor.errors import AlreadyExists, ConductorError, NotFound
from conductor.service.engine import Actor, Conductor
from conductor.service.inbox import branch_regex
from conductor.service.queries import SECRET_KEYS
from conductor.store.models import AuditEntry, Track

log = structlog.get_logger("conductor.tracks")

_UNSET: Any = object()


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
    from standardwebhooks.webhooks import Webhook

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


def create_track(
    c: Conductor,
    track_id: str,
    definition: str,
    actor: Actor,
    *,
    repository: str | None = None,
    branch_pattern: str = "release/{version}",
    critical_fix_marker: str = "Release-Fix: critical",
    four_eyes: bool = False,
    secrets: dict[str, Any] | None = None,
) -> Track:
    """A new track on an existing definition; AlreadyExists if the id is taken."""
    c.catalog.get(definition)  # NotFound before anything is written
    check_branch_pattern(branch_pattern)
    settings = check_secrets(secrets or {})
    with c.db.transaction() as s:
        if s.get(Track, track_id) is not None:
            raise AlreadyExists(f"track {track_id!r} already exists")
        track = Track(
            id=track_id,
            definition_name=definition,
            repository=repository,
            branch_pattern=branch_pattern,
            critical_fix_marker=critical_fix_marker,
            four_eyes=four_eyes,
            settings=settings,
            created_at=c.now(),
        )
        s.add(track)
        s.add(AuditEntry(track_id=track_id, at=c.now(), actor=actor.name, kind="track_created", reason=f"on {definition}",
                         data={"repository": repository, "branch_pattern": branch_pattern, "four_eyes": four_eyes,
                               "secrets": sorted(settings)}))  # secret names, never their values
        s.flush()
        s.expunge(track)
    log.info("track_created", track=track_id, definition=definition, actor=actor.name, role=actor.role)
    return track


def update_track(
    c: Conductor,
    track_id: str,
    actor: Actor,
    *,
    repository: str | None = _UNSET,
    branch_pattern: str = _UNSET,
    critical_fix_marker: str = _UNSET,
    four_eyes: bool = _UNSET,
    secrets: dict[str, Any] | None = _UNSET,
) -> Track:
    """Change the given fields; a secret set to null or "" is removed. NotFound if no such track."""
    if branch_pattern is not _UNSET:
        check_branch_pattern(branch_pattern)
    with c.db.transaction() as s:
        track = s.get(Track, track_id)
        if track is None:
            raise NotFound(f"unknown track {track_id!r}")
        changed = []
        for name, value in (("repository", repository), ("branch_pattern", branch_pattern),
                            ("critical_fix_marker", critical_fix_marker), ("four_eyes", four_eyes)):
            if value is not _UNSET:
                setattr(track, name, value)
                changed.append(name)
        if secrets is not _UNSET:
            merged = dict(track.settings or {})
            for key in secrets or {}:
                merged.pop(key, None)
            merged.update(check_secrets(secrets or {}))
            track.settings = merged
            changed.append("secrets")
        s.add(AuditEntry(track_id=track_id, at=c.now(), actor=actor.name, kind="track_updated", reason=", ".join(changed),
                         data={"fields": changed}))
        s.flush()
        s.expunge(track)
    log.info("track_updated", track=track_id, fields=changed, actor=actor.name, role=actor.role)
    return track
