"""Unleash as the robot's feature-flag hand, over httpx (Admin API).

    flags:
      kind: unleash
      base_url: https://unleash.example.com    # the instance root; /api/admin/... is added
      token: {env: CONDUCTOR_UNLEASH_TOKEN}    # an admin, service-account or personal access token
      project: default
      timeout_s: 10

The token goes as `Authorization: <token>` (no scheme), as Unleash reads it.

Calls (https://docs.getunleash.io/reference/api/unleash):
    check   GET  /api/admin/projects/{project}/features
    set     GET  /api/admin/projects/{project}/features/{flag}               the flag, per environment: enabled, strategies
            POST .../features/{flag}/environments/{env}/strategies           a flexibleRollout, when there is none (percent)
            PUT  .../features/{flag}/environments/{env}/strategies/{id}      its `rollout` parameter (percent)
            POST .../features/{flag}/environments/{env}/on | /off

Reads first and changes only what differs: a flag already on at that percentage makes no write.
The percentage is set before the flag is switched on, so it is never on for everyone in between.
It is the `rollout` of the environment's flexibleRollout strategy (the first one without
constraints or segments, else the first one); other strategies are left alone and listed in
the result, since Unleash ORs strategies and one of them may reach more users.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from conductor.actions.base import ActionFailed
from conductor.actions.vendor_http import VendorApi
from conductor.connect.credentials import CredentialRef

FLEXIBLE = "flexibleRollout"


class UnleashFlagsConfig(BaseModel):
    """One Unleash project on one instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["unleash"] = "unleash"
    base_url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    token: CredentialRef
    project: str = Field(default="default", min_length=1, max_length=100)
    stickiness: str = Field(default="default", min_length=1, max_length=100)  # for a flexibleRollout this adapter adds
    timeout_s: float = Field(default=10.0, gt=0, le=120)


def _rollout(strategy: dict[str, Any]) -> int | None:
    try:
        return int(float(str((strategy.get("parameters") or {}).get("rollout"))))
    except ValueError:
        return None


def _target(strategies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The flexibleRollout whose rollout is "the percentage": unconstrained first."""
    flexible = [s for s in strategies if s.get("name") == FLEXIBLE and not s.get("disabled")]
    plain = [s for s in flexible if not s.get("constraints") and not s.get("segments")]
    chosen = plain or flexible
    return chosen[0] if chosen else None


class UnleashFlags:
    """FlagClient for one Unleash project (see the module docstring)."""

    kind = "unleash"

    def __init__(self, config: UnleashFlagsConfig, client: httpx.Client):
        self.cfg = config
        self.api = VendorApi(client, config.base_url.rstrip("/") + "/api/admin", config.token, lambda token: {"Authorization": token},
                             config.timeout_s)  # fmt: skip
        self.project = f"/projects/{quote(config.project, safe='')}"

    def check(self) -> str:
        what = f"read Unleash project {self.cfg.project}"
        body = self.api.request("GET", f"{self.project}/features", what=what).json()
        count = len(body.get("features") or []) if isinstance(body, dict) else 0
        return f"Unleash project {self.cfg.project}: {count} feature flags visible with credential {self.cfg.token.describe()}"

    def set(self, flag: str, environment: str, enabled: bool, percent: int | None = None) -> dict[str, Any]:
        what = f"set {flag} {'on' if enabled else 'off'}{f' at {percent}%' if percent is not None and enabled else ''} in {environment}"
        if percent is not None and not 0 <= percent <= 100:
            raise ActionFailed(f"{what}: a percentage is 0..100, not {percent}", retryable=False)
        feature_path = f"{self.project}/features/{quote(flag, safe='')}"
        feature = self.api.request("GET", feature_path, what=what).json()
        env = next((e for e in feature.get("environments") or [] if e.get("name") == environment), None)
        if env is None:
            known = ", ".join(str(e.get("name")) for e in feature.get("environments") or [])
            raise ActionFailed(f"{what}: {flag} has no environment {environment} in project {self.cfg.project} (it has: {known})",
                               retryable=False)  # fmt: skip
        env_path = f"{feature_path}/environments/{quote(environment, safe='')}"
        changed: list[str] = []
        others: list[str] = []
        if enabled and percent is not None:
            strategies = env.get("strategies")
            if strategies is None:
                strategies = self.api.request("GET", f"{env_path}/strategies", what=what).json()
            changed, others = self._set_rollout(flag, env_path, strategies, percent, what)
        if bool(env.get("enabled")) != enabled:
            self.api.request("POST", f"{env_path}/{'on' if enabled else 'off'}", what=what)
            changed.append("switched on" if enabled else "switched off")
        result = {"flag": flag, "environment": environment, "enabled": enabled, "percent": percent if enabled else None,
                  "changed": changed, "status": "changed" if changed else "unchanged"}  # fmt: skip
        if others:
            result["other_strategies"] = others
        return result

    def _set_rollout(
        self, flag: str, env_path: str, strategies: list[dict[str, Any]], percent: int, what: str
    ) -> tuple[list[str], list[str]]:
        """The rollout of the target flexibleRollout at `percent` (added if there is none): (changes, other strategies)."""
        target = _target(strategies)
        others = [str(s.get("title") or s.get("name")) for s in strategies if s is not target and not s.get("disabled")]
        if target is None:
            body = {"name": FLEXIBLE, "constraints": [], "parameters": {"rollout": str(percent), "stickiness": self.cfg.stickiness,
                                                                        "groupId": flag}}  # fmt: skip
            self.api.request("POST", f"{env_path}/strategies", what=what, json_body=body)
            return [f"flexibleRollout added at {percent}%"], others
        before = _rollout(target)
        if before == percent:
            return [], others
        keep = ("name", "title", "disabled", "sortOrder", "constraints", "segments", "variants")
        body = {k: target[k] for k in keep if k in target}
        body["parameters"] = {**(target.get("parameters") or {}), "rollout": str(percent)}
        self.api.request("PUT", f"{env_path}/strategies/{quote(str(target['id']), safe='')}", what=what, json_body=body)
        return [f"rollout {before}% -> {percent}%"], others
