"""Every action a definition can name, with its parameters, and which system performs it.

A transition's `actions` run after it commits, through the outbox (conductor.service.outbox); the
track's connections decide who performs each (conductor.actions.registry): the store (Google Play,
App Store Connect), the VCS/CI host (GitHub, GitLab), the feature-flag service (Unleash,
Flagsmith), the notification channels, or the track's generic `actions_url`. Nothing connected
means the action is skipped, with the reason on the release, never a pretend success.

`conductor validate` refuses an unknown action name and bad parameters, with file, line and field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CutBranch(_Params):
    """Create the release branch (the track's branch pattern) from `from_ref`'s head. VCS."""

    from_ref: str = Field(default="main", min_length=1, max_length=200)


class Distribute(_Params):
    """Put the build on a ring: a store testing track or TestFlight group when the track's store
    connection maps the ring, else the CI workflow the VCS connection maps it to. Store or VCS."""

    ring: str = Field(min_length=1, max_length=100)


class SubmitToStore(_Params):
    """Promote the release's build to production at the first percentage (this parameter, else the
    target stage's). Release notes by language; Play's in-app update priority 0..5. Store."""

    percent: float | None = Field(default=None, gt=0, le=100)
    notes: dict[str, str] | None = None
    priority: int | None = Field(default=None, ge=0, le=5)


class SetRollout(_Params):
    """Set the production rollout to `percent` (default: the target stage's percent). Store."""

    percent: float | None = Field(default=None, gt=0, le=100)


class NoParams(_Params):
    """halt_rollout, resume_rollout: the robot queues these itself on a halt and a resume. Store."""


class TagRelease(_Params):
    """Tag the release's head and publish a release with generated notes. VCS."""

    tag: str = Field(default="v{version}", min_length=1, max_length=200)


class SetFlag(_Params):
    """Switch a feature flag on or off (on for `percent` %) in an environment. Flags."""

    flag: str = Field(min_length=1, max_length=200)
    enabled: bool
    percent: int | None = Field(default=None, ge=0, le=100)
    environment: str | None = Field(default=None, max_length=100)


class KillSwitch(_Params):
    """The track's kill-switch flags off (enabled: false; the robot queues this on a halt) or back on
    (a release manager's resume with restore_flags). Flags."""

    enabled: bool = False


class Notify(_Params):
    """Tell the track's notification channels (Slack, a signed webhook). Notify."""

    message: str | None = Field(default=None, max_length=2000)
    event: str | None = Field(default=None, max_length=100)


ACTIONS: dict[str, type[_Params]] = {
    "cut_branch": CutBranch,
    "distribute": Distribute,
    "submit_to_store": SubmitToStore,
    "set_rollout": SetRollout,
    "halt_rollout": NoParams,
    "resume_rollout": NoParams,
    "tag_release": TagRelease,
    "set_flag": SetFlag,
    "kill_switch": KillSwitch,
    "notify": Notify,
}
STORE_ACTIONS = frozenset({"submit_to_store", "set_rollout", "halt_rollout", "resume_rollout"})
FLAG_ACTIONS = frozenset({"set_flag", "kill_switch"})
# Actions whose percent falls back to the target stage's.
PERCENT_ACTIONS = frozenset({"submit_to_store", "set_rollout"})


def check_action(name: str, params: dict[str, Any]) -> str | None:
    """None when `name` is a known action and `params` fit it; else what is wrong, in words."""
    model = ACTIONS.get(name)
    if model is None:
        return f"unknown action {name!r}; known: {', '.join(sorted(ACTIONS))}"
    try:
        model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or name
        return f"{name}: {where}: {err['msg']}"
    return None
