"""Unleash Admin API contract fake: one project's feature flags, per environment enabled state and strategies.

Shapes and answers follow Unleash's API reference and its OpenAPI schemas (src/lib/openapi/spec):
  - https://docs.getunleash.io/reference/api/unleash/get-feature             featureSchema: environments[] with
        name, type, enabled, strategies (featureEnvironmentSchema)
  - https://docs.getunleash.io/reference/api/unleash/toggle-feature-environment-on   POST .../environments/{env}/on
  - https://docs.getunleash.io/reference/api/unleash/toggle-feature-environment-off  POST .../environments/{env}/off
  - https://docs.getunleash.io/reference/api/unleash/get-feature-strategies          GET .../environments/{env}/strategies
  - https://docs.getunleash.io/reference/api/unleash/add-feature-strategy            createFeatureStrategySchema (name required;
        parameters are strings: rollout "0".."100", stickiness, groupId)
  - https://docs.getunleash.io/reference/api/unleash/update-feature-strategy         PUT .../strategies/{strategyId}
  - https://docs.getunleash.io/reference/api/unleash/get-features                    projectFeaturesSchema {version, features}
  - https://docs.getunleash.io/reference/api-tokens-and-client-keys                  the token is the whole Authorization header
        (src/lib/middleware/api-token-middleware.ts reads req.header('authorization') as the token)
  - Enabling an environment that has no strategies adds the default strategy (a flexibleRollout at 100%).

Contract checks (server.reject): no Authorization header or a "Bearer " scheme, a strategy
without a name, parameters that are not strings, a flexibleRollout rollout outside "0".."100".
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Reply, Request

BASE = r"/api/admin/projects/(?P<project>[^/]+)/features"
FEATURE = BASE + r"/(?P<feature>[^/]+)"
ENV = FEATURE + r"/environments/(?P<env>[^/]+)"
UNAUTHORIZED = {"id": "3c2d5fc0-0000-4000-8000-000000000401", "name": "AuthenticationRequired",
                "message": "You must log in to use Unleash. Your request had no authorization header, so we could not authorize you. "
                           "Try logging in at /auth/simple/login."}  # fmt: skip


def _error(status: int, name: str, message: str) -> Reply:
    return Reply(status, {"id": str(uuid.uuid4()), "name": name, "message": message})


class UnleashFake:
    """Routes for one Unleash project; `features[name]["environments"][env]` = {"enabled", "type", "strategies"}."""

    def __init__(self, server: FakeServer, project: str = "default", token: str = "*:*.unleash-admin-fake-0001"):
        self.server, self.project, self.tokens = server, project, {token}
        self.environment_types = {"development": "development", "production": "production"}
        self.features: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []  # "on:flag/env", "off:...", "add:...", "update:..."
        self._sort = itertools.count(0)
        self._lock = threading.Lock()
        server.route("GET", BASE, self._list)
        server.route("GET", FEATURE, self._get)
        server.route("POST", ENV + r"/(?P<onoff>on|off)", self._toggle)
        server.route("GET", ENV + r"/strategies", self._strategies)
        server.route("POST", ENV + r"/strategies", self._add_strategy)
        server.route("PUT", ENV + r"/strategies/(?P<sid>[^/]+)", self._update_strategy)

    def add_feature(self, name: str, **enabled: bool) -> dict[str, Any]:
        """A release flag with these environments (name=enabled), no strategies yet."""
        envs = {env: {"enabled": enabled.get(env, False), "type": kind, "strategies": []} for env, kind in self.environment_types.items()}
        self.features[name] = {"name": name, "type": "release", "project": self.project, "stale": False, "environments": envs}
        return self.features[name]

    def strategy(self, name: str = "flexibleRollout", rollout: int = 100, **extra: Any) -> dict[str, Any]:
        params = {"rollout": str(rollout), "stickiness": "default", "groupId": "g"} if name == "flexibleRollout" else {}
        return {"id": str(uuid.uuid4()), "name": name, "title": None, "disabled": False, "constraints": [], "segments": [],
                "variants": [], "sortOrder": next(self._sort), "parameters": params, **extra}  # fmt: skip

    # ------------------------------------------------------------ checks

    def _check(self, req: Request) -> Reply | tuple[dict[str, Any], str | None]:
        """Auth and lookup: the feature (and environment name) the path names, or the answer Unleash gives."""
        header = req.headers.get("authorization")
        if not header or header.lower().startswith("bearer "):
            return self.server.reject(req, "Unleash takes the API token as the whole Authorization header, without a scheme")
        if header not in self.tokens:
            return Reply(401, UNAUTHORIZED)
        assert req.match is not None
        groups = req.match.groupdict()
        if unquote(groups["project"]) != self.project:
            return _error(404, "NotFoundError", f"Could not find project with id {unquote(groups['project'])}")
        if "feature" not in groups:
            return {}, None
        feature = self.features.get(unquote(groups["feature"]))
        if feature is None:
            return _error(404, "NotFoundError", f"Could not find feature flag with name {unquote(groups['feature'])}")
        env = unquote(groups["env"]) if groups.get("env") else None
        if env is not None and env not in feature["environments"]:
            return _error(404, "NotFoundError", f"Could not find environment with name {env}")
        return feature, env

    def _feature_json(self, feature: dict[str, Any]) -> dict[str, Any]:
        envs = [{"name": env, "featureName": feature["name"], "environment": env, "type": e["type"], "enabled": e["enabled"],
                 "sortOrder": i, "strategies": e["strategies"], "variants": [], "hasStrategies": bool(e["strategies"])}
                for i, (env, e) in enumerate(feature["environments"].items())]  # fmt: skip
        return {**{k: v for k, v in feature.items() if k != "environments"}, "environments": envs, "variants": [], "impressionData": False}

    def _strategy_problem(self, req: Request, body: Any, partial: bool = False) -> str | None:
        if not isinstance(body, dict) or (not partial and not isinstance(body.get("name"), str)):
            return "a strategy is a JSON object with a name"
        params = body.get("parameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            return "strategy parameters are strings (parametersSchema)"
        rollout = params.get("rollout")
        if body.get("name") == "flexibleRollout" and rollout is not None and not (rollout.isdigit() and 0 <= int(rollout) <= 100):
            return f"a flexibleRollout's rollout is '0'..'100', got {rollout!r}"
        return None

    # ------------------------------------------------------------ routes

    def _list(self, req: Request) -> Reply:
        checked = self._check(req)
        if isinstance(checked, Reply):
            return checked
        features = [{"name": f["name"], "type": f["type"], "stale": f["stale"],
                     "environments": [{"name": n, "enabled": e["enabled"], "type": e["type"]} for n, e in f["environments"].items()]}
                    for f in self.features.values()]  # fmt: skip
        return Reply(200, {"version": 1, "features": features})

    def _get(self, req: Request) -> Reply:
        checked = self._check(req)
        if isinstance(checked, Reply):
            return checked
        return Reply(200, self._feature_json(checked[0]))

    def _toggle(self, req: Request) -> Reply:
        checked = self._check(req)
        if isinstance(checked, Reply):
            return checked
        feature, env = checked
        assert env is not None and req.match is not None
        with self._lock:
            state = feature["environments"][env]
            state["enabled"] = req.match["onoff"] == "on"
            if state["enabled"] and not state["strategies"]:
                state["strategies"].append(self.strategy())  # Unleash adds the default strategy
            self.writes.append(f"{req.match['onoff']}:{feature['name']}/{env}")
        return Reply(200, self._feature_json(feature))

    def _strategies(self, req: Request) -> Reply:
        checked = self._check(req)
        if isinstance(checked, Reply):
            return checked
        feature, env = checked
        assert env is not None
        return Reply(200, feature["environments"][env]["strategies"])

    def _add_strategy(self, req: Request) -> Reply:
        checked = self._check(req)
        if isinstance(checked, Reply):
            return checked
        feature, env = checked
        assert env is not None
        body = req.json()
        problem = self._strategy_problem(req, body)
        if problem:
            return self.server.reject(req, problem)
        with self._lock:
            strategy = {**self.strategy(body["name"]), **body}
            feature["environments"][env]["strategies"].append(strategy)
            self.writes.append(f"add:{feature['name']}/{env}")
        return Reply(200, strategy)

    def _update_strategy(self, req: Request) -> Reply:
        checked = self._check(req)
        if isinstance(checked, Reply):
            return checked
        feature, env = checked
        assert env is not None and req.match is not None
        body = req.json()
        problem = self._strategy_problem(req, body, partial=True)
        if problem:
            return self.server.reject(req, problem)
        with self._lock:
            strategies = feature["environments"][env]["strategies"]
            index = next((i for i, s in enumerate(strategies) if s["id"] == req.match["sid"]), None)
            if index is None:
                return _error(404, "NotFoundError", f"Could not find strategy with id {req.match['sid']}")
            strategies[index] = {**strategies[index], **body, "id": req.match["sid"]}
            self.writes.append(f"update:{feature['name']}/{env}")
            return Reply(200, strategies[index])
