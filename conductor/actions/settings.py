"""Where a track's actions go: its part of Track.settings, validated.

    {"notify": {"slack_url": "https://hooks.slack.com/services/...",
                "webhook_url": "https://ops.example/hooks/conductor",
                "webhook_secret": "whsec_...",
                "events": ["approval_requested", "halted", "action_failed", "released"]},
     "actions_url": "https://deploy.example/conductor/actions",
     "actions_secret": "whsec_..."}

Other keys of Track.settings (inbound webhook secrets) belong to other features and are left alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conductor.domain.errors import ConductorError

ACTION_KEYS = ("notify", "actions_url", "actions_secret")


def _check_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    import httpx

    try:
        url = httpx.URL(value)
    except Exception:
        raise ValueError(f"{value!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _check_secret(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    from standardwebhooks.webhooks import Webhook

    try:
        Webhook(value)
    except Exception:
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64") from None
    return value


class NotifySettings(BaseModel):
    """Notification channels of a track; `events` limits which notifications are sent (default: all)."""

    model_config = ConfigDict(extra="forbid")

    slack_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    events: list[str] | None = None

    @field_validator("slack_url", "webhook_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return _check_secret(v)


class TrackActionSettings(BaseModel):
    """The action-related part of Track.settings."""

    model_config = ConfigDict(extra="ignore")

    notify: NotifySettings = Field(default_factory=NotifySettings)
    actions_url: str | None = None
    actions_secret: str | None = None

    @field_validator("actions_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)

    @field_validator("actions_secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return _check_secret(v)

    @property
    def signing_secret(self) -> str | None:
        """The secret action calls are signed with: actions_secret, else the notify webhook's."""
        return self.actions_secret or self.notify.webhook_secret


def parse_action_settings(track_id: str, settings: dict[str, Any] | None) -> TrackActionSettings:
    """The validated action settings of a track; ConductorError naming the track and field if invalid."""
    try:
        return TrackActionSettings.model_validate(settings or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConductorError(f"track {track_id}: settings.{where}: {err['msg']}") from None
