"""PlayStore against the contract fake of the Play Developer Publishing API v3 and Google's token
endpoint: real HTTP through google-api-python-client, every request checked against the discovery
document the library ships (a slip lands in fake.violations, asserted empty)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import pytest

from conductor.actions.base import ActionFailed
from conductor.actions.stores.play import PlayStore
from conductor.connect.credentials import CredentialRef
from tests.fakes.google_oauth import GoogleOAuthFake, new_rsa_key
from tests.fakes.play import PlayFake
from tests.fakes.server import FakeServer

PACKAGE = "com.example.shop"
ACCOUNT = "conductor@release-robot.iam.gserviceaccount.com"
ENV = "PLAY_SERVICE_ACCOUNT"
BASE = {"name": "8.8.0", "versionCodes": ["880"], "status": "completed"}


@dataclass
class World:
    fake: PlayFake
    oauth: GoogleOAuthFake
    server: FakeServer
    key: dict[str, Any]  # the service-account JSON

    def store(self, timeout_s: float = 5.0) -> PlayStore:
        return PlayStore(PACKAGE, CredentialRef(env=ENV), endpoint=self.server.url, timeout_s=timeout_s)

    def updates(self) -> list[dict[str, Any]]:
        """The Track bodies of every tracks.update request."""
        return [r.json() for r in self.server.calls("PUT", r"/edits/[^/]+/tracks/")]

    def production(self) -> list[dict[str, Any]]:
        return self.fake.track(PACKAGE, "production")


@pytest.fixture(scope="session")
def rsa_key():
    return new_rsa_key()


@pytest.fixture
def world(rsa_key, monkeypatch):
    with FakeServer() as server:
        oauth = GoogleOAuthFake(server)
        fake = PlayFake(server, oauth)
        key = oauth.service_account(rsa_key, ACCOUNT)
        monkeypatch.setenv(ENV, json.dumps(key))
        fake.app(PACKAGE, users=(ACCOUNT,), bundles=("880", "889", "890", "891"), closed_tracks=("qa-team",))
        fake.seed(PACKAGE, "production", [BASE])
        yield World(fake, oauth, server, key)


def staged(code: str, fraction: float, status: str = "inProgress", **extra: Any) -> dict[str, Any]:
    return {"name": "8.9.0", "versionCodes": [code], "status": status, "userFraction": fraction, **extra}


# ------------------------------------------------------------ rollouts


def test_rollout_1_then_20_then_100_percent(world):
    store = world.store()
    first = store.rollout("890", "8.9.0", 1)
    assert (first.status, first.percent, first.build) == ("in_progress", 1.0, "890")
    assert world.production() == [staged("890", 0.01), BASE]  # Play keeps the completed release beside the staged one
    assert store.rollout("890", "8.9.0", 20).percent == 20.0
    assert world.production() == [staged("890", 0.2), BASE]
    done = store.rollout("890", "8.9.0", 100)
    assert (done.status, done.percent) == ("completed", 100.0)
    assert world.production() == [{"name": "8.9.0", "versionCodes": ["890"], "status": "completed"}]
    # one edit a change, each update naming only the release it changes (as fastlane supply does)
    assert len(world.fake.commits) == 3 and [len(u["releases"]) for u in world.updates()] == [1, 1, 1]
    assert world.updates()[2]["releases"][0] == {"name": "8.9.0", "versionCodes": ["890"], "status": "completed"}
    assert world.fake.open_edits() == [] and world.fake.violations == []


def test_halt_and_resume_at_the_same_fraction(world):
    store = world.store()
    store.rollout("890", "8.9.0", 20)
    halted = store.halt("890", "8.9.0")
    assert (halted.status, halted.percent) == ("halted", 20.0)
    assert world.production() == [staged("890", 0.2, "halted"), BASE]
    resumed = store.resume("890", "8.9.0")
    assert (resumed.status, resumed.percent) == ("in_progress", 20.0)
    assert world.production() == [staged("890", 0.2), BASE]
    assert len(world.fake.commits) == 3 and world.fake.violations == []


def test_halting_a_completed_release_serves_the_previous_version_again(world):
    store = world.store()
    store.rollout("890", "8.9.0", 100)
    halted = store.halt("890", "8.9.0")
    assert (halted.status, halted.percent) == ("halted", 100.0)
    assert world.production() == [{"name": "8.9.0", "versionCodes": ["890"], "status": "halted"}, BASE]
    assert "userFraction" not in world.updates()[-1]["releases"][0]
    resumed = store.resume("890", "8.9.0")
    assert (resumed.status, resumed.percent) == ("completed", 100.0)
    assert world.production() == [{"name": "8.9.0", "versionCodes": ["890"], "status": "completed"}]
    assert world.fake.violations == []


def test_a_new_staged_rollout_replaces_a_halted_one(world):
    world.fake.seed(PACKAGE, "production", [staged("889", 0.05, "halted", name="8.8.9"), BASE])
    assert world.store().rollout("890", "8.9.0", 5).status == "in_progress"
    assert world.production() == [staged("890", 0.05), BASE]
    assert world.fake.violations == []


def test_release_notes_and_in_app_update_priority_only_on_the_first_rollout(world):
    store = world.store()
    store.rollout("890", "8.9.0", 1, notes={"en-US": "Faster checkout", "de-DE": "Schnellere Kasse"}, priority=4)
    store.rollout("890", "8.9.0", 20, notes={"en-US": "Something else"}, priority=5)
    first, second = (u["releases"][0] for u in world.updates())
    notes = [{"language": "en-US", "text": "Faster checkout"}, {"language": "de-DE", "text": "Schnellere Kasse"}]
    assert first["releaseNotes"] == notes and first["inAppUpdatePriority"] == 4
    assert second["releaseNotes"] == notes and "inAppUpdatePriority" not in second  # fixed once rolled out
    assert world.production()[0]["inAppUpdatePriority"] == 4
    store.halt("890", "8.9.0")
    store.resume("890", "8.9.0")
    assert all("inAppUpdatePriority" not in u["releases"][0] for u in world.updates()[1:])
    assert world.fake.violations == []


def test_a_draft_becomes_the_first_rollout_with_its_notes_and_priority(world):
    world.fake.seed(PACKAGE, "production", [{"name": "8.9.0", "versionCodes": ["890"], "status": "draft"}, BASE])
    assert world.store().read("890", "8.9.0").status == "draft"
    world.store().rollout("890", "8.9.0", 2, notes={"en-US": "New"}, priority=2)
    sent = world.updates()[0]["releases"][0]
    assert sent["inAppUpdatePriority"] == 2 and sent["releaseNotes"] == [{"language": "en-US", "text": "New"}]
    assert world.fake.violations == []


# ------------------------------------------------------------ testing tracks, builds, reading


def test_distribute_to_internal_beta_and_a_closed_track(world):
    store = world.store()
    for ring in ("internal", "beta", "qa-team"):
        got = store.distribute("890", "8.9.0", ring)
        assert (got.status, got.percent, got.build) == ("completed", 100.0, "890")
        assert world.fake.track(PACKAGE, ring) == [{"name": "8.9.0", "versionCodes": ["890"], "status": "completed"}]
    store.distribute("891", "8.9.1", "internal")  # the newer build supersedes the older on a testing track
    assert world.fake.track(PACKAGE, "internal") == [{"name": "8.9.1", "versionCodes": ["891"], "status": "completed"}]
    assert world.production() == [BASE] and len(world.fake.commits) == 4
    assert world.fake.violations == []


def test_distribute_is_not_for_production_nor_an_unknown_track(world):
    with pytest.raises(ActionFailed, match="not a testing track") as exc:
        world.store().distribute("890", "8.9.0", "production")
    assert not exc.value.retryable
    with pytest.raises(ActionFailed, match=r"HTTP 404 NOT_FOUND: Track not found: nightly") as exc:
        world.store().distribute("890", "8.9.0", "nightly")
    assert not exc.value.retryable and world.fake.commits == [] and world.fake.open_edits() == [] and world.fake.violations == []


def test_find_build_looks_at_the_testing_tracks(world):
    world.fake.seed(PACKAGE, "internal", [{"name": "8.9.0", "versionCodes": ["889"], "status": "completed"}])
    world.fake.seed(PACKAGE, "beta", [{"name": "8.9.0", "versionCodes": ["890"], "status": "completed"}])
    world.fake.seed(PACKAGE, "alpha", [{"name": "8.9.1", "versionCodes": ["891"], "status": "completed"}])
    store = world.store()
    assert store.find_build("8.9.0") == "890"
    assert store.find_build("8.9.1") == "891"
    assert store.find_build("8.8.0") is None  # only in production
    assert store.find_build("9.0.0") is None
    assert world.fake.commits == [] and world.fake.open_edits() == [] and world.fake.violations == []


@pytest.mark.parametrize(
    ("releases", "expected"),
    [
        ([BASE], ("none", None, None)),
        ([{"name": "8.9.0", "versionCodes": ["890"], "status": "draft"}, BASE], ("draft", None, "890")),
        ([staged("890", 0.05), BASE], ("in_progress", 5.0, "890")),
        ([staged("890", 0.5, "halted"), BASE], ("halted", 50.0, "890")),
        ([{"name": "8.9.0", "versionCodes": ["890"], "status": "halted"}, BASE], ("halted", 100.0, "890")),
        ([{"name": "8.9.0", "versionCodes": ["889", "890"], "status": "completed"}], ("completed", 100.0, "890")),
    ],
)
def test_read_normalises_the_production_track(world, releases, expected):
    world.fake.seed(PACKAGE, "production", releases)
    got = world.store().read("890", "8.9.0")
    assert (got.status, got.percent, got.build) == expected
    assert got.detail["track"] == "production" and got.detail["committed"] is False
    assert world.fake.commits == [] and world.fake.open_edits() == [] and world.fake.violations == []


def test_check_is_one_read_only_look(world):
    said = world.store().check()
    assert ACCOUNT in said and f"env {ENV}" in said and PACKAGE in said and "production" in said
    assert world.fake.commits == [] and world.fake.open_edits() == [] and world.fake.violations == []


def test_the_endpoint_comes_from_the_environment(world, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_PLAY_API_ENDPOINT", world.server.url + "/")
    assert PlayStore(PACKAGE, CredentialRef(env=ENV)).read("880", "8.8.0").status == "completed"
    assert world.oauth.grants == 1 and world.fake.violations == []


# ------------------------------------------------------------ idempotency


def test_a_second_identical_call_commits_nothing(world):
    store = world.store()
    for call in (lambda: store.rollout("890", "8.9.0", 20), lambda: store.halt("890", "8.9.0"), lambda: store.resume("890", "8.9.0")):
        first, again = call(), call()
        assert first.detail["committed"] is True and again.detail["committed"] is False
        assert (again.status, again.percent) == (first.status, first.percent)
    store.distribute("890", "8.9.0", "beta")
    store.distribute("890", "8.9.0", "beta")
    assert len(world.fake.commits) == 4 and len(world.updates()) == 4
    assert world.fake.open_edits() == [] and world.fake.violations == []


def test_a_commit_that_timed_out_but_was_applied_is_not_applied_again(world):
    store = world.store(timeout_s=0.5)
    world.server.fault("POST", r":commit$", status=None, delay=1.0)  # Play commits, the answer comes too late
    with pytest.raises(ActionFailed, match=r"edits.commit .*timed out after 0.5s") as exc:
        store.rollout("890", "8.9.0", 20)
    assert exc.value.retryable
    deadline = time.monotonic() + 5
    while not world.fake.commits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.production() == [staged("890", 0.2), BASE]
    again = store.rollout("890", "8.9.0", 20)  # the outbox's retry: a new edit reads the change made
    assert (again.status, again.percent, again.detail["committed"]) == ("in_progress", 20.0, False)
    assert len(world.fake.commits) == 1 and len(world.updates()) == 1
    assert world.production() == [staged("890", 0.2), BASE] and world.fake.violations == []


def test_an_edit_dropped_by_another_commit_is_retried_with_a_new_edit(world):
    console = {"name": "8.8.1", "versionCodes": ["889"], "status": "completed"}
    world.fake.before_commit = lambda edit: world.fake.seed(PACKAGE, "internal", [console])  # someone commits first
    store = world.store()
    with pytest.raises(ActionFailed, match="This Edit has been deleted") as exc:
        store.rollout("890", "8.9.0", 5)
    assert exc.value.retryable and world.production() == [BASE]
    assert store.rollout("890", "8.9.0", 5).detail["committed"] is True
    assert world.production() == [staged("890", 0.05), BASE] and world.fake.violations == []


# ------------------------------------------------------------ faults


def test_the_token_endpoint_refusing_the_key_is_not_retryable_and_names_the_credential(world):
    refusal = {"error": "unauthorized_client", "error_description": "Client is unauthorized"}
    world.server.fault("POST", r"^/token$", status=401, body=refusal)
    with pytest.raises(ActionFailed) as exc:
        world.store().read("890", "8.9.0")
    message = str(exc.value)
    assert not exc.value.retryable
    assert f"env {ENV}" in message and ACCOUNT in message and "unauthorized_client" in message
    assert "PRIVATE KEY" not in message and world.server.calls(pattern="^/androidpublisher") == []


def test_a_revoked_key_is_not_retryable(world):
    world.oauth.revoke_keys(ACCOUNT)
    with pytest.raises(ActionFailed, match=f"refused the key env {ENV}.*Invalid JWT Signature") as exc:
        world.store().check()
    assert not exc.value.retryable and world.fake.violations == []


def test_a_403_names_the_credential_and_the_missing_permission(world):
    world.fake.apps[PACKAGE].users.clear()  # the account was removed from the Play Console's users
    with pytest.raises(ActionFailed) as exc:
        world.store().rollout("890", "8.9.0", 1)
    message = str(exc.value)
    assert not exc.value.retryable
    assert "HTTP 403 PERMISSION_DENIED: The caller does not have permission" in message
    assert f"env {ENV}" in message and ACCOUNT in message and "Users and permissions" in message
    assert world.fake.violations == []


def test_an_api_401_is_not_retryable(world):
    body = {"error": {"code": 401, "message": "Invalid Credentials", "status": "UNAUTHENTICATED"}}
    world.server.fault("POST", r"/edits$", status=401, body=body, times=3)  # the library refreshes the token once
    with pytest.raises(ActionFailed, match=f"HTTP 401 UNAUTHENTICATED: Invalid Credentials; Google did not accept env {ENV}") as exc:
        world.store().read("890", "8.9.0")
    assert not exc.value.retryable


def test_429_is_retryable_after_its_retry_after(world):
    body = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
    world.server.fault("POST", r"/edits$", status=429, body=body, headers={"Retry-After": "7"})
    with pytest.raises(ActionFailed, match="HTTP 429 RESOURCE_EXHAUSTED: Quota exceeded") as exc:
        world.store().rollout("890", "8.9.0", 1)
    assert exc.value.retryable and exc.value.retry_after == 7.0
    assert len(world.server.calls("POST", r"/edits$")) == 1  # the library did not retry on its own


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}, None),
        (503, {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}, None),
        (502, "<html><body>Bad Gateway</body></html>", "text/html"),
        (409, {"error": {"code": 409, "message": "The operation was aborted.", "status": "ABORTED"}}, None),
    ],
)
def test_5xx_and_409_are_retryable(world, status, body, content_type):
    world.server.fault("GET", r"/tracks/production$", status=status, body=body, content_type=content_type, headers={"Retry-After": "3"})
    with pytest.raises(ActionFailed, match=f"edits.tracks.get production .*HTTP {status}") as exc:
        world.store().rollout("890", "8.9.0", 1)
    assert exc.value.retryable and exc.value.retry_after == 3.0 and "<html>" not in str(exc.value)
    assert len(world.server.calls("GET", r"/tracks/production$")) == 1
    assert world.fake.commits == [] and world.fake.violations == []


def test_a_5xx_on_commit_is_retried_with_a_new_edit_and_applied_once(world):
    world.server.fault("POST", r":commit$", status=503, body={"error": {"code": 503, "message": "Backend Error", "status": "UNAVAILABLE"}})
    store = world.store()
    with pytest.raises(ActionFailed, match="HTTP 503") as exc:
        store.rollout("890", "8.9.0", 1)
    assert exc.value.retryable and world.production() == [BASE]
    assert store.rollout("890", "8.9.0", 1).detail["committed"] is True
    assert len(world.fake.commits) == 1 and world.production() == [staged("890", 0.01), BASE]
    assert len({r.path for r in world.server.calls("PUT")}) == 2 and world.fake.violations == []  # two edits


@pytest.mark.parametrize("path", [r"/edits$", r"/tracks/production$", r"^/token$"])
def test_timeouts_are_retryable(world, path):
    world.server.fault("GET" if "tracks" in path else "POST", path, status=None, delay=1.0)
    with pytest.raises(ActionFailed, match="timed out after 0.3s") as exc:
        world.store(timeout_s=0.3).read("890", "8.9.0")
    assert exc.value.retryable and world.fake.violations == []


def test_a_connection_refused_is_retryable(world):
    store = PlayStore(PACKAGE, CredentialRef(env=ENV), endpoint="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(ActionFailed, match="edits.insert") as exc:
        store.read("890", "8.9.0")
    assert exc.value.retryable


def test_a_400_is_not_retryable_and_gives_the_stores_message(world):
    with pytest.raises(ActionFailed, match=r"HTTP 400 INVALID_ARGUMENT: Version code 999 not found: upload the bundle first") as exc:
        world.store().distribute("999", "9.9.9", "internal")
    assert not exc.value.retryable and world.fake.commits == [] and world.fake.open_edits() == [] and world.fake.violations == []


def test_halting_what_was_never_rolled_out_is_done_and_resuming_it_is_refused(world):
    # A halt's job is that nobody gets the build: a build that never reached production is halted already.
    state = world.store().halt("890", "8.9.0")
    assert state.status == "none" and world.fake.commits == []
    world.fake.seed(PACKAGE, "production", [{"name": "8.9.0", "versionCodes": ["890"], "status": "draft"}, BASE])
    with pytest.raises(ActionFailed, match="is a draft release, not rolled out"):
        world.store().resume("890", "8.9.0")
    assert world.fake.commits == [] and world.fake.open_edits() == [] and world.fake.violations == []


def test_a_completed_rollout_cannot_go_back_to_a_staged_one(world):
    store = world.store()
    store.rollout("890", "8.9.0", 100)
    with pytest.raises(ActionFailed, match="HTTP 400 FAILED_PRECONDITION: A completed release will have no further changes") as exc:
        store.rollout("890", "8.9.0", 20)
    assert not exc.value.retryable and len(world.fake.commits) == 1 and world.fake.open_edits() == []
    assert world.fake.violations == []


@pytest.mark.parametrize(("percent", "priority"), [(0, None), (-5, None), (100.5, None), (float("nan"), None), (10, 6), (10, -1)])
def test_arguments_the_store_would_refuse_are_refused_without_a_call(world, percent, priority):
    with pytest.raises(ActionFailed) as exc:
        world.store().rollout("890", "8.9.0", percent, priority=priority)
    assert not exc.value.retryable and world.server.requests == []


# ------------------------------------------------------------ credentials and secrets


def test_unusable_credentials_name_the_reference_and_nothing_of_the_secret(world, monkeypatch, tmp_path):
    monkeypatch.delenv(ENV)
    with pytest.raises(ActionFailed, match=f"credential env {ENV}: the variable is not set") as exc:
        world.store().check()
    assert not exc.value.retryable
    monkeypatch.setenv(ENV, "not json, -----BEGIN PRIVATE KEY----- s3cret")
    with pytest.raises(ActionFailed, match=f"credential env {ENV}: not JSON") as exc:
        world.store().check()
    assert "s3cret" not in str(exc.value)
    key = tmp_path / "key.json"
    key.write_text(json.dumps({k: v for k, v in world.key.items() if k != "token_uri"}))
    with pytest.raises(ActionFailed, match=f"credential file {key}: not a Google service-account key \\(no token_uri\\)"):
        PlayStore(PACKAGE, CredentialRef(file=str(key)), endpoint=world.server.url).check()
    key.write_text(json.dumps(world.key | {"private_key": "-----BEGIN PRIVATE KEY-----\ns3cret\n-----END PRIVATE KEY-----\n"}))
    with pytest.raises(ActionFailed, match="the private key could not be loaded") as exc:
        PlayStore(PACKAGE, CredentialRef(file=str(key)), endpoint=world.server.url).check()
    assert "s3cret" not in str(exc.value) and world.server.requests == []


def test_no_secret_reaches_the_logs_or_the_errors(world, caplog):
    caplog.set_level(logging.DEBUG)
    store = world.store()
    store.rollout("890", "8.9.0", 1)
    world.fake.apps[PACKAGE].users.clear()
    with pytest.raises(ActionFailed) as exc:
        store.halt("890", "8.9.0")
    tokens = list(world.oauth.tokens)
    secret_bits = [world.key["private_key"].splitlines()[1], *tokens]
    assert tokens and not any(bit in caplog.text or bit in str(exc.value) for bit in secret_bits)
    assert world.fake.violations == []


# ------------------------------------------------------------ the fake itself holds clients to the contract


class Raw:
    """Requests made by hand, to see the fake hold a client to the contract."""

    def __init__(self, world: World) -> None:
        import httplib2

        world.store().read("880", "8.8.0")  # a token from the fake's token endpoint
        self.world, self.http = world, httplib2.Http(timeout=5)
        self.base = f"{world.server.url}/androidpublisher/v3/applications/{PACKAGE}/edits"
        self.headers = {"authorization": f"Bearer {next(iter(world.oauth.tokens))}", "content-type": "application/json"}

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = "" if body is None else json.dumps(body)
        response, content = self.http.request(self.base + path, method, body=payload, headers=self.headers)
        return response.status, json.loads(content) if content else None

    def edit(self) -> str:
        return self("POST", "", {})[1]["id"]


def test_the_fake_rejects_what_the_documentation_forbids(world):
    raw = Raw(world)
    edit = raw.edit()
    bad = [
        {"releases": [{"versionCodes": ["890"], "status": "inProgress"}]},  # inProgress without userFraction
        {"releases": [{"versionCodes": ["890"], "status": "completed", "userFraction": 0.5}]},
        {"releases": [{"versionCodes": ["890"], "status": "inProgress", "userFraction": 1.0}]},
        {"releases": [{"versionCodes": [890], "status": "completed"}]},  # int64 is a string
        {"releases": [{"versionCodes": ["890"], "status": "completed", "rolloutPercent": 5}]},  # no such field
        {"releases": [{"versionCodes": ["890"], "status": "done"}]},  # not in the enum
        {"releases": [{"versionCodes": ["890"], "status": "completed", "inAppUpdatePriority": 9}]},
        {"track": "beta", "releases": [{"versionCodes": ["890"], "status": "completed"}]},  # not the path's track
    ]
    assert [raw("PUT", f"/{edit}/tracks/production", body)[0] for body in bad] == [400] * len(bad)
    assert raw("POST", f"/{edit}:launch")[0] == 400  # no such method
    assert raw("POST", "", {"id": "mine"})[0] == 400  # output only
    assert len(world.fake.violations) == len(bad) + 2
    assert any("userFraction" in v and "inProgress" in v for v in world.fake.violations)
    assert any("rolloutPercent: no such field in TrackRelease" in v for v in world.fake.violations)
    world.fake.violations.clear()


def test_the_fake_keeps_edits_as_play_does(world):
    raw = Raw(world)
    first, second = raw.edit(), raw.edit()
    assert raw("POST", f"/{first}:commit") == (200, {"id": first, "expiryTimeSeconds": ANY_DIGITS})
    assert raw("POST", f"/{first}:commit")[1]["error"]["message"].startswith("This edit has already been successfully committed")
    assert raw("GET", f"/{second}/tracks/production")[1]["error"] == {
        "code": 400, "message": "This Edit has been deleted.", "status": "FAILED_PRECONDITION",
        "errors": [{"message": "This Edit has been deleted.", "domain": "global", "reason": "editDeleted"}],
    }  # fmt: skip
    world.fake.edit_ttl_s = 0.0
    assert raw("GET", f"/{raw.edit()}")[1]["error"]["message"] == "This Edit has been deleted."  # expired
    world.fake.edit_ttl_s = 3600.0
    third = raw.edit()
    assert raw("DELETE", f"/{third}") == (204, None) and raw("DELETE", f"/{third}")[0] == 400
    assert raw("GET", f"/{raw.edit()}/tracks")[1]["kind"] == "androidpublisher#tracksListResponse"
    assert world.fake.violations == []


def test_the_token_endpoint_holds_clients_to_the_jwt_bearer_grant(world):
    import httplib2

    http, form = httplib2.Http(timeout=5), {"content-type": "application/x-www-form-urlencoded"}
    response, _ = http.request(world.oauth.token_uri, "POST", body="grant_type=client_credentials&assertion=x", headers=form)
    assert response.status == 400
    response, _ = http.request(world.oauth.token_uri, "POST", body="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                               "&assertion=not.a.jwt", headers=form)  # fmt: skip
    assert response.status == 400
    assert len(world.fake.violations) == 2 and "grant_type must be" in world.fake.violations[0]
    world.fake.violations.clear()
    assert world.store().read("880", "8.8.0").status == "completed" and world.oauth.grants == 1  # google-auth's grant passes
    assert world.fake.violations == []


class _AnyDigits(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.isdigit()

    __hash__ = str.__hash__


ANY_DIGITS = _AnyDigits()
