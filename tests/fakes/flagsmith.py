"""Flagsmith Admin API contract fake: an organisation, environments and the feature states in them.

Shapes and answers follow Flagsmith's docs and API source (api/features/views.py):
  - https://docs.flagsmith.com/integrating-with-flagsmith/flagsmith-api-overview/admin-api
        "Authorization: Api-Key <Organisation API key>"; rate limited (429 with Retry-After)
  - https://api.flagsmith.com/api/v1/docs/  (Swagger)
        GET   /api/v1/environments/{environment_api_key}/featurestates/?feature_name=|feature=
              paginated {count, next, previous, results}: the environment's own states (no identity,
              no segment override), FeatureStateSerializerWithIdentity
        PATCH /api/v1/environments/{environment_api_key}/featurestates/{id}/ {enabled}  (partial update)
        GET   /api/v1/organisations/
  - Django routes end in "/": a path without the trailing slash is not the endpoint.

Contract checks (server.reject): an Authorization header that is not "Api-Key <key>", a path
without its trailing slash (no route matches), a PATCH body that is not {"enabled": bool, ...}.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Reply, Request

STATES = r"/api/v1/environments/(?P<env>[^/]+)/featurestates/"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FlagsmithFake:
    """Routes for one organisation; `environments` maps an environment key to its id and name."""

    def __init__(self, server: FakeServer, api_key: str = "org-api-key-fake-0001"):
        self.server, self.keys = server, {api_key}
        self.organisations = [{"id": 1, "name": "Acme", "created_date": "2024-01-01T00:00:00Z"}]
        self.environments: dict[str, dict[str, Any]] = {"ser.prodKey123": {"id": 11, "name": "Production"},
                                                        "ser.betaKey456": {"id": 12, "name": "Beta"}}  # fmt: skip
        self.features: dict[str, int] = {}
        self.states: list[dict[str, Any]] = []
        self.patches: list[tuple[int, dict[str, Any]]] = []
        self._ids = itertools.count(5001)
        self._lock = threading.Lock()
        server.route("GET", r"/api/v1/organisations/", self._organisations)
        server.route("GET", STATES, self._list)
        server.route("PATCH", STATES + r"(?P<id>\d+)/", self._patch)

    def add_feature(self, name: str, enabled_in: tuple[str, ...] = ()) -> int:
        """A flag with a default state in every environment (on in `enabled_in`), plus an identity override."""
        feature_id = next(self._ids)
        self.features[name] = feature_id
        for key, env in self.environments.items():
            self.states.append(self._state(feature_id, env["id"], key in enabled_in))
        self.states.append({**self._state(feature_id, 11, True), "identity": 777})  # an identity override: never the default
        return feature_id

    def state(self, name: str, env_key: str) -> dict[str, Any]:
        env_id = self.environments[env_key]["id"]
        return next(s for s in self.states if s["feature"] == self.features[name] and s["environment"] == env_id and s["identity"] is None)

    def _state(self, feature_id: int, env_id: int, enabled: bool) -> dict[str, Any]:
        return {"id": next(self._ids), "uuid": str(uuid.uuid4()), "feature": feature_id, "environment": env_id, "identity": None,
                "feature_segment": None, "enabled": enabled, "feature_state_value": None, "multivariate_feature_state_values": [],
                "created_at": _now(), "updated_at": _now(), "version": 1, "live_from": _now(), "change_request": None}  # fmt: skip

    def _check(self, req: Request) -> Reply | dict[str, Any] | None:
        scheme, _, key = req.headers.get("authorization", "").partition(" ")
        if scheme != "Api-Key" or not key:
            return self.server.reject(req, "the Admin API takes 'Authorization: Api-Key <organisation API key>'")
        if key not in self.keys:
            return Reply(401, {"detail": "Invalid API Key"})
        if req.match is None or "env" not in req.match.groupdict():
            return None
        env = self.environments.get(unquote(req.match["env"]))
        return env if env is not None else Reply(404, {"detail": "Environment not found."})

    def _organisations(self, req: Request) -> Reply:
        checked = self._check(req)
        return checked if isinstance(checked, Reply) else Reply(200, self.organisations)

    def _list(self, req: Request) -> Reply:
        env = self._check(req)
        if isinstance(env, Reply) or env is None:
            return env or Reply(500)
        states = [s for s in self.states if s["environment"] == env["id"] and s["identity"] is None and s["feature_segment"] is None]
        if name := req.arg("feature_name"):
            states = [s for s in states if s["feature"] == self.features.get(name)]
        if feature := req.arg("feature"):
            states = [s for s in states if s["feature"] == int(feature)]
        return Reply(200, {"count": len(states), "next": None, "previous": None, "results": states})

    def _patch(self, req: Request) -> Reply:
        env = self._check(req)
        if isinstance(env, Reply) or env is None:
            return env or Reply(500)
        body = req.json() if req.body else None
        if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
            return self.server.reject(req, 'the update is a JSON object such as {"enabled": true}')
        assert req.match is not None
        with self._lock:
            state = next((s for s in self.states if s["id"] == int(req.match["id"]) and s["environment"] == env["id"]), None)
            if state is None:
                return Reply(404, {"detail": "No FeatureState matches the given query."})
            state.update(enabled=body["enabled"], updated_at=_now())
            self.patches.append((state["id"], body))
            return Reply(200, {k: state[k] for k in ("id", "feature", "environment", "identity", "feature_segment", "enabled",
                                                     "feature_state_value", "uuid", "created_at", "updated_at", "version")})  # fmt: skip
