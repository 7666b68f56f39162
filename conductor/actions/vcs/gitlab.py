"""GitLab (gitlab.com or self-managed) as the robot's VCS/CI hand, over httpx.

    vcs:
      kind: gitlab
      base_url: https://gitlab.com            # self-managed: https://gitlab.example.com
      project: acme/mobile/app                # or the numeric project id
      token: {env: CONDUCTOR_GITLAB_TOKEN}    # a project/group/personal access token with the api scope
      timeout_s: 10

Why httpx and not python-gitlab: the robot needs eight endpoints and one failure policy (status,
Retry-After and the vendor's message turned into a retryable or not ActionFailed, credentials
named, never shown). python-gitlab brings a second HTTP stack (requests), sleeps inside the call
when rate limited (obey_rate_limit holds a worker; the relay should schedule the retry) and wraps
answers in exceptions per operation that we would unwrap to the same status and body again.

Calls (https://docs.gitlab.com/api/), on /api/v4, with the PRIVATE-TOKEN header:
    check        GET  /projects/:id
    cut_branch   GET  /projects/:id/repository/branches/:from_ref   (unless from_ref is a full sha)
                 GET  /projects/:id/repository/branches/:branch     there already? at which commit?
                 POST /projects/:id/repository/branches?branch=&ref=<sha>   (400 "Branch already exists")
    dispatch     POST /projects/:id/pipeline {ref, variables: [{key, value}]}  -> the pipeline id
    tag_release  GET  /projects/:id/repository/tags/:tag
                 POST /projects/:id/repository/tags {tag_name, ref: <sha>}     (400 "Tag ... already exists")
                 GET  /projects/:id/releases/:tag
                 POST /projects/:id/releases {tag_name, name, description}    (409 "Release already exists")

Paths take the project and branch/tag names URL-encoded (group%2Fapp, release%2F8.9).

A pipeline is GitLab's "workflow": `workflow` travels as the variable CONDUCTOR_WORKFLOW (for the
pipeline's `rules:` to pick jobs by), the correlation key as CONDUCTOR_KEY, and the pipeline id
GitLab returns is what `matches_pipeline` looks for in a Pipeline Hook. GitLab starts a new
pipeline for every POST, so a dispatch retried after a timeout can start a second one; the
matcher then follows the one whose id was returned.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from conductor.actions.base import ActionFailed
from conductor.actions.vendor_http import VendorApi, classify, vendor_message
from conductor.connect.credentials import CredentialRef

SHA = re.compile(r"[0-9a-f]{40}")
ACCESS_LEVELS = {5: "minimal", 10: "guest", 15: "planner", 20: "reporter", 30: "developer", 40: "maintainer", 50: "owner"}
DEVELOPER = 30  # creating branches, pipelines, tags and releases


class GitLabVcsConfig(BaseModel):
    """One GitLab project: its numeric id or full path, and a token with the api scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["gitlab"] = "gitlab"
    base_url: str = Field(default="https://gitlab.com", pattern=r"^https?://[^\s/]+(/\S*)?$")
    project: str = Field(min_length=1, max_length=500)
    token: CredentialRef
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    key_variable: str = Field(default="CONDUCTOR_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    workflow_variable: str = Field(default="CONDUCTOR_WORKFLOW", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("project", mode="before")
    @classmethod
    def _id_or_path(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


def matches_pipeline(dispatch_result: dict[str, Any], pipeline_hook: dict[str, Any]) -> bool:
    """Whether a Pipeline Hook body is about the pipeline `dispatch()` started: its id, else its key variable."""
    attrs = pipeline_hook.get("object_attributes") or {}
    if pipeline_hook.get("object_kind") != "pipeline":
        return False
    if dispatch_result.get("run_id") is not None:
        return bool(attrs.get("id") == dispatch_result["run_id"])
    variables = {v.get("key"): v.get("value") for v in attrs.get("variables") or [] if isinstance(v, dict)}
    return bool(dispatch_result.get("key")) and variables.get(dispatch_result.get("key_variable")) == dispatch_result["key"]


class GitLabVcs:
    """VcsClient for one GitLab project (see the module docstring for the calls)."""

    kind = "gitlab"

    def __init__(self, config: GitLabVcsConfig, client: httpx.Client, *, now: Callable[[], datetime] | None = None):
        self.cfg = config
        self.api = VendorApi(client, config.base_url.rstrip("/") + "/api/v4", config.token, lambda token: {"PRIVATE-TOKEN": token},
                             config.timeout_s)  # fmt: skip
        self.project = f"/projects/{quote(config.project, safe='')}"
        self._now = now or (lambda: datetime.now(UTC))

    def _read(self, path: str, what: str) -> dict[str, Any] | None:
        """GET; None on 404 (not there yet)."""
        response = self.api.request("GET", self.project + path, what=what, expect=(404,))
        if response.status_code == 404:
            return None
        body: dict[str, Any] = response.json()
        return body

    def _commit_of(self, kind: Literal["branches", "tags"], name: str, what: str) -> str | None:
        found = self._read(f"/repository/{kind}/{quote(name, safe='')}", what)
        return None if found is None else str((found.get("commit") or {}).get("id"))

    def _create(self, path: str, what: str, *, exists_status: int, params: dict[str, str] | None = None,
                body: dict[str, Any] | None = None) -> dict[str, Any] | None:  # fmt: skip
        """POST; None when GitLab says it already exists (an earlier or racing attempt made it)."""
        response = self.api.request("POST", self.project + path, what=what, params=params, json_body=body, expect=(exists_status,))
        if response.status_code == exists_status:
            if "already exists" not in vendor_message(response).lower():
                raise classify(response, what, f"credential {self.cfg.token.describe()}")
            return None
        created: dict[str, Any] = response.json()
        return created

    def _ensure(self, kind: Literal["branches", "tags"], name: str, sha: str, what: str) -> str:
        """The branch or tag `name` at commit `sha`: "created" or "existed"; ActionFailed (not retryable) at another."""
        existing = self._commit_of(kind, name, what)
        if existing is None:
            if kind == "branches":
                created = self._create("/repository/branches", what, exists_status=400, params={"branch": name, "ref": sha})
            else:
                created = self._create("/repository/tags", what, exists_status=400, body={"tag_name": name, "ref": sha})
            if created is not None:
                return "created"
            existing = self._commit_of(kind, name, what)
        if existing != sha:
            noun = "branch" if kind == "branches" else "tag"
            raise ActionFailed(f"{what}: {noun} {name} already exists in {self.cfg.project} at {existing}, not at {sha}; "
                               "a person must decide which is right", retryable=False)  # fmt: skip
        return "existed"

    # ------------------------------------------------------------------ VcsClient

    def check(self) -> str:
        project = self.api.request("GET", self.project, what=f"read project {self.cfg.project}").json()
        perms = project.get("permissions") or {}
        level = max((int((perms.get(k) or {}).get("access_level") or 0) for k in ("project_access", "group_access")), default=0)
        name = project.get("path_with_namespace", self.cfg.project)
        warning = "" if level >= DEVELOPER else "; developer access is needed to cut branches, run pipelines and tag"
        return f"{name}: {ACCESS_LEVELS.get(level, 'no')} access with credential {self.cfg.token.describe()}{warning}"

    def cut_branch(self, branch: str, from_ref: str) -> dict[str, Any]:
        what = f"cut branch {branch} from {from_ref} in {self.cfg.project}"
        sha = from_ref if SHA.fullmatch(from_ref) else self._commit_of("branches", from_ref.removeprefix("refs/heads/"), what)
        if sha is None:
            self.check()  # a project it cannot see is the likelier story: that error says so
            raise ActionFailed(f"{what}: {from_ref} is not a branch of {self.cfg.project}", retryable=False)
        status = self._ensure("branches", branch, sha, what)
        return {"branch": branch, "from_ref": from_ref, "sha": sha, "status": status}

    def dispatch(self, workflow: str, ref: str, inputs: dict[str, str]) -> dict[str, Any]:
        what = f"start a pipeline ({workflow}) on {ref} in {self.cfg.project}"
        key = inputs.get(self.cfg.key_variable) or f"conductor-{secrets.token_hex(8)}"
        variables = {**inputs, self.cfg.workflow_variable: workflow, self.cfg.key_variable: key}
        dispatched_at = self._now().replace(microsecond=0)
        body = {"ref": ref, "variables": [{"key": k, "value": str(v)} for k, v in variables.items()]}
        pipeline = self.api.request("POST", self.project + "/pipeline", what=what, json_body=body).json()
        return {"workflow": workflow, "ref": ref, "key": key, "key_variable": self.cfg.key_variable,
                "dispatched_at": dispatched_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "run_id": pipeline.get("id"), "run_url": pipeline.get("web_url"), "status": "dispatched"}  # fmt: skip

    def tag_release(self, tag: str, sha: str, name: str, notes: str | None = None) -> dict[str, Any]:
        tag_status = self._ensure("tags", tag, sha, f"tag {tag} at {sha} in {self.cfg.project}")
        what = f"publish release {tag} in {self.cfg.project}"
        path = f"/releases/{quote(tag, safe='')}"
        release, release_status = self._read(path, what), "existed"
        if release is None:
            body = {"tag_name": tag, "name": name, **({"description": notes} if notes else {})}
            release, release_status = self._create("/releases", what, exists_status=409, body=body), "created"
            release = release or self._read(path, what) or {}
        links = release.get("_links") or {}
        return {"tag": tag, "sha": sha, "tag_status": tag_status, "release_status": release_status,
                "release_url": links.get("self")}  # fmt: skip
