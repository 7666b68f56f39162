"""The App Store Connect adapter against the contract fake: tokens, phased release, review states,
TestFlight groups and the faults App Store Connect answers with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from conductor.actions.base import ActionFailed
from conductor.actions.http import make_client
from conductor.actions.stores.appstore import AppStoreConnect
from conductor.clock import ManualClock
from conductor.connect.credentials import CredentialRef
from tests.fakes.appstore import FakeAppStoreConnect, error
from tests.fakes.server import FakeServer

APP_ID, KEY_ID, ISSUER = "1234567890", "ABC123DEFG", "57246542-96fe-1a63-e053-0824d011072a"
START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _p8(path, key) -> str:
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return str(path)


@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock():
    return ManualClock(START)


@pytest.fixture
def fake(signing_key, clock):
    with FakeServer() as server:
        asc = FakeAppStoreConnect(server, public_key=signing_key.public_key(), key_id=KEY_ID, issuer_id=ISSUER, clock=clock)
        asc.add_app(APP_ID, "Acme Rides", "com.acme.rides")
        yield asc


@pytest.fixture
def key_ref(signing_key, tmp_path):
    return CredentialRef(file=_p8(tmp_path / f"AuthKey_{KEY_ID}.p8", signing_key))


@pytest.fixture
def http():
    with make_client(1.0) as client:
        yield client


@pytest.fixture
def store(fake, key_ref, http, clock):
    return AppStoreConnect(http, app_id=APP_ID, key_id=KEY_ID, issuer_id=ISSUER, private_key=key_ref, endpoint=fake.server.url, clock=clock)


def update(fake, state="PENDING_DEVELOPER_RELEASE"):
    """8.8.0 on sale (build 410), 8.9.0 with build 411 in `state`."""
    fake.add_version(APP_ID, "8.8.0", "READY_FOR_SALE", fake.add_build(APP_ID, "410", "8.8.0"))
    return fake.add_version(APP_ID, "8.9.0", state, fake.add_build(APP_ID, "411", "8.9.0"))


def started(fake, store):
    update(fake)
    store.rollout("411", "8.9.0", 1)
    return fake.phased_of("8.9.0")


def writes(fake):
    return [f"{r.method} {r.path}" for r in fake.server.requests if r.method != "GET"]


def failure(call) -> ActionFailed:
    with pytest.raises(ActionFailed) as caught:
        call()
    return caught.value


# ---------------------------------------------------------------- auth


def test_the_token_is_es256_reused_and_renewed_before_it_expires(fake, store, clock, signing_key):
    assert "Acme Rides" in store.check()
    store.check()
    first, again = (r.headers["authorization"].removeprefix("Bearer ") for r in fake.server.requests)
    assert first == again
    header = jwt.get_unverified_header(first)
    claims = jwt.decode(first, signing_key.public_key(), algorithms=["ES256"], audience="appstoreconnect-v1",
                        options={"verify_exp": False, "verify_iat": False})  # fmt: skip
    assert header == {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"}
    assert claims["iss"] == ISSUER and claims["iat"] == int(START.timestamp()) and 0 < claims["exp"] - claims["iat"] <= 1200
    clock.advance(timedelta(minutes=16))
    store.check()
    assert fake.server.requests[-1].headers["authorization"] == f"Bearer {first}"
    clock.advance(timedelta(minutes=1, seconds=30))  # under two minutes left: a new token
    store.check()
    renewed = fake.server.requests[-1].headers["authorization"].removeprefix("Bearer ")
    assert renewed != first and jwt.decode(renewed, options={"verify_signature": False})["iat"] == int(clock().timestamp())
    assert fake.violations == []


def test_the_private_key_is_read_by_reference_and_never_shown(fake, http, clock, monkeypatch):
    monkeypatch.delenv("ASC_KEY", raising=False)
    store = AppStoreConnect(http, app_id=APP_ID, key_id=KEY_ID, issuer_id=ISSUER, private_key=CredentialRef(env="ASC_KEY"),
                            endpoint=fake.server.url, clock=clock)  # fmt: skip
    err = failure(store.check)
    assert not err.retryable and "env ASC_KEY" in str(err) and KEY_ID in str(err)
    monkeypatch.setenv("ASC_KEY", "not a key")
    err = failure(store.check)
    assert not err.retryable and "not an ES256 private key" in str(err) and "not a key" not in str(err)
    assert fake.server.requests == []


def test_a_refused_key_names_the_key_id_and_the_credential(fake, store, key_ref):
    fake.revoked.add(KEY_ID)
    err = failure(store.check)
    assert not err.retryable and "HTTP 401" in str(err) and KEY_ID in str(err) and key_ref.describe() in str(err)
    assert "revoked" in str(err)  # Apple's detail


def test_a_token_signed_with_another_key_is_refused(fake, http, clock, tmp_path):
    other = CredentialRef(file=_p8(tmp_path / "other.p8", ec.generate_private_key(ec.SECP256R1())))
    store = AppStoreConnect(http, app_id=APP_ID, key_id=KEY_ID, issuer_id=ISSUER, private_key=other, endpoint=fake.server.url, clock=clock)
    err = failure(store.check)
    assert not err.retryable and "HTTP 401" in str(err) and f"file {tmp_path / 'other.p8'}" in str(err)
    assert len(fake.violations) == 1 and "InvalidSignatureError" in fake.violations[0]


# ---------------------------------------------------------------- versions and review


def test_find_build_reads_the_build_of_the_version(fake, store):
    update(fake)
    fake.add_version(APP_ID, "9.0.0", "PREPARE_FOR_SUBMISSION")
    assert store.find_build("8.9.0") == "411"
    assert store.find_build("9.0.0") is None
    assert store.find_build("7.0.0") is None
    q = fake.server.calls("GET", r"/appStoreVersions$")[0].query
    assert q["filter[versionString]"] == ["8.9.0"] and q["filter[platform]"] == ["IOS"]
    assert fake.violations == []


@pytest.mark.parametrize("state", ["WAITING_FOR_REVIEW", "IN_REVIEW"])
def test_rollout_waits_while_apple_reviews_the_version(fake, store, state):
    update(fake, state)
    err = failure(lambda: store.rollout("411", "8.9.0", 1))
    assert err.retryable and err.retry_after and "waits for review" in str(err) and state in str(err)
    assert writes(fake) == []
    assert store.review_state("8.9.0") == state
    assert store.read("411", "8.9.0").review_state == state and store.read("411", "8.9.0").status == "none"
    fake.version("8.9.0").state = "PENDING_DEVELOPER_RELEASE"  # approved
    assert store.rollout("411", "8.9.0", 1).status == "in_progress"
    assert fake.violations == []


def test_rollout_waits_while_apple_processes_a_released_version(fake, store):
    update(fake, "PROCESSING_FOR_APP_STORE")
    err = failure(lambda: store.rollout("411", "8.9.0", 1))
    assert err.retryable and "waits for Apple to finish processing it (PROCESSING_FOR_DISTRIBUTION)" in str(err)
    assert writes(fake) == [] and fake.violations == []


def test_review_states_are_read_and_a_rejected_version_is_not_released(fake, store):
    update(fake, "REJECTED")
    assert store.review_state("8.9.0") == "REJECTED"
    assert store.review_state("8.8.0") == "READY_FOR_DISTRIBUTION"
    assert store.review_state("1.0.0") is None
    err = failure(lambda: store.rollout("411", "8.9.0", 1))
    assert not err.retryable and "rejected" in str(err)
    assert store.read("410", "8.8.0").status == "completed"  # released without a phased release
    assert store.read("1", "1.0.0").status == "none"
    assert fake.violations == []


def test_the_wrong_build_is_never_released(fake, store):
    update(fake)
    err = failure(lambda: store.rollout("999", "8.9.0", 1))
    assert not err.retryable and "build 411 attached, not build 999" in str(err)
    assert writes(fake) == []


# ---------------------------------------------------------------- phased release


def test_rollout_creates_the_phased_release_and_releases_the_approved_version(fake, store, clock):
    update(fake)
    state = store.rollout("411", "8.9.0", 1, notes={"en-US": "Faster"})
    assert writes(fake) == ["POST /v1/appStoreVersionPhasedReleases", "POST /v1/appStoreVersionReleaseRequests"]
    created, release = (r.json() for r in fake.server.requests if r.method == "POST")
    version_id = fake.version("8.9.0").id
    assert created["data"]["attributes"] == {"phasedReleaseState": "INACTIVE"}
    assert created["data"]["relationships"] == {"appStoreVersion": {"data": {"type": "appStoreVersions", "id": version_id}}}
    assert release["data"]["relationships"]["appStoreVersion"]["data"]["id"] == version_id
    assert (state.status, state.percent, state.day, state.build, state.review_state) == (
        "in_progress",
        1.0,
        1,
        "411",
        "READY_FOR_DISTRIBUTION",
    )
    assert state.paused_total_s == 0 and state.detail["phased_release_state"] == "ACTIVE"
    assert fake.version("8.8.0").state == "REPLACED_WITH_NEW_VERSION"
    assert store.rollout("411", "8.9.0", 1).status == "in_progress"  # again: nothing to do
    assert len(writes(fake)) == 2 and fake.redundant_writes == [] and fake.violations == []


def test_the_days_move_on_their_own_and_are_read_as_apples_percentages(fake, store):
    started(fake, store)
    fake.advance_days(2)
    state = store.read("411", "8.9.0")
    assert (state.status, state.day, state.percent) == ("in_progress", 3, 5.0)
    assert store.rollout("411", "8.9.0", 5).percent == 5.0
    assert store.rollout("411", "8.9.0", 10).percent == 5.0  # ahead of Apple's day: the robot gates each day
    fake.advance_days(3)
    assert store.read("411", "8.9.0").percent == 50.0
    assert len(writes(fake)) == 2 and fake.violations == []


def test_halt_pauses_once_and_says_how_many_pause_days_are_left(fake, store):
    phased = started(fake, store)
    state = store.halt("411", "8.9.0")
    assert state.status == "paused" and state.percent == 1.0 and phased.state == "PAUSED"
    patch = fake.server.calls("PATCH")[0]
    assert patch.path == f"/v1/appStoreVersionPhasedReleases/{phased.id}"
    assert patch.json() == {
        "data": {"type": "appStoreVersionPhasedReleases", "id": phased.id, "attributes": {"phasedReleaseState": "PAUSED"}}
    }
    assert state.detail["pause_days_left"] == 30 and "30 of 30 pause days left" in state.detail["note"]
    fake.advance_days(3)
    again = store.halt("411", "8.9.0")
    assert again.status == "paused" and again.paused_total_s == 3 * 86400 and "27 of 30 pause days left" in again.detail["note"]
    assert len(fake.server.calls("PATCH")) == 1 and fake.redundant_writes == []
    resumed = store.resume("411", "8.9.0")
    assert resumed.status == "in_progress" and resumed.day == 1 and phased.state == "ACTIVE"
    store.resume("411", "8.9.0")
    assert len(fake.server.calls("PATCH")) == 2 and fake.redundant_writes == [] and fake.violations == []


def test_a_pause_budget_used_up_is_refused_before_apple_is_asked(fake, store):
    phased = started(fake, store)
    phased.pause_days = 30
    err = failure(lambda: store.halt("411", "8.9.0"))
    assert not err.retryable and "paused for 30 days already" in str(err)
    assert fake.server.calls("PATCH") == []
    phased.pause_days = 28
    assert "2 of 30 pause days left" in store.halt("411", "8.9.0").detail["note"]


def test_rollout_at_100_completes_the_phased_release(fake, store):
    phased = started(fake, store)
    fake.advance_days(1)
    state = store.rollout("411", "8.9.0", 100)
    assert (state.status, state.percent) == ("completed", 100.0) and phased.state == "COMPLETE"
    assert fake.server.calls("PATCH")[0].json()["data"]["attributes"] == {"phasedReleaseState": "COMPLETE"}
    assert store.rollout("411", "8.9.0", 100).status == "completed"
    assert store.resume("411", "8.9.0").status == "completed"
    assert len(fake.server.calls("PATCH")) == 1 and fake.redundant_writes == [] and fake.violations == []
    err = failure(lambda: store.halt("411", "8.9.0"))
    assert not err.retryable and "complete" in str(err)


def test_rollout_at_100_of_an_approved_version_releases_it_to_everyone(fake, store):
    update(fake)
    state = store.rollout("411", "8.9.0", 100)
    assert writes(fake) == ["POST /v1/appStoreVersionReleaseRequests"]
    assert (state.status, state.percent, state.review_state) == ("completed", 100.0, "READY_FOR_DISTRIBUTION")
    err = failure(lambda: store.halt("411", "8.9.0"))
    assert not err.retryable and "without a phased release" in str(err)


@pytest.mark.parametrize("percent", [3, 25, 99.5, 0])
def test_a_percentage_apple_does_not_offer_is_refused(fake, store, percent):
    update(fake)
    err = failure(lambda: store.rollout("411", "8.9.0", percent))
    assert not err.retryable and "App Store percentages are fixed" in str(err) and "1%, 2%, 5%, 10%, 20%, 50%, 100%" in str(err)
    assert fake.server.requests == []


def test_an_apps_first_version_has_no_phased_release(fake, store):
    fake.add_version(APP_ID, "1.0.0", "PENDING_DEVELOPER_RELEASE", fake.add_build(APP_ID, "1", "1.0.0"))
    err = failure(lambda: store.rollout("1", "1.0.0", 1))
    assert not err.retryable and "offers no phased release for an app's first version" in str(err) and "all users" in str(err)
    assert writes(fake) == [] and fake.violations == []
    assert store.rollout("1", "1.0.0", 100).status == "completed"


def test_a_phased_release_apple_refuses_is_said_clearly(fake, store):
    update(fake)
    detail = "Phased release is not available for this app store version."
    fake.server.fault("POST", r"/v1/appStoreVersionPhasedReleases$", status=409, body=error(409, "ENTITY_ERROR", "Invalid", detail).body)
    err = failure(lambda: store.rollout("411", "8.9.0", 1))
    assert not err.retryable and detail in str(err) and "offers no phased release for an app's first version" in str(err)
    assert fake.server.calls("POST", r"ReleaseRequests") == []


def test_a_lost_answer_to_the_create_is_not_a_second_phased_release(fake, store):
    v = update(fake)
    fake.add_phased(v)  # an earlier attempt created it; its answer was lost
    store.rollout("411", "8.9.0", 1)
    assert writes(fake) == ["POST /v1/appStoreVersionReleaseRequests"] and fake.phased_of("8.9.0").state == "ACTIVE"


# ---------------------------------------------------------------- TestFlight


def test_distribute_adds_the_build_to_the_testflight_group_once(fake, store):
    v = update(fake)
    others = [fake.add_build(APP_ID, str(n), "8.8.0").id for n in range(1, 251)]  # two pages of the group's builds
    group = fake.add_group(APP_ID, "Beta Riders", build_ids=others)
    fake.add_group(APP_ID, "Beta Riders EU")
    state = store.distribute("411", "8.9.0", "Beta Riders")
    assert state.status == "completed" and state.detail["beta_group_id"] == group.id and state.detail["already_in_group"] is False
    assert group.build_ids[-1] == v.build_id
    post = fake.server.calls("POST")[0]
    assert post.path == f"/v1/betaGroups/{group.id}/relationships/builds" and post.json() == {
        "data": [{"type": "builds", "id": v.build_id}]
    }
    q = fake.server.calls("GET", r"^/v1/builds$")[0].query
    assert (q["filter[app]"], q["filter[version]"], q["filter[preReleaseVersion.version]"]) == ([APP_ID], ["411"], ["8.9.0"])
    assert store.distribute("411", "8.9.0", "Beta Riders").detail["already_in_group"] is True
    assert len(fake.server.calls("POST")) == 1 and fake.redundant_writes == [] and fake.violations == []
    assert len(fake.server.calls("GET", r"/relationships/builds$")) == 4  # two pages, twice


def test_distribute_names_a_missing_group_and_waits_for_a_processing_build(fake, store):
    update(fake)
    fake.add_group(APP_ID, "QA")
    err = failure(lambda: store.distribute("411", "8.9.0", "Nobody"))
    assert not err.retryable and "no TestFlight group named 'Nobody'" in str(err)
    fake.add_build(APP_ID, "412", "8.9.0", processing_state="PROCESSING")
    err = failure(lambda: store.distribute("412", "8.9.0", "QA"))
    assert err.retryable and "still processing" in str(err)
    err = failure(lambda: store.distribute("413", "8.9.0", "QA"))
    assert err.retryable and "not in App Store Connect (yet)" in str(err)
    assert writes(fake) == [] and fake.violations == []


# ---------------------------------------------------------------- faults


def test_403_names_the_role_the_key_needs(fake, store):
    update(fake)
    body = error(
        403, "FORBIDDEN_ERROR", "This request is forbidden for security reasons", "The API key in use does not allow this request"
    ).body
    fake.server.fault("GET", r"/appStoreVersions$", status=403, body=body)
    err = failure(lambda: store.read("411", "8.9.0"))
    assert not err.retryable and "App Manager or Admin" in str(err) and KEY_ID in str(err) and "does not allow this request" in str(err)


def test_404_says_what_was_not_found(fake, http, key_ref, clock):
    store = AppStoreConnect(
        http, app_id="404404", key_id=KEY_ID, issuer_id=ISSUER, private_key=key_ref, endpoint=fake.server.url, clock=clock
    )
    err = failure(store.check)
    assert not err.retryable and "HTTP 404" in str(err) and "There is no resource of type 'apps' with id '404404'" in str(err)


def test_409_carries_apples_detail_and_can_be_retried(fake, store):
    started(fake, store)
    detail = "The phased release cannot be paused while its state is changing."
    fake.server.fault("PATCH", r"/v1/appStoreVersionPhasedReleases/", status=409, body=error(409, "STATE_ERROR", "Conflict", detail).body)
    err = failure(lambda: store.halt("411", "8.9.0"))
    assert err.retryable and "HTTP 409" in str(err) and detail in str(err) and "STATE_ERROR" in str(err)
    assert store.halt("411", "8.9.0").status == "paused"  # the retry


def test_429_hands_back_retry_after(fake, store):
    body = error(
        429, "RATE_LIMIT_EXCEEDED", "The request rate limit has been reached.", "We've received too many requests for this API."
    ).body
    fake.server.fault(
        "GET", r"/v1/apps/", status=429, body=body, headers={"Retry-After": "7", "X-Rate-Limit": "user-hour-lim:3600;user-hour-rem:0;"}
    )
    err = failure(store.check)
    assert err.retryable and err.retry_after == 7 and "RATE_LIMIT_EXCEEDED" in str(err) and "user-hour-rem:0" in str(err)


def test_5xx_and_timeouts_are_retryable_and_never_show_the_token(fake, store):
    fake.server.fault("GET", r"/v1/apps/", status=500, body="<html>Internal Server Error</html>", content_type="text/html")
    err = failure(store.check)
    assert err.retryable and "HTTP 500" in str(err) and "Internal Server Error" in str(err)
    fake.server.fault("GET", r"/v1/apps/", status=None, delay=1.5)
    err = failure(store.check)
    assert err.retryable and "timed out" in str(err)
    token = fake.server.requests[0].headers["authorization"].removeprefix("Bearer ")
    assert token not in str(err) and fake.violations == []


def test_an_absent_phased_release_or_build_answered_404_reads_as_none(fake, store):
    update(fake)
    fake.server.fault(
        "GET", r"/appStoreVersionPhasedRelease$", status=404, body=error(404, "NOT_FOUND", "Not found", "No phased release").body
    )
    assert store.read("411", "8.9.0").status == "none"
    fake.server.fault("GET", r"/appStoreVersions/[^/]+/build$", status=404, body=error(404, "NOT_FOUND", "Not found", "No build").body)
    assert store.find_build("8.9.0") is None


def test_the_fake_refuses_what_app_store_connect_would(fake, signing_key, clock):
    """The fake's own checks: a client that sent these would fail here, not only in production."""
    v = update(fake)
    now = int(clock().timestamp())

    def token(**claims):
        body = {"iss": ISSUER, "iat": now, "exp": now + 600, "aud": "appstoreconnect-v1", **claims}
        return {"authorization": "Bearer " + jwt.encode(body, signing_key, algorithm="ES256", headers={"kid": KEY_ID, "typ": "JWT"})}

    url, ok = fake.server.url, token()
    for bad in (token(exp=now + 1500), token(exp=now - 5, iat=now - 600), token(aud="appstoreconnect-v2"), {"authorization": "Basic x"}):
        assert httpx.get(f"{url}/v1/apps/{APP_ID}", headers=bad).status_code == 401
    problems = [m.split("JWT: ")[1] for m in fake.violations]
    for problem, want in zip(problems, ("exp is 1500 s after iat", "expired 5 s ago", "InvalidAudienceError", "no Bearer"), strict=True):
        assert problem.startswith(want)
    for query in (f"/v1/apps/{APP_ID}/appStoreVersions?filter[platform]=ANDROID", f"/v1/apps/{APP_ID}/betaGroups?filter[name]=QA",
                  "/v1/betaGroups?filter[nom]=QA"):  # fmt: skip
        assert httpx.get(url + query, headers=ok).status_code == 400
    version = {"appStoreVersion": {"data": {"type": "appStoreVersions", "id": v.id}}}
    for attributes, relationships in (
        ({"phasedReleaseState": "STARTED"}, version),
        ({"percent": 5}, version),
        ({}, {"appStoreVersion": {"data": {"type": "builds", "id": v.id}}}),
    ):
        data = {"type": "appStoreVersionPhasedReleases", "attributes": attributes, "relationships": relationships}
        assert httpx.post(f"{url}/v1/appStoreVersionPhasedReleases", json={"data": data}, headers=ok).status_code == 400
    one = {"data": {"type": "builds", "id": "1"}}  # a to-many linkage takes a list
    assert httpx.post(f"{url}/v1/betaGroups/x/relationships/builds", json=one, headers=ok).status_code == 400
    assert len(fake.violations) == 11 and fake.phased == {}
