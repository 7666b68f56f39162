"""GitLabVcs against the GitLab contract fake: branches, pipelines, tags, releases and faults."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conductor.actions.base import ActionFailed
from conductor.actions.vcs.gitlab import GitLabVcs, GitLabVcsConfig, matches_pipeline
from tests.conftest import FIXTURES
from tests.fakes.gitlab import GitLabFake, sha_of
from tests.fakes.server import FakeServer

TOKEN = "glpat-fake0001"
PIPELINE_HOOK = FIXTURES / "gitlab" / "pipeline_hook__pipeline_succeeded.json"


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture
def fake(server):
    return GitLabFake(server)


@pytest.fixture
def client():
    with httpx.Client() as c:
        yield c


@pytest.fixture
def vcs(server, client, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN_TEST", TOKEN)
    return make(server, client)


def make(server, client, **overrides) -> GitLabVcs:
    cfg = {"base_url": server.url, "project": "acme/mobile/app", "token": {"env": "GITLAB_TOKEN_TEST"}, "timeout_s": 2.0, **overrides}
    return GitLabVcs(GitLabVcsConfig.model_validate(cfg), client)


def test_cut_branch_once_with_encoded_paths(vcs, fake, server):
    out = vcs.cut_branch("release/8.9", "main")
    assert out == {"branch": "release/8.9", "from_ref": "main", "sha": sha_of("main"), "status": "created"}
    assert vcs.cut_branch("release/8.9", "main")["status"] == "existed"
    assert fake.created == ["branch:release/8.9"]
    post = server.calls("POST", r"/repository/branches$")[0]
    assert post.path == "/api/v4/projects/acme%2Fmobile%2Fapp/repository/branches"
    assert post.arg("branch") == "release/8.9" and post.arg("ref") == sha_of("main") and post.headers["private-token"] == TOKEN
    assert server.calls("GET", r"/repository/branches/release%2F8\.9$")
    assert server.violations == []


def test_a_numeric_project_id_works_too(server, fake, client, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN_TEST", TOKEN)
    vcs = GitLabVcs(
        GitLabVcsConfig.model_validate({"base_url": server.url, "project": 4242, "token": {"env": "GITLAB_TOKEN_TEST"}}), client
    )
    assert vcs.cut_branch("release/8.9", "main")["status"] == "created"
    assert server.violations == []


def test_a_cut_retried_after_a_client_timeout_creates_one_branch(server, fake, client, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN_TEST", TOKEN)
    vcs = make(server, client, timeout_s=0.4)
    server.fault("POST", r"/repository/branches$", status=None, delay=1.0)
    with pytest.raises(ActionFailed, match="timed out") as exc:
        vcs.cut_branch("release/8.9", "main")
    assert exc.value.retryable
    deadline = time.monotonic() + 5
    while "release/8.9" not in fake.branches:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert vcs.cut_branch("release/8.9", "main")["status"] == "existed"
    assert fake.created == ["branch:release/8.9"] and server.violations == []


def test_branch_already_exists_from_a_racing_attempt_is_read_back(vcs, fake, server):
    fake.branches["release/8.9"] = sha_of("main")
    server.fault("GET", r"/repository/branches/release%2F8\.9$", status=404, body={"message": "404 Branch Not Found"})
    assert vcs.cut_branch("release/8.9", "main")["status"] == "existed"
    assert fake.created == [] and server.violations == []


def test_a_branch_at_another_commit_asks_a_person(vcs, fake):
    fake.branches["release/8.9"] = fake.add_commit("hotfix")
    with pytest.raises(ActionFailed) as exc:
        vcs.cut_branch("release/8.9", "main")
    assert not exc.value.retryable and sha_of("hotfix") in str(exc.value) and sha_of("main") in str(exc.value)


def test_dispatch_starts_a_pipeline_with_variables_and_the_hook_is_recognised(vcs, fake, server):
    out = vcs.dispatch("build-beta", "main", {"RING": "beta"})
    sent = server.calls("POST", r"/pipeline$")[0].json()
    assert sent["ref"] == "main"
    assert sent["variables"] == [{"key": "RING", "value": "beta"}, {"key": "CONDUCTOR_WORKFLOW", "value": "build-beta"},
                                 {"key": "CONDUCTOR_KEY", "value": out["key"]}]  # fmt: skip
    assert out["run_id"] == fake.pipelines[0]["id"] and out["run_url"].endswith(f"/-/pipelines/{out['run_id']}")
    real = json.loads(PIPELINE_HOOK.read_text())  # a real gitlab.com Pipeline Hook (pipeline 4414206)
    assert not matches_pipeline(out, real)
    ours = fake.pipeline_hook(real, fake.pipelines[0])
    assert matches_pipeline(out, ours)
    assert matches_pipeline({**out, "run_id": None}, ours)  # by the key variable, when no id was kept
    other = vcs.dispatch("build-beta", "main", {"RING": "beta"})
    assert not matches_pipeline(out, fake.pipeline_hook(real, fake.pipelines[1])) and matches_pipeline(
        other, fake.pipeline_hook(real, fake.pipelines[1])
    )
    assert server.violations == []


def test_a_pipeline_on_an_unknown_ref_is_refused_with_gitlabs_words(vcs, fake):
    with pytest.raises(ActionFailed, match="Reference not found") as exc:
        vcs.dispatch("build-beta", "release/9.9", {})
    assert not exc.value.retryable


def test_tag_and_release_once(vcs, fake, server):
    sha = sha_of("main")
    out = vcs.tag_release("v8.9.0", sha, "8.9.0", notes="Fixes the login crash.")
    assert out["tag_status"] == "created" and out["release_status"] == "created" and out["release_url"].endswith("/-/releases/v8.9.0")
    assert server.calls("POST", r"/repository/tags$")[0].json() == {"tag_name": "v8.9.0", "ref": sha}
    assert server.calls("POST", r"/releases$")[0].json() == {"tag_name": "v8.9.0", "name": "8.9.0", "description": "Fixes the login crash."}
    again = vcs.tag_release("v8.9.0", sha, "8.9.0", notes="Fixes the login crash.")
    assert again["tag_status"] == "existed" and again["release_status"] == "existed"
    assert fake.created == ["tag:v8.9.0", "release:v8.9.0"] and server.violations == []


def test_a_release_created_meanwhile_answers_409_and_is_read_back(vcs, fake, server):
    vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")
    server.fault("GET", r"/releases/v8\.9\.0$", status=404, body={"message": "404 Not Found"})
    assert vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")["release_url"].endswith("/-/releases/v8.9.0")
    assert fake.created.count("release:v8.9.0") == 1 and server.violations == []


def test_a_tag_at_another_commit_is_refused(vcs, fake):
    fake.tags["v8.9.0"] = {"target": sha_of("x"), "commit": fake.add_commit("x"), "message": None}
    with pytest.raises(ActionFailed, match="tag v8.9.0 already exists") as exc:
        vcs.tag_release("v8.9.0", sha_of("main"), "8.9.0")
    assert not exc.value.retryable


def test_check_names_the_access_level(vcs, fake, server):
    assert vcs.check() == "acme/mobile/app: developer access with credential env GITLAB_TOKEN_TEST"
    fake.access_level = 20
    assert vcs.check().endswith("reporter access with credential env GITLAB_TOKEN_TEST; developer access is needed to cut branches, "
                                "run pipelines and tag")  # fmt: skip
    assert server.violations == []


def test_bad_credentials_and_unknown_projects_are_not_retryable(server, fake, client, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN_TEST", "glpat-revoked")
    with pytest.raises(ActionFailed) as exc:
        make(server, client).cut_branch("release/8.9", "main")
    assert not exc.value.retryable and "HTTP 401: bad credentials (credential env GITLAB_TOKEN_TEST)" in str(exc.value)
    assert "glpat-revoked" not in str(exc.value)
    monkeypatch.setenv("GITLAB_TOKEN_TEST", TOKEN)
    with pytest.raises(ActionFailed, match="404 Project Not Found") as exc:
        make(server, client, project="acme/other").cut_branch("release/8.9", "main")
    assert not exc.value.retryable


def test_rate_limits_and_server_errors_are_retryable(vcs, fake, server):
    server.fault("POST", r"/pipeline$", status=429, body="Retry later", headers={"Retry-After": "30", "RateLimit-Remaining": "0"})
    with pytest.raises(ActionFailed, match="rate limited: Retry later") as exc:
        vcs.dispatch("build-beta", "main", {})
    assert exc.value.retryable and exc.value.retry_after == 30
    reset = str(int(time.time()) + 40)  # GitLab sends the reset as Unix time
    server.fault("POST", r"/pipeline$", status=403, body={"message": "403 Forbidden"}, headers={"RateLimit-Remaining": "0",
                                                                                                "RateLimit-Reset": reset})  # fmt: skip
    with pytest.raises(ActionFailed, match="rate limited") as exc:
        vcs.dispatch("build-beta", "main", {})
    assert exc.value.retryable and 30 <= exc.value.retry_after <= 41
    server.fault("GET", r"/repository/branches/", status=502, body="<html>502 Bad Gateway</html>", content_type="text/html")
    with pytest.raises(ActionFailed, match="HTTP 502") as exc:
        vcs.cut_branch("release/8.9", "main")
    assert exc.value.retryable
    server.fault("POST", r"/repository/tags$", status=403, body={"message": "403 Forbidden - You are not allowed to create tags"})
    with pytest.raises(ActionFailed, match="not permitted for credential env GITLAB_TOKEN_TEST") as exc:
        vcs.tag_release("v1", sha_of("main"), "1")
    assert not exc.value.retryable
    assert fake.pipelines == [] and server.violations == []
