"""Flagsmith as the robot's feature-flag hand, over httpx (Admin API).

    flags:
      kind: flagsmith
      base_url: https://api.flagsmith.com       # self-hosted: your API's root
      api_key: {env: CONDUCTOR_FLAGSMITH_KEY}   # an Organisation API key (Admin API), sent as "Api-Key <key>"
      environments:                             # names the release track uses -> environment keys
        production: ser.AbcDef123                 (the environment's key identifies it; the secret is api_key)
        beta: ser.XyzUvw456
      timeout_s: 10

Calls (https://docs.flagsmith.com/integrating-with-flagsmith/flagsmith-api-overview/admin-api,
Swagger at https://api.flagsmith.com/api/v1/docs/):
    check   GET   /api/v1/organisations/
    set     GET   /api/v1/environments/{env_key}/featurestates/?feature_name={flag}   the environment default
            PATCH /api/v1/environments/{env_key}/featurestates/{id}/ {enabled}         only when it differs

Percentages: Flagsmith rolls out by multivariate weights or segment overrides, not by a
percentage on the flag, and this adapter changes neither; on with a percentage below 100 is
refused (not retryable), on at 100 is plain on. Environments with v2 feature versioning or
change requests take their changes through versions or change requests, which this adapter does
not create: Flagsmith's refusal is reported with its own words.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from conductor.actions.base import ActionFailed
from conductor.actions.vendor_http import VendorApi
from conductor.connect.credentials import CredentialRef


class FlagsmithFlagsConfig(BaseModel):
    """A Flagsmith organisation's Admin API and the environments the track switches flags in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["flagsmith"] = "flagsmith"
    base_url: str = Field(default="https://api.flagsmith.com", pattern=r"^https?://[^\s/]+(/\S*)?$")
    api_key: CredentialRef
    environments: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class FlagsmithFlags:
    """FlagClient for Flagsmith (see the module docstring)."""

    kind = "flagsmith"

    def __init__(self, config: FlagsmithFlagsConfig, client: httpx.Client):
        self.cfg = config
        base = config.base_url.rstrip("/") + "/api/v1"
        self.api = VendorApi(client, base, config.api_key, lambda key: {"Authorization": f"Api-Key {key}"}, config.timeout_s)

    def check(self) -> str:
        body = self.api.request("GET", "/organisations/", what="read Flagsmith organisations").json()
        orgs = body.get("results", []) if isinstance(body, dict) else body
        names = ", ".join(str(o.get("name")) for o in orgs) or "none"
        return f"Flagsmith: organisation {names} visible with credential {self.cfg.api_key.describe()}"

    def set(self, flag: str, environment: str, enabled: bool, percent: int | None = None) -> dict[str, Any]:
        what = f"set {flag} {'on' if enabled else 'off'} in {environment}"
        if enabled and percent is not None and percent != 100:
            raise ActionFailed(f"{what} at {percent}%: Flagsmith rolls out by multivariate weights or segment overrides, which "
                               "this adapter does not change; switch it on or off, or ask for 100%", retryable=False)  # fmt: skip
        env_path = f"/environments/{quote(self.cfg.environments.get(environment, environment), safe='')}/featurestates/"
        state = self._state(env_path, flag, environment, what)
        result = {"flag": flag, "environment": environment, "enabled": enabled, "feature_state": state.get("id")}
        if bool(state.get("enabled")) == enabled:
            return {**result, "changed": [], "status": "unchanged"}
        self.api.request("PATCH", f"{env_path}{state['id']}/", what=what, json_body={"enabled": enabled})
        return {**result, "changed": ["switched on" if enabled else "switched off"], "status": "changed"}

    def _state(self, env_path: str, flag: str, environment: str, what: str) -> dict[str, Any]:
        """The environment's own feature state of `flag` (not an identity's or a segment's override)."""
        body = self.api.request("GET", env_path, what=what, params={"feature_name": flag}).json()
        results = body.get("results", []) if isinstance(body, dict) else body
        states = [s for s in results if s.get("identity") is None and s.get("feature_segment") is None]
        if not states:
            raise ActionFailed(f"{what}: no feature named {flag} in environment {environment}", retryable=False)
        if len(states) > 1:  # a server that ignored feature_name would hand us every flag: touch none
            raise ActionFailed(f"{what}: Flagsmith returned {len(states)} feature states for feature_name={flag}; "
                               "expected one (is this Flagsmith too old for the feature_name filter?)", retryable=False)  # fmt: skip
        state: dict[str, Any] = states[0]
        return state
