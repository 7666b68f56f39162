"""GitHubVcs against the GitHub contract fake: refs, dispatches, releases, App auth, and the faults
GitHub has (rate limits, 5xx pages, late answers)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from conductor.actions.base import ActionFailed
from conductor.actions.vcs.github import GitHubVcs, GitHubVcsConfig, matches_dispatch
from tests.conftest import FIXTURES
from tests.fakes.github import GitHubFake, sha_of
from tests.fakes.server import FakeServer

TOKEN = "ghp_faketoken0001"
WORKFLOW_RUN = FIXTURES / "github" / "workflow_run_completed.payload.json"


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture
def fake(server):
    gh = GitHubFake(server)
    gh.add_workflow("build.yml", "Build ring", inputs={"conductor_key": False, "ring": True}, run_name_input="conductor_key")
    return gh


@pytest.fixture
def vcs(server, monkeypatch):
    monkeypatch.setenv("GH_TOKEN_TEST", TOKEN)
    return make(server)


def make(server, **overrides) -> GitHubVcs:
    cfg = {"owner": "acme", "repo": "app", "base_url": server.url, "token": {"env": "GH_TOKEN_TEST"}, "timeout_s": 2.0, **overrides}
    return GitHubVcs(GitHubVcsConfig.model_validate(cfg))


def real_workflow_run() -> dict:
    return json.loads(WORKFLOW_RUN.read_text())


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the fake never applied the late request"
        time.sleep(0.02)


# ---------------------------------------------------------------- cut_branch


def test_cut_branch_creates_the_ref_at_the_head_of_from_ref_once(vcs, fake, server):
    out = vcs.cut_branch("release/8.9", "main")
    assert out == {"branch": "release/8.9", "from_ref": "main", "sha": sha_of("main"), "status": "created"}
    assert fake.refs["heads/release/8.9"] == sha_of("main")
    assert vcs.cut_branch("release/8.9", "main")["status"] == "existed"
    assert fake.created_refs == ["heads/release/8.9"] and len(server.calls("POST", r"/git/refs$")) == 1
    body = server.calls("POST", r"/git/refs$")[0]
    assert body.json() == {"ref": "refs/heads/release/8.9", "sha": sha_of("main")}
    assert body.headers["authorization"] == f"token {TOKEN}" and body.headers["x-github-api-version"] == "2022-11-28"
    assert server.violations == []


def test_a_full_sha_as_from_ref_is_used_as_it_is(vcs, fake, server):
    pinned = fake.add_commit("8.9.0 candidate")
    assert vcs.cut_branch("release/8.9", pinned)["sha"] == pinned
    assert not server.calls("GET", r"/git/ref/heads/" + pinned)
    assert server.violations == []


@pytest.mark.parametrize("wait_for_the_late_write", [True, False], ids=["retry-after-it-landed", "retry-racing-it"])
def test_a_cut_retried_after_a_client_timeout_creates_exactly_one_ref(server, fake, monkeypatch, wait_for_the_late_write):
    monkeypatch.setenv("GH_TOKEN_TEST", TOKEN)
    vcs = make(server, timeout_s=0.4)
    server.fault("POST", r"/git/refs$", status=None, delay=1.0)  # applied, but answered after the client gave up
    with pytest.raises(ActionFailed, match="timed out") as exc:
        vcs.cut_branch("release/8.9", "main")
    assert exc.value.retryable
    if wait_for_the_late_write:
        wait_for(lambda: "heads/release/8.9" in fake.refs)
    out = vcs.cut_branch("release/8.9", "main")
    assert out["sha"] == sha_of("main") and out["status"] in ("existed", "created")
    time.sleep(1.2)  # let the late request finish either way
    assert fake.created_refs == ["heads/release/8.9"]
    assert fake.refs["heads/release/8.9"] == sha_of("main")
    assert server.violations == []


def test_a_branch_already_at_another_sha_asks_a_person(vcs, fake, server):
    other = fake.add_commit("hotfix")
    fake.refs["heads/release/8.9"] = other
    with pytest.raises(ActionFailed) as exc:
        vcs.cut_branch("release/8.9", "main")
    assert not exc.value.retryable
    assert other in str(exc.value) and sha_of("main") in str(exc.value) and "release/8.9" in str(exc.value)
    assert not server.calls("POST") and server.violations == []


def test_reference_already_exists_from_a_racing_attempt_is_read_back(vcs, fake, server):
    fake.refs["heads/release/8.9"] = sha_of("main")
    server.fault("GET", r"/git/ref/heads/release/8\.9$", status=404, body={"message": "Not Found"})  # the first read misses it
    assert vcs.cut_branch("release/8.9", "main")["status"] == "existed"
    assert fake.created_refs == [] and len(server.calls("POST", r"/git/refs$")) == 1
    assert server.violations == []


def test_a_missing_from_branch_is_named(vcs, fake):
    with pytest.raises(ActionFailed, match="develop is not a branch of acme/app") as exc:
        vcs.cut_branch("release/8.9", "develop")
    assert not exc.value.retryable


# ---------------------------------------------------------------- dispatch and the matcher


def test_dispatch_returns_the_run_and_the_matcher_knows_its_webhook(vcs, fake, server):
    out = vcs.dispatch("build.yml", "main", {"ring": "beta"})
    assert out["status"] == "dispatched" and out["run_id"] == fake.runs[0]["id"] and out["key"].startswith("conductor-")
    sent = server.calls("POST", r"/dispatches$")[0].json()
    assert sent == {"ref": "main", "inputs": {"ring": "beta", "conductor_key": out["key"]}, "return_run_details": True}
    ours = fake.workflow_run_payload(real_workflow_run(), fake.runs[0])
    assert matches_dispatch(out, ours)
    fake.runs.append({**fake.runs[0], "id": fake.runs[0]["id"] + 1})
    assert not matches_dispatch(out, fake.workflow_run_payload(real_workflow_run(), fake.runs[1]))
    assert server.violations == []


def test_an_older_ghes_refuses_return_run_details_and_the_run_is_known_by_its_key(vcs, fake, server):
    fake.supports_run_details = False
    out = vcs.dispatch("build.yml", "main", {"ring": "beta"})
    assert out["run_id"] is None and out["status"] == "dispatched"
    posts = [r.json() for r in server.calls("POST", r"/dispatches$")]
    assert "return_run_details" in posts[0] and "return_run_details" not in posts[1] and len(fake.runs) == 1
    assert matches_dispatch(out, fake.workflow_run_payload(real_workflow_run(), fake.runs[0]))
    vcs.dispatch("build.yml", "main", {"ring": "beta"})  # remembered: one POST this time
    assert len(server.calls("POST", r"/dispatches$")) == 3
    assert not matches_dispatch(out, fake.workflow_run_payload(real_workflow_run(), fake.runs[1]))  # another key
    assert server.violations == []


def test_a_retried_dispatch_with_a_stable_key_finds_the_run_it_started(vcs, fake, server):
    first = vcs.dispatch("build.yml", "main", {"ring": "beta", "conductor_key": "conductor-42-rollout"})
    again = vcs.dispatch("build.yml", "main", {"ring": "beta", "conductor_key": "conductor-42-rollout"})
    assert again["status"] == "existed" and again["run_id"] == first["run_id"]
    assert len(fake.runs) == 1 and len(server.calls("POST", r"/dispatches$")) == 1
    listed = server.calls("GET", r"/actions/workflows/build\.yml/runs$")[-1]
    assert listed.arg("event") == "workflow_dispatch" and listed.arg("branch") == "main" and listed.arg("created").startswith(">=")
    assert server.violations == []


def test_a_workflow_that_does_not_declare_the_key_input_is_explained(vcs, fake):
    fake.add_workflow("legacy.yml", "Legacy", inputs={"ring": True})
    with pytest.raises(ActionFailed, match="Unexpected inputs") as exc:
        vcs.dispatch("legacy.yml", "main", {"ring": "beta"})
    assert not exc.value.retryable and "on.workflow_dispatch.inputs" in str(exc.value)


def test_an_unknown_workflow_or_ref_is_not_retryable(vcs, fake):
    with pytest.raises(ActionFailed, match="HTTP 404") as exc:
        vcs.dispatch("nope.yml", "main", {})
    assert not exc.value.retryable
    with pytest.raises(ActionFailed, match="No ref found for: release/9.9") as exc:
        vcs.dispatch("build.yml", "release/9.9", {"ring": "beta"})
    assert not exc.value.retryable


def dispatched(**overrides) -> dict:
    return {"workflow": "test.yml", "ref": "master", "key": "conductor-abc", "dispatched_at": "2020-10-05T16:33:00Z",
            "run_id": None, **overrides}  # fmt: skip


def as_dispatch(payload: dict, **run) -> dict:
    payload["workflow_run"].update({"event": "workflow_dispatch", "display_title": "conductor-abc", **run})
    return payload


def test_the_matcher_on_the_real_workflow_run_payload():
    real = real_workflow_run()  # octo-org/octo-repo test.yml on master, event repository_dispatch, created 16:33:24Z
    assert not matches_dispatch(dispatched(), real)  # not a workflow_dispatch run
    assert matches_dispatch(dispatched(), as_dispatch(real_workflow_run()))
    assert matches_dispatch(dispatched(workflow=".github/workflows/test.yml"), as_dispatch(real_workflow_run()))
    assert matches_dispatch(dispatched(workflow="2823525"), as_dispatch(real_workflow_run()))  # by workflow id
    assert matches_dispatch(dispatched(ref="refs/heads/master"), as_dispatch(real_workflow_run()))
    assert not matches_dispatch(dispatched(workflow="deploy.yml"), as_dispatch(real_workflow_run()))
    assert not matches_dispatch(dispatched(ref="release/8.9"), as_dispatch(real_workflow_run()))
    assert not matches_dispatch(dispatched(dispatched_at="2020-10-05T16:40:00Z"), as_dispatch(real_workflow_run()))  # older run
    assert not matches_dispatch(dispatched(), as_dispatch(real_workflow_run(), display_title="conductor-other"))
    # a workflow without the run-name line shows its name: the weaker match on workflow + branch + event + time
    assert matches_dispatch(dispatched(), as_dispatch(real_workflow_run(), display_title="test"))
    # a run id, when GitHub gave one, decides alone
    assert matches_dispatch(dispatched(run_id=289782451), real) and not matches_dispatch(dispatched(run_id=1), as_dispatch(real))


# ---------------------------------------------------------------- tag_release


def test_tag_and_release_once_with_generated_notes(vcs, fake, server):
    sha = sha_of("main")
    out = vcs.tag_release("v8.9.0", sha, "8.9.0")
    assert out["tag_status"] == "created" and out["release_status"] == "created" and out["release_id"] == fake.releases["v8.9.0"]["id"]
    sent = server.calls("POST", r"/releases$")[0].json()
    assert sent == {"tag_name": "v8.9.0", "target_commitish": sha, "name": "8.9.0", "draft": False, "prerelease": False,
                    "generate_release_notes": True}  # fmt: skip
    again = vcs.tag_release("v8.9.0", sha, "8.9.0")
    assert again["tag_status"] == "existed" and again["release_status"] == "existed" and again["release_id"] == out["release_id"]
    assert fake.created_refs == ["tags/v8.9.0"] and len(server.calls("POST", r"/releases$")) == 1
    assert server.violations == []


def test_given_notes_are_the_release_body(vcs, fake, server):
    vcs.tag_release("v8.9.1", sha_of("main"), "8.9.1", notes="Fixes the login crash.")
    assert server.calls("POST", r"/releases$")[0].json()["body"] == "Fixes the login crash."
    assert fake.releases["v8.9.1"]["body"] == "Fixes the login crash."


def test_an_annotated_tag_is_followed_to_its_commit(vcs, fake, server):
    tag_object = sha_of("annotated v8.9.0")
    fake.tag_objects[tag_object] = sha_of("main")
    fake.refs["tags/v8.9.0"] = tag_object
    assert vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")["tag_status"] == "existed"
    assert server.violations == []


def test_a_tag_at_another_commit_is_refused(vcs, fake, server):
    fake.refs["tags/v8.9.0"] = fake.add_commit("older")
    with pytest.raises(ActionFailed, match="tag v8.9.0 already exists") as exc:
        vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")
    assert not exc.value.retryable and sha_of("older") in str(exc.value)
    assert not server.calls("POST", r"/releases$")


def test_a_release_published_meanwhile_is_read_back(vcs, fake, server):
    vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")
    server.fault("GET", r"/releases/tags/", status=404, body={"message": "Not Found"})
    out = vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")
    assert out["release_status"] == "created" and out["release_id"] == fake.releases["v8.9.0"]["id"]
    assert len(fake.releases) == 1 and server.violations == []


# ---------------------------------------------------------------- check and credentials


def test_check_says_what_the_credential_can_do(vcs, fake, server):
    assert vcs.check() == "acme/app: push access with token env GH_TOKEN_TEST"
    fake.permissions.update(push=False, triage=False)
    assert "pull access" in vcs.check() and "push access is needed" in vcs.check()
    assert server.violations == []


def test_bad_credentials_are_named_never_shown(server, fake, monkeypatch):
    monkeypatch.setenv("GH_TOKEN_TEST", "ghp_revoked")
    vcs = make(server)
    with pytest.raises(ActionFailed) as exc:
        vcs.check()
    assert not exc.value.retryable and "HTTP 401" in str(exc.value) and "Bad credentials" in str(exc.value)
    assert "env GH_TOKEN_TEST" in str(exc.value) and "ghp_revoked" not in str(exc.value)
    monkeypatch.delenv("GH_TOKEN_TEST")
    with pytest.raises(ActionFailed, match="env GH_TOKEN_TEST: the variable is not set") as exc:
        make(server).check()
    assert not exc.value.retryable


def test_an_unknown_repository_is_not_retryable(server, fake, monkeypatch):
    monkeypatch.setenv("GH_TOKEN_TEST", TOKEN)
    with pytest.raises(ActionFailed, match="HTTP 404: not found, or token env GH_TOKEN_TEST cannot see it") as exc:
        make(server, repo="nope").cut_branch("release/8.9", "main")
    assert not exc.value.retryable


def test_config_takes_exactly_one_way_to_authenticate():
    with pytest.raises(ValueError, match="exactly one of token"):
        GitHubVcsConfig(owner="acme", repo="app")
    with pytest.raises(ValueError):
        GitHubVcsConfig.model_validate({"owner": "acme", "repo": "app", "token": {"env": "T"}, "extra": 1})


# ---------------------------------------------------------------- GitHub App installation auth, GHES base URL


@pytest.fixture
def app_key(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    return key, path


def test_a_github_app_installation_on_enterprise_server(app_key):
    key, pem_path = app_key
    with FakeServer() as server:
        fake = GitHubFake(server, token=None, prefix="/api/v3")
        fake.use_app(123456, key.public_key(), 7890123)
        app = {"app_id": 123456, "installation_id": 7890123, "private_key": {"file": str(pem_path)}}
        vcs = GitHubVcs(GitHubVcsConfig.model_validate({"owner": "acme", "repo": "app", "base_url": server.url + "/api/v3", "app": app}))
        assert vcs.check() == "acme/app: push access with GitHub App 123456 installation 7890123, private key file " + str(pem_path)
        assert vcs.cut_branch("release/8.9", "main")["status"] == "created"
        assert len(fake.installation_tokens) == 1  # one installation token, reused
        assert server.calls("GET", r"/git/refs?/")[0].headers["authorization"] == f"token {fake.installation_tokens[0]}"
        assert server.violations == []


def test_a_wrong_app_key_is_a_named_credential_problem(app_key, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key, pem_path = app_key
    with FakeServer() as server:
        fake = GitHubFake(server, token=None)
        fake.use_app(123456, rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(), 7890123)
        app = {"app_id": 123456, "installation_id": 7890123, "private_key": {"file": str(pem_path)}}
        vcs = GitHubVcs(GitHubVcsConfig.model_validate({"owner": "acme", "repo": "app", "base_url": server.url, "app": app}))
        with pytest.raises(ActionFailed) as exc:
            vcs.check()
        assert not exc.value.retryable and "installation token" in str(exc.value) and "HTTP 401" in str(exc.value)
        assert f"private key file {pem_path}" in str(exc.value) and "BEGIN" not in str(exc.value)
        not_a_key = tmp_path / "not-a-key.pem"
        not_a_key.write_text("hello")
        app["private_key"] = {"file": str(not_a_key)}
        vcs = GitHubVcs(GitHubVcsConfig.model_validate({"owner": "acme", "repo": "app", "base_url": server.url, "app": app}))
        with pytest.raises(ActionFailed, match="could not be used") as exc:
            vcs.check()
        assert not exc.value.retryable and "hello" not in str(exc.value)


# ---------------------------------------------------------------- rate limits and faults


def test_a_primary_rate_limit_waits_until_the_reset(vcs, fake, server):
    reset = int((datetime.now(UTC) + timedelta(seconds=90)).timestamp())
    server.fault("POST", r"/git/refs$", status=403, body={"message": "API rate limit exceeded for installation ID 7890123."},
                 headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})  # fmt: skip
    with pytest.raises(ActionFailed, match="rate limited") as exc:
        vcs.cut_branch("release/8.9", "main")
    assert exc.value.retryable and 80 <= exc.value.retry_after <= 91


@pytest.mark.parametrize(("status", "message"), [(403, "You have exceeded a secondary rate limit."), (429, "Too many requests")])
def test_secondary_rate_limits_and_429_carry_retry_after(vcs, fake, server, status, message):
    server.fault("GET", r"/git/ref/", status=status, body={"message": message}, headers={"Retry-After": "60"})
    with pytest.raises(ActionFailed, match="rate limited") as exc:
        vcs.cut_branch("release/8.9", "main")
    assert exc.value.retryable and exc.value.retry_after == 60


def test_a_403_without_a_rate_limit_is_a_permission_problem(vcs, fake, server):
    server.fault("POST", r"/git/refs$", status=403, body={"message": "Resource not accessible by integration"},
                 headers={"x-ratelimit-remaining": "4999"})  # fmt: skip
    with pytest.raises(ActionFailed, match="not permitted for token env GH_TOKEN_TEST: Resource not accessible") as exc:
        vcs.cut_branch("release/8.9", "main")
    assert not exc.value.retryable


@pytest.mark.parametrize(("status", "body", "ctype"), [(502, "<html><body>Bad Gateway</body></html>", "text/html"),
                                                       (500, {"message": "Server Error"}, None)])  # fmt: skip
def test_server_errors_are_retryable(vcs, fake, server, status, body, ctype):
    server.fault("POST", r"/releases$", status=status, body=body, content_type=ctype)
    with pytest.raises(ActionFailed, match=f"HTTP {status}") as exc:
        vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")
    assert exc.value.retryable
    assert vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")["release_status"] == "created"
    assert fake.created_refs == ["tags/v8.9.0"] and server.violations == []


def test_a_read_that_times_out_is_retryable(server, fake, monkeypatch):
    monkeypatch.setenv("GH_TOKEN_TEST", TOKEN)
    server.fault("GET", r"/repos/acme/app$", status=None, delay=0.8)
    with pytest.raises(ActionFailed, match="timed out") as exc:
        make(server, timeout_s=0.3).check()
    assert exc.value.retryable
