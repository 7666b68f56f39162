"""UnleashFlags and FlagsmithFlags against their contract fakes: on, off and percentages, idempotent
by state, and the vendors' faults."""

from __future__ import annotations

import time

import httpx
import pytest

from conductor.actions.base import ActionFailed
from conductor.actions.flags.flagsmith import FlagsmithFlags, FlagsmithFlagsConfig
from conductor.actions.flags.unleash import UnleashFlags, UnleashFlagsConfig
from tests.fakes.flagsmith import FlagsmithFake
from tests.fakes.server import FakeServer
from tests.fakes.unleash import UnleashFake

UNLEASH_TOKEN = "*:*.unleash-admin-fake-0001"
FLAGSMITH_KEY = "org-api-key-fake-0001"


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture
def client():
    with httpx.Client() as c:
        yield c


# ================================================================ Unleash


@pytest.fixture
def unleash_fake(server):
    fake = UnleashFake(server)
    fake.add_feature("new-checkout", development=True)
    return fake


@pytest.fixture
def unleash(server, client, monkeypatch):
    monkeypatch.setenv("UNLEASH_TOKEN_TEST", UNLEASH_TOKEN)
    return make_unleash(server, client)


def make_unleash(server, client, **overrides) -> UnleashFlags:
    cfg = {"base_url": server.url, "token": {"env": "UNLEASH_TOKEN_TEST"}, "timeout_s": 2.0, **overrides}
    return UnleashFlags(UnleashFlagsConfig.model_validate(cfg), client)


def test_unleash_on_and_off_are_idempotent(unleash, unleash_fake, server):
    out = unleash.set("new-checkout", "production", True)
    assert out == {"flag": "new-checkout", "environment": "production", "enabled": True, "percent": None,
                   "changed": ["switched on"], "status": "changed"}  # fmt: skip
    assert unleash.set("new-checkout", "production", True)["status"] == "unchanged"
    assert unleash.set("new-checkout", "production", False)["changed"] == ["switched off"]
    assert unleash.set("new-checkout", "production", False)["status"] == "unchanged"
    assert unleash_fake.writes == ["on:new-checkout/production", "off:new-checkout/production"]
    on = server.calls("POST", r"/environments/production/on$")[0]
    assert on.path == "/api/admin/projects/default/features/new-checkout/environments/production/on"
    assert on.headers["authorization"] == UNLEASH_TOKEN
    assert server.violations == []


def test_unleash_percent_sets_the_rollout_before_switching_on(unleash, unleash_fake, server):
    out = unleash.set("new-checkout", "production", True, percent=10)
    assert out["changed"] == ["flexibleRollout added at 10%", "switched on"] and out["percent"] == 10
    assert unleash_fake.writes == ["add:new-checkout/production", "on:new-checkout/production"]  # never on for all in between
    added = server.calls("POST", r"/strategies$")[0].json()
    assert added == {"name": "flexibleRollout", "constraints": [], "parameters": {"rollout": "10", "stickiness": "default",
                                                                                   "groupId": "new-checkout"}}  # fmt: skip
    assert unleash.set("new-checkout", "production", True, percent=10)["status"] == "unchanged"
    out = unleash.set("new-checkout", "production", True, percent=50)
    assert out["changed"] == ["rollout 10% -> 50%"]
    strategies = unleash_fake.features["new-checkout"]["environments"]["production"]["strategies"]
    assert len(strategies) == 1 and strategies[0]["parameters"] == {"rollout": "50", "stickiness": "default", "groupId": "new-checkout"}
    assert unleash_fake.writes[-1] == "update:new-checkout/production" and len(unleash_fake.writes) == 3
    assert server.violations == []


def test_unleash_percent_changes_the_plain_flexible_rollout_and_reports_the_others(unleash, unleash_fake, server):
    env = unleash_fake.features["new-checkout"]["environments"]["production"]
    constrained = unleash_fake.strategy(rollout=100, constraints=[{"contextName": "userId", "operator": "IN", "values": ["qa"]}])
    plain = unleash_fake.strategy(rollout=5, title="Gradual rollout")
    env.update(enabled=True, strategies=[constrained, plain])
    out = unleash.set("new-checkout", "production", True, percent=25)
    assert out["changed"] == ["rollout 5% -> 25%"] and out["other_strategies"] == ["flexibleRollout"]
    assert plain["id"] == env["strategies"][1]["id"] and env["strategies"][1]["parameters"]["rollout"] == "25"
    assert env["strategies"][0]["parameters"]["rollout"] == "100"
    put = server.calls("PUT", r"/strategies/")[0]
    assert put.path.endswith(f"/strategies/{plain['id']}") and put.json()["title"] == "Gradual rollout"
    assert server.violations == []


def test_unleash_names_what_is_missing(unleash, unleash_fake):
    with pytest.raises(ActionFailed, match="has no environment staging in project default \\(it has: development, production\\)") as exc:
        unleash.set("new-checkout", "staging", True)
    assert not exc.value.retryable
    with pytest.raises(ActionFailed, match="Could not find feature flag with name nope") as exc:
        unleash.set("nope", "production", True)
    assert not exc.value.retryable
    with pytest.raises(ActionFailed, match="0..100") as exc:
        unleash.set("new-checkout", "production", True, percent=150)
    assert not exc.value.retryable


def test_unleash_bad_credentials_are_named_not_shown(server, client, unleash_fake, monkeypatch):
    monkeypatch.setenv("UNLEASH_TOKEN_TEST", "*:*.revoked")
    with pytest.raises(ActionFailed) as exc:
        make_unleash(server, client).set("new-checkout", "production", True)
    assert not exc.value.retryable and "bad credentials (credential env UNLEASH_TOKEN_TEST)" in str(exc.value)
    assert "revoked" not in str(exc.value) and server.violations == []


def test_unleash_rate_limits_server_errors_and_late_answers_are_retryable(server, client, unleash_fake, monkeypatch):
    monkeypatch.setenv("UNLEASH_TOKEN_TEST", UNLEASH_TOKEN)
    unleash = make_unleash(server, client, timeout_s=0.4)
    server.fault("GET", r"/features/new-checkout$", status=429, body={"message": "Too many requests"}, headers={"Retry-After": "9"})
    with pytest.raises(ActionFailed, match="rate limited") as exc:
        unleash.set("new-checkout", "production", True)
    assert exc.value.retryable and exc.value.retry_after == 9
    server.fault("POST", r"/on$", status=503, body="<html>Service Unavailable</html>", content_type="text/html")
    with pytest.raises(ActionFailed, match="HTTP 503") as exc:
        unleash.set("new-checkout", "production", True)
    assert exc.value.retryable
    server.fault("POST", r"/on$", status=None, delay=1.0)
    with pytest.raises(ActionFailed, match="timed out") as exc:
        unleash.set("new-checkout", "production", True)
    assert exc.value.retryable
    deadline = time.monotonic() + 5
    while not unleash_fake.features["new-checkout"]["environments"]["production"]["enabled"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert unleash.set("new-checkout", "production", True)["status"] == "unchanged"
    assert unleash_fake.writes == ["on:new-checkout/production"] and server.violations == []


def test_unleash_check(unleash, unleash_fake, server):
    assert unleash.check() == "Unleash project default: 1 feature flags visible with credential env UNLEASH_TOKEN_TEST"
    assert server.violations == []


# ================================================================ Flagsmith


@pytest.fixture
def flagsmith_fake(server):
    fake = FlagsmithFake(server)
    fake.add_feature("new_checkout", enabled_in=("ser.betaKey456",))
    fake.add_feature("dark_mode")
    return fake


@pytest.fixture
def flagsmith(server, client, monkeypatch):
    monkeypatch.setenv("FLAGSMITH_KEY_TEST", FLAGSMITH_KEY)
    return make_flagsmith(server, client)


def make_flagsmith(server, client, **overrides) -> FlagsmithFlags:
    cfg = {"base_url": server.url, "api_key": {"env": "FLAGSMITH_KEY_TEST"}, "timeout_s": 2.0,
           "environments": {"production": "ser.prodKey123", "beta": "ser.betaKey456"}, **overrides}  # fmt: skip
    return FlagsmithFlags(FlagsmithFlagsConfig.model_validate(cfg), client)


def test_flagsmith_on_and_off_are_idempotent(flagsmith, flagsmith_fake, server):
    state = flagsmith_fake.state("new_checkout", "ser.prodKey123")
    out = flagsmith.set("new_checkout", "production", True)
    assert out == {"flag": "new_checkout", "environment": "production", "enabled": True, "feature_state": state["id"],
                   "changed": ["switched on"], "status": "changed"}  # fmt: skip
    assert state["enabled"] and flagsmith.set("new_checkout", "production", True)["status"] == "unchanged"
    assert flagsmith.set("new_checkout", "beta", True)["status"] == "unchanged"  # already on there
    assert flagsmith.set("new_checkout", "production", False)["changed"] == ["switched off"]
    assert flagsmith_fake.patches == [(state["id"], {"enabled": True}), (state["id"], {"enabled": False})]
    listed = server.calls("GET", r"/featurestates/$")[0]
    assert listed.path == "/api/v1/environments/ser.prodKey123/featurestates/" and listed.arg("feature_name") == "new_checkout"
    assert listed.headers["authorization"] == f"Api-Key {FLAGSMITH_KEY}"
    assert server.calls("PATCH")[0].path == f"/api/v1/environments/ser.prodKey123/featurestates/{state['id']}/"
    assert server.violations == []


def test_flagsmith_refuses_a_percentage_it_cannot_set(flagsmith, flagsmith_fake, server):
    with pytest.raises(ActionFailed, match="multivariate weights or segment overrides") as exc:
        flagsmith.set("new_checkout", "production", True, percent=25)
    assert not exc.value.retryable and not server.calls()
    assert flagsmith.set("new_checkout", "production", True, percent=100)["changed"] == ["switched on"]
    assert server.violations == []


def test_flagsmith_names_what_is_missing(flagsmith, flagsmith_fake):
    with pytest.raises(ActionFailed, match="no feature named nope in environment production") as exc:
        flagsmith.set("nope", "production", True)
    assert not exc.value.retryable
    with pytest.raises(ActionFailed, match="Environment not found") as exc:
        flagsmith.set("new_checkout", "ser.unknown", True)
    assert not exc.value.retryable


def test_flagsmith_touches_nothing_when_the_name_filter_is_ignored(flagsmith, flagsmith_fake, server):
    everything = [flagsmith_fake.state("new_checkout", "ser.prodKey123"), flagsmith_fake.state("dark_mode", "ser.prodKey123")]
    server.fault("GET", r"/featurestates/$", status=200, body={"count": 2, "next": None, "previous": None, "results": everything})
    with pytest.raises(ActionFailed, match="returned 2 feature states") as exc:
        flagsmith.set("new_checkout", "production", True)
    assert not exc.value.retryable and not server.calls("PATCH")


def test_flagsmith_credentials_rate_limits_and_server_errors(server, client, flagsmith_fake, monkeypatch):
    monkeypatch.setenv("FLAGSMITH_KEY_TEST", "revoked-key")
    with pytest.raises(ActionFailed) as exc:
        make_flagsmith(server, client).set("new_checkout", "production", True)
    assert not exc.value.retryable and "bad credentials (credential env FLAGSMITH_KEY_TEST)" in str(exc.value)
    assert "revoked-key" not in str(exc.value)
    monkeypatch.setenv("FLAGSMITH_KEY_TEST", FLAGSMITH_KEY)
    flagsmith = make_flagsmith(server, client)
    server.fault("PATCH", r"/featurestates/\d+/$", status=429, body={"detail": "Request was throttled. Expected available in 7 seconds."},
                 headers={"Retry-After": "7"})  # fmt: skip
    with pytest.raises(ActionFailed, match="rate limited: Request was throttled") as exc:
        flagsmith.set("new_checkout", "production", True)
    assert exc.value.retryable and exc.value.retry_after == 7
    server.fault("GET", r"/featurestates/$", status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    with pytest.raises(ActionFailed, match="HTTP 502") as exc:
        flagsmith.set("new_checkout", "production", True)
    assert exc.value.retryable
    assert flagsmith.set("new_checkout", "production", True)["status"] == "changed"
    assert server.violations == []


def test_flagsmith_check(flagsmith, flagsmith_fake, server):
    assert flagsmith.check() == "Flagsmith: organisation Acme visible with credential env FLAGSMITH_KEY_TEST"
    assert server.violations == []
