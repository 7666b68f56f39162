"""Settings from the environment (prefix CONDUCTOR_), read when asked for, never at import."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from conductor.domain.errors import ConductorError
from conductor.sources.cloudevents import CDEventMapping

PACKAGE_DEFINITIONS = Path(__file__).resolve().parent.parent / "state_definitions"


def _default_database_url() -> str:
    data = Path(user_data_dir("conductor", appauthor=False))
    return f"sqlite:///{data / 'conductor.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONDUCTOR_", env_file=None, extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    broker_url: str | None = None
    definitions_dir: Path = PACKAGE_DEFINITIONS
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = "INFO"
    github_secret: str | None = None
    gitlab_token: str | None = None
    webhook_secret: str | None = None
    # GitHub and GitLab sign no timestamp or delivery id: a captured body could be sent again under
    # a new delivery id. Within this window the same body is taken as a duplicate (0: off).
    replay_window_s: float = Field(default=86400.0, ge=0)
    # Where inbound CDEvents producers put a run's branch or repository, when not in customData or
    # the subject: a JSON list of {"field", "path", "pattern", "value", "types"} (CDEventMapping).
    cdevents_map: list[CDEventMapping] = Field(default_factory=list)
    # Execution (workers/ and the embedded runner in conductor/runner.py). Redis only carries
    # work: whatever waits longer than sweep_grace_s is enqueued again from the database.
    tick_interval_s: float = Field(default=10.0, gt=0)
    sweep_interval_s: float = Field(default=15.0, gt=0)
    # How often the store's state of every release with a production rollout is read (drift).
    store_sync_interval_s: float = Field(default=300.0, gt=0)
    # How often due source polls are looked for (each source has its own interval, default 5 min),
    # and how many run at once.
    source_poll_tick_s: float = Field(default=30.0, gt=0)
    # A database that stops answering costs seconds, never a hung request: connecting, a statement,
    # waiting for a row lock (PostgreSQL), and a webhook's whole store step are bounded.
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_s: float = Field(default=30.0, gt=0)
    db_lock_timeout_s: float = Field(default=10.0, gt=0)
    webhook_store_timeout_s: float = Field(default=5.0, gt=0)
    webhook_body_timeout_s: float = Field(default=10.0, gt=0)
    source_poll_workers: int = Field(default=8, ge=1, le=64)
    # How often committed audit rows are hash-chained (conductor.service.audit): the unsealed tail
    # of the audit log is at most this old.
    audit_seal_interval_s: float = Field(default=30.0, gt=0)
    sweep_grace_s: float = Field(default=60.0, gt=0)
    broker_visibility_timeout_s: int = Field(default=300, ge=30)
    task_max_redeliveries: int = Field(default=3, ge=1)
    action_max_attempts: int = Field(default=8, ge=1)
    action_timeout_s: float = Field(default=10.0, gt=0)
    # Dashboard: the key signing session cookies (unset: random per process, so sessions end on
    # restart and are not shared by API processes) and how often open pages poll for changes.
    session_secret: str | None = None
    dashboard_poll_seconds: float = Field(default=3.0, gt=0)


class SettingsInvalid(ConductorError):
    """The environment's settings do not validate; the message names each variable and why."""


def load_settings() -> Settings:
    """The settings from the environment; SettingsInvalid naming every bad variable (its value is
    not repeated: it may be a secret) instead of pydantic's traceback."""
    try:
        return Settings()
    except SettingsError as exc:  # a complex value (a list, a mapping) that is not JSON
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else ""
        where = f"CONDUCTOR_{field.upper()}" if field else "a setting"
        raise SettingsInvalid(f"bad settings: {where}: not valid JSON ({exc.__cause__ or exc})") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            where = f"CONDUCTOR_{loc[0].upper()}" if loc else "the settings"
            inner = f" ({'.'.join(loc)})" if len(loc) > 1 else ""
            problems.append(f"{where}{inner}: {error['msg']}")
        raise SettingsInvalid("bad settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
