"""GitHub (and GitHub Enterprise Server) as the robot's VCS/CI hand, through githubkit.

    vcs:
      kind: github
      owner: acme
      repo: app
      app: {app_id: 123456, installation_id: 7890123, private_key: {file: /run/secrets/github-app.pem}}
      # or: token: {env: CONDUCTOR_GITHUB_TOKEN}
      base_url: https://api.github.com        # GHES: https://github.example.com/api/v3
      timeout_s: 10

Calls (https://docs.github.com/en/rest):
    check        GET  /repos/{o}/{r}
    cut_branch   GET  /repos/{o}/{r}/git/ref/heads/{from_ref}   (unless from_ref is a full sha)
                 GET  /repos/{o}/{r}/git/ref/heads/{branch}     there already? at which sha?
                 POST /repos/{o}/{r}/git/refs {ref: refs/heads/{branch}, sha}
    dispatch     GET  /repos/{o}/{r}/actions/workflows/{wf}/runs?event=workflow_dispatch&branch=&created=>=
                      (only for a caller-given, stable key: the run an earlier attempt started)
                 POST /repos/{o}/{r}/actions/workflows/{wf}/dispatches {ref, inputs, return_run_details}
    tag_release  GET  /repos/{o}/{r}/git/ref/tags/{tag}  (GET /git/tags/{sha} for an annotated tag)
                 POST /repos/{o}/{r}/git/refs {ref: refs/tags/{tag}, sha}   (a lightweight tag)
                 GET  /repos/{o}/{r}/releases/tags/{tag}
                 POST /repos/{o}/{r}/releases {tag_name, target_commitish, name, body | generate_release_notes}

Every write is preceded by a read, so a retry after a timeout (applied, answered late) finds the
branch, tag or release there and does nothing twice; a branch or tag already at another sha is a
non-retryable ActionFailed naming both shas, for a human to settle.

How a dispatched run is recognised
----------------------------------
GitHub answers a workflow_dispatch with 204 and no run, unless asked for `return_run_details`
(github.com since 2026-02; older GHES refuse the field, and the adapter then dispatches without
it). Each dispatch also carries a correlation key as the workflow input `conductor_key`, which
the workflow must declare and show as its run name:

    on:
      workflow_dispatch:
        inputs:
          conductor_key: {description: "Set by Conductor to recognise this run", required: false}
    run-name: ${{ inputs.conductor_key || github.workflow }}

`matches_dispatch(result, workflow_run_payload)` then recognises the `workflow_run` webhook of
that run: by run id when GitHub returned one; else by the run name (`display_title`) equal to the
key, for the same workflow file, branch and event (workflow_dispatch), created no earlier than
the dispatch. A run named with another Conductor key (they start with `conductor-`; so should
a key a caller passes) is someone else's. A workflow that shows
no key (no run-name line) is matched on workflow + branch + event + time alone, which cannot tell
two dispatches of one workflow on one branch apart: add the run-name line.

A caller that passes a stable `conductor_key` in `inputs` (say, the action's idempotency key)
also makes the dispatch idempotent: a retry first looks for a run with that name and returns it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote

import httpx
from githubkit import AppInstallationAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import AuthCredentialError, RequestError, RequestFailed, RequestTimeout
from githubkit.response import Response

from conductor.actions.base import ActionFailed
from conductor.actions.http import USER_AGENT
from conductor.actions.vcs.github_config import GitHubAppAuth, GitHubVcsConfig
from conductor.actions.vcs.runs import KEY_PREFIX, _parse_time, _short_ref, matches_dispatch

__all__ = ["GitHubAppAuth", "GitHubVcs", "GitHubVcsConfig", "matches_dispatch"]
from conductor.actions.vendor_http import classify, read_secret, transport_failure, vendor_message

SHA = re.compile(r"[0-9a-f]{40}")
R = TypeVar("R")


class GitHubVcs:
    """VcsClient for one GitHub repository (see the module docstring for calls and matching)."""

    kind = "github"

    def __init__(self, config: GitHubVcsConfig, *, now: Callable[[], datetime] | None = None):
        self.cfg = config
        self.slug = f"{config.owner}/{config.repo}"
        self._now = now or (lambda: datetime.now(UTC))
        self._github: GitHub[Any] | None = None
        self._run_details = config.return_run_details
        self._headers = {"X-GitHub-Api-Version": config.api_version}

    # ------------------------------------------------------------------ plumbing

    @property
    def credential(self) -> str:
        if self.cfg.app is not None:
            app = self.cfg.app
            return f"GitHub App {app.app_id} installation {app.installation_id}, private key {app.private_key.describe()}"
        assert self.cfg.token is not None
        return f"token {self.cfg.token.describe()}"

    def _gh(self) -> GitHub[Any]:
        if self._github is None:
            auth: TokenAuthStrategy | AppInstallationAuthStrategy
            if self.cfg.app is not None:
                app = self.cfg.app
                auth = AppInstallationAuthStrategy(app.app_id, read_secret(app.private_key), app.installation_id)
            else:
                assert self.cfg.token is not None
                auth = TokenAuthStrategy(read_secret(self.cfg.token))
            timeout = httpx.Timeout(self.cfg.timeout_s, connect=min(self.cfg.timeout_s, 5.0))
            # No githubkit retries (the relay retries, honouring Retry-After), no HTTP cache (reads must be fresh),
            # a token cache of this client's own, bodies as we build them (return_run_details is newer than the schema).
            self._github = GitHub(auth, base_url=self.cfg.base_url, timeout=timeout, user_agent=USER_AGENT, auto_retry=False,
                                  http_cache=False, cache_strategy=MemCacheStrategy(), rest_api_validate_body=False)  # fmt: skip
        return self._github

    def _call(self, what: str, fn: Callable[[GitHub[Any]], R]) -> R:
        """Run one githubkit call; every failure becomes ActionFailed (vendor_http's policy)."""
        try:
            return fn(self._gh())
        except RequestFailed as exc:
            raise self._failure(exc.response.raw_response, what) from None
        except RequestTimeout as exc:
            raise transport_failure(exc.exc, what) from None
        except RequestError as exc:
            inner = exc.exc
            if isinstance(inner, RequestFailed):  # the installation-token request, inside the auth flow
                raise self._failure(inner.response.raw_response, f"{what} (installation token)") from None
            if isinstance(inner, httpx.HTTPError):
                raise transport_failure(inner, what) from None
            raise ActionFailed(f"{what}: {self.credential} could not be used ({inner.__class__.__name__})", retryable=False) from None
        except AuthCredentialError as exc:
            raise ActionFailed(f"{what}: {self.credential}: {exc}", retryable=False) from None

    def _failure(self, response: httpx.Response, what: str) -> ActionFailed:
        failed = classify(response, what, self.credential)
        message = vendor_message(response)
        if response.status_code == 422 and self.cfg.key_input and "unexpected inputs" in message.lower() and self.cfg.key_input in message:
            hint = f"; the workflow must declare the input {self.cfg.key_input!r} under on.workflow_dispatch.inputs"
            return ActionFailed(str(failed) + hint, retryable=False)
        return failed

    def _get(self, what: str, fn: Callable[[GitHub[Any]], Response[Any, Any]]) -> dict[str, Any] | None:
        """A read whose 404 means "not there (yet)": None."""

        def read(gh: GitHub[Any]) -> dict[str, Any] | None:
            try:
                body: dict[str, Any] = fn(gh).raw_response.json()
                return body
            except RequestFailed as exc:
                if exc.response.status_code == 404:
                    return None
                raise

        return self._call(what, read)

    def _ref_sha(self, ref: str, what: str) -> str | None:
        """The commit a ref (heads/x, tags/x) points at, an annotated tag followed to its commit; None if absent."""
        o, r, h = self.cfg.owner, self.cfg.repo, self._headers
        found = self._get(what, lambda gh: gh.rest.git.get_ref(o, r, quote(ref, safe="/"), headers=h))
        if found is None:
            return None
        obj = found.get("object") or {}
        if obj.get("type") == "tag":
            tag = self._get(what, lambda gh: gh.rest.git.get_tag(o, r, obj["sha"], headers=h)) or {}
            return str((tag.get("object") or {}).get("sha") or obj["sha"])
        return str(obj.get("sha"))

    def _create_ref(self, ref: str, sha: str, what: str) -> bool:
        """POST /git/refs; False when GitHub says the reference already exists (a racing or earlier attempt)."""

        def create(gh: GitHub[Any]) -> bool:
            try:
                gh.rest.git.create_ref(self.cfg.owner, self.cfg.repo, data={"ref": ref, "sha": sha}, headers=self._headers)
                return True
            except RequestFailed as exc:
                if exc.response.status_code == 422 and "already exists" in vendor_message(exc.response.raw_response).lower():
                    return False
                raise

        return self._call(what, create)

    def _ensure_ref(self, kind: Literal["heads", "tags"], name: str, sha: str, what: str) -> str:
        """The ref `kind/name` at `sha`: "created", or "existed"; ActionFailed (not retryable) if at another sha."""
        existing = self._ref_sha(f"{kind}/{name}", what)
        if existing is None:
            if self._create_ref(f"refs/{kind}/{name}", sha, what):
                return "created"
            existing = self._ref_sha(f"{kind}/{name}", what)
        if existing != sha:
            noun = "branch" if kind == "heads" else "tag"
            raise ActionFailed(f"{what}: {noun} {name} already exists in {self.slug} at {existing}, not at {sha}; "
                               "a person must decide which is right", retryable=False)  # fmt: skip
        return "existed"

    # ------------------------------------------------------------------ VcsClient

    def _repository(self, what: str) -> dict[str, Any]:
        repo: dict[str, Any] = self._call(
            what, lambda gh: gh.rest.repos.get(self.cfg.owner, self.cfg.repo, headers=self._headers).raw_response.json()
        )
        return repo

    def check(self) -> str:
        repo = self._repository(f"read repository {self.slug}")
        perms = repo.get("permissions")
        if not isinstance(perms, dict):
            return f"{repo.get('full_name', self.slug)}: reachable with {self.credential} (default branch {repo.get('default_branch')})"
        level = next((name for name in ("admin", "maintain", "push", "triage", "pull") if perms.get(name)), "no")
        warning = (
            "" if perms.get("push") or perms.get("admin") or perms.get("maintain") else "; push access is needed to cut branches and tag"
        )
        return f"{repo.get('full_name', self.slug)}: {level} access with {self.credential}{warning}"

    def cut_branch(self, branch: str, from_ref: str) -> dict[str, Any]:
        what = f"cut branch {branch} from {from_ref} in {self.slug}"
        sha = from_ref if SHA.fullmatch(from_ref) else self._ref_sha(f"heads/{_short_ref(from_ref)}", what)
        if sha is None:
            self._repository(what)  # a repository it cannot see is the likelier story: that 404 says so
            raise ActionFailed(f"{what}: {from_ref} is not a branch of {self.slug}", retryable=False)
        status = self._ensure_ref("heads", branch, sha, what)
        return {"branch": branch, "from_ref": from_ref, "sha": sha, "status": status}

    def dispatch(self, workflow: str, ref: str, inputs: dict[str, str]) -> dict[str, Any]:
        what = f"dispatch workflow {workflow} on {ref} in {self.slug}"
        inputs = dict(inputs)
        key: str | None = None
        if self.cfg.key_input:
            given = inputs.get(self.cfg.key_input)
            key = given or f"{KEY_PREFIX}{secrets.token_hex(8)}"
            inputs[self.cfg.key_input] = key
            if given and (run := self._find_run(workflow, ref, key, what)) is not None:
                return self._result(workflow, ref, key, _parse_time(run.get("created_at")) or self._now(), run, "existed")
        dispatched_at = self._now().replace(microsecond=0)
        run = self._post_dispatch(workflow, {"ref": ref, "inputs": inputs}, what)
        return self._result(workflow, ref, key, dispatched_at, run, "dispatched")

    def _result(self, workflow: str, ref: str, key: str | None, at: datetime, run: dict[str, Any] | None, status: str) -> dict[str, Any]:
        run = run or {}
        run_id = run.get("workflow_run_id", run.get("id"))
        return {"workflow": workflow, "ref": ref, "key": key, "dispatched_at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "run_id": run_id, "run_url": run.get("html_url"), "status": status}  # fmt: skip

    def _find_run(self, workflow: str, ref: str, key: str, what: str) -> dict[str, Any] | None:
        """A run an earlier attempt with this key started (named with the key), within dedupe_window_s."""
        if not self.cfg.dedupe_window_s:
            return None
        since = (self._now() - timedelta(seconds=self.cfg.dedupe_window_s)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        o, r, h = self.cfg.owner, self.cfg.repo, self._headers
        page = self._get(f"{what} (looking for an earlier run)", lambda gh: gh.rest.actions.list_workflow_runs(
            o, r, workflow, branch=_short_ref(ref), event="workflow_dispatch", created=f">={since}", per_page=100, headers=h))  # fmt: skip
        runs = (page or {}).get("workflow_runs") or []
        return next((run for run in runs if run.get("display_title") == key), None)

    def _post_dispatch(self, workflow: str, body: dict[str, Any], what: str) -> dict[str, Any] | None:
        """POST .../dispatches, asking for the run's id where GitHub can give it; the run (id, URLs) or None."""
        o, r, h = self.cfg.owner, self.cfg.repo, self._headers
        if self._run_details:
            try:
                resp = self._call(what, lambda gh: gh.rest.actions.create_workflow_dispatch(
                    o, r, workflow, data=cast(Any, {**body, "return_run_details": True}), headers=h))  # fmt: skip
                return resp.raw_response.json() if resp.status_code == 200 and resp.content else None
            except ActionFailed as exc:
                if exc.retryable or "return_run_details" not in str(exc):
                    raise
                self._run_details = False  # an older GHES: it refuses the field; dispatch without it from now on
        self._call(what, lambda gh: gh.rest.actions.create_workflow_dispatch(o, r, workflow, data=cast(Any, body), headers=h))
        return None

    def tag_release(self, tag: str, sha: str, name: str, notes: str | None = None) -> dict[str, Any]:
        what = f"tag {tag} at {sha} in {self.slug}"
        tag_status = self._ensure_ref("tags", tag, sha, what)
        what = f"publish release {tag} in {self.slug}"
        o, r, h = self.cfg.owner, self.cfg.repo, self._headers
        release = self._get(what, lambda gh: gh.rest.repos.get_release_by_tag(o, r, quote(tag, safe=""), headers=h))
        release_status = "existed"
        if release is None:
            release, release_status = self._create_release(tag, sha, name, notes, what), "created"
        return {"tag": tag, "sha": sha, "tag_status": tag_status, "release_status": release_status,
                "release_id": release.get("id"), "release_url": release.get("html_url")}  # fmt: skip

    def _create_release(self, tag: str, sha: str, name: str, notes: str | None, what: str) -> dict[str, Any]:
        body: dict[str, Any] = {"tag_name": tag, "target_commitish": sha, "name": name, "draft": False, "prerelease": False}
        body.update({"body": notes} if notes else {"generate_release_notes": True})
        o, r, h = self.cfg.owner, self.cfg.repo, self._headers

        def create(gh: GitHub[Any]) -> dict[str, Any] | None:
            try:
                created: dict[str, Any] = gh.rest.repos.create_release(o, r, data=cast(Any, body), headers=h).raw_response.json()
                return created
            except RequestFailed as exc:
                if exc.response.status_code == 422 and "already_exists" in exc.response.text:
                    return None  # published meanwhile (a racing attempt): read it below
                raise

        created = self._call(what, create)
        if created is None:
            created = self._get(what, lambda gh: gh.rest.repos.get_release_by_tag(o, r, quote(tag, safe=""), headers=h))
        if created is None:
            raise ActionFailed(f"{what}: GitHub said the release exists but does not show it (a draft?)", retryable=False)
        return created
