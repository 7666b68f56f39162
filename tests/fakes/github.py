"""GitHub REST API contract fake: one repository with refs, releases, workflows and their runs.

Shapes and answers follow GitHub's documentation:
  - https://docs.github.com/en/rest/repos/repos#get-a-repository
  - https://docs.github.com/en/rest/git/refs#get-a-reference          404 when the ref is absent
  - https://docs.github.com/en/rest/git/refs#create-a-reference       {ref: "refs/...", sha}; 201; 422
                                                                       "Reference already exists"
  - https://docs.github.com/en/rest/git/tags#get-a-tag                 an annotated tag's object
  - https://docs.github.com/en/rest/actions/workflows#create-a-workflow-dispatch-event
        {ref, inputs (at most 25)}; 204, or 200 {workflow_run_id, run_url, html_url} with
        return_run_details (github.blog changelog 2026-02-19); 422 for an unknown ref, unexpected
        or missing inputs, or a key the server does not know (older GHES: return_run_details)
  - https://docs.github.com/en/rest/actions/workflow-runs#list-workflow-runs-for-a-workflow
  - https://docs.github.com/en/rest/releases/releases#get-a-release-by-tag-name
  - https://docs.github.com/en/rest/releases/releases#create-a-release  422 already_exists
  - https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
  - https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
  - https://docs.github.com/en/rest/about-the-rest-api/api-versions     X-GitHub-Api-Version

Contract checks (server.reject, recorded in server.violations): an Authorization header that is
not "token X" / "Bearer X", a JWT sent to the REST API or a token to the app endpoint, a ref not
fully qualified, a sha that is not 40 hex digits, a body that is not a JSON object, a release
without tag_name. Answers GitHub itself gives (401 Bad credentials, 404, 422) are answered as
GitHub does, not recorded as violations.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Reply, Request

DOCS = "https://docs.github.com/rest"
API_VERSIONS = {"2022-11-28", "2026-03-10"}
HEX40 = re.compile(r"[0-9a-f]{40}")
REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"


def sha_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, doc: str = DOCS, **extra: Any) -> Reply:
    return Reply(status, {"message": message, "documentation_url": doc, "status": str(status), **extra})


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class GitHubFake:
    """Routes for one repository `owner/repo` on `server`; state is public for tests to arrange and inspect."""

    def __init__(self, server: FakeServer, owner: str = "acme", repo: str = "app", *, token: str | None = "ghp_faketoken0001",
                 prefix: str = ""):  # fmt: skip
        """`prefix` is the API's path on the host: "" for api.github.com, "/api/v3" for GitHub Enterprise Server."""
        self.server, self.owner, self.repo, self.prefix = server, owner, repo, prefix
        self.tokens: set[str] = {token} if token else set()
        self.app: tuple[int, Any, int] | None = None  # (app_id, RSA public key, installation_id)
        self.permissions = {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}
        main = sha_of("main")
        self.commits: set[str] = {main}
        self.refs: dict[str, str] = {"heads/main": main}
        self.tag_objects: dict[str, str] = {}  # annotated tag object sha -> commit sha
        self.releases: dict[str, dict[str, Any]] = {}
        self.workflows: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        self.created_refs: list[str] = []  # every successful POST /git/refs, in order
        self.dispatches: list[dict[str, Any]] = []
        self.supports_run_details = True
        self.installation_tokens: list[str] = []
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self._routes()

    # ------------------------------------------------------------ arranging

    def add_commit(self, name: str) -> str:
        sha = sha_of(name)
        self.commits.add(sha)
        return sha

    def add_workflow(self, file: str, name: str, inputs: dict[str, bool] | None = None, run_name_input: str | None = None) -> int:
        """A workflow with workflow_dispatch `inputs` (name -> required); its runs are named by `run_name_input`."""
        wf_id = next(self._ids)
        self.workflows[file] = {"id": wf_id, "name": name, "path": f".github/workflows/{file}",
                                "inputs": inputs or {}, "run_name_input": run_name_input}  # fmt: skip
        return wf_id

    def use_app(self, app_id: int, public_key: Any, installation_id: int) -> None:
        self.app = (app_id, public_key, installation_id)

    def workflow_run_payload(self, template: dict[str, Any], run: dict[str, Any], conclusion: str = "success") -> dict[str, Any]:
        """A `workflow_run` webhook body for `run`: a real payload (`template`) with this run's fields."""
        body = copy.deepcopy(template)
        wf = next(w for w in self.workflows.values() if w["id"] == run["workflow_id"])
        body["action"] = "completed"
        body["workflow_run"].update({k: run[k] for k in ("id", "name", "display_title", "event", "head_branch", "head_sha", "path",
                                                          "workflow_id", "created_at", "run_number", "run_attempt")})  # fmt: skip
        body["workflow_run"].update({"status": "completed", "conclusion": conclusion, "updated_at": _iso(datetime.now(UTC))})
        body["workflow"].update({"id": wf["id"], "name": wf["name"], "path": wf["path"]})
        body["repository"].update({"name": self.repo, "full_name": f"{self.owner}/{self.repo}"})
        return body

    # ------------------------------------------------------------ checks

    def _auth(self, req: Request) -> Reply | None:
        header = req.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credential:
            return self.server.reject(req, f"Authorization must be 'token <token>' or 'Bearer <token>', got {scheme or 'none'!r}")
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            return self.server.reject(req, "a GitHub App JWT authenticates only as the app (/app/...), not to repository endpoints")
        if credential not in self.tokens:
            return _error(401, "Bad credentials")
        version = req.headers.get("x-github-api-version")
        if version is not None and version not in API_VERSIONS:
            return _error(400, f"API version {version} is not supported.")
        if "json" not in req.headers.get("accept", ""):
            return self.server.reject(req, "Accept should be application/vnd.github+json")
        return None

    def _repo(self, req: Request) -> Reply | None:
        problem = self._auth(req)
        if problem is not None:
            return problem
        assert req.match is not None
        if (req.match["owner"], req.match["repo"]) != (self.owner, self.repo):
            return _error(404, "Not Found", f"{DOCS}/repos/repos#get-a-repository")
        return None

    def _json_object(self, req: Request) -> dict[str, Any] | Reply:
        try:
            body = req.json()
        except ValueError:
            return _error(400, "Problems parsing JSON")
        if not isinstance(body, dict):
            return self.server.reject(req, "the body must be a JSON object")
        return body

    # ------------------------------------------------------------ routes

    def _routes(self) -> None:
        s, p = self.server, self.prefix
        s.route("POST", p + r"/app/installations/(?P<iid>\d+)/access_tokens", self._access_token)
        s.route("GET", p + REPO, self._get_repo)
        s.route("GET", p + REPO + r"/git/ref/(?P<ref>.+)", self._get_ref)
        s.route("POST", p + REPO + r"/git/refs", self._create_ref)
        s.route("GET", p + REPO + r"/git/tags/(?P<sha>[0-9a-f]{40})", self._get_tag)
        s.route("POST", p + REPO + r"/actions/workflows/(?P<wf>[^/]+)/dispatches", self._dispatch)
        s.route("GET", p + REPO + r"/actions/workflows/(?P<wf>[^/]+)/runs", self._list_runs)
        s.route("GET", p + REPO + r"/releases/tags/(?P<tag>[^/]+)", self._get_release)
        s.route("POST", p + REPO + r"/releases", self._create_release)

    def _access_token(self, req: Request) -> Reply:
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return self.server.reject(req, "the installation token request is authenticated by 'Bearer <JWT>'")
        if self.app is None:
            return _error(401, "A JSON web token could not be decoded")
        app_id, public_key, installation_id = self.app
        problem = self._jwt_problem(header[len("Bearer ") :], app_id, public_key)
        if problem:
            return _error(401, problem)
        assert req.match is not None
        if int(req.match["iid"]) != installation_id:
            return _error(404, "Not Found", f"{DOCS}/apps/apps#create-an-installation-access-token-for-an-app")
        token = f"ghs_{secrets.token_hex(18)}"
        self.tokens.add(token)
        self.installation_tokens.append(token)
        return Reply(201, {"token": token, "expires_at": _iso(datetime.now(UTC) + timedelta(hours=1)),
                           "permissions": {"contents": "write", "actions": "write", "metadata": "read"},
                           "repository_selection": "selected"})  # fmt: skip

    @staticmethod
    def _jwt_problem(token: str, app_id: int, public_key: Any) -> str | None:
        """RS256 signature by the app's key, iss = the app id, at most 10 minutes of life (GitHub's rules)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head_b64, body_b64, sig_b64 = token.split(".")
            header, claims = json.loads(_b64url(head_b64)), json.loads(_b64url(body_b64))
            public_key.verify(_b64url(sig_b64), f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            return "A JSON web token could not be decoded"
        now = datetime.now(UTC).timestamp()
        if header.get("alg") != "RS256" or str(claims.get("iss")) != str(app_id):
            return "'Issuer' claim ('iss') must be an Integer"
        if not (claims.get("iat", now + 999) <= now + 60 and now < claims.get("exp", 0) <= now + 600 + 5):
            return "'Expiration time' claim ('exp') is too far in the future"
        return None

    def _get_repo(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        return Reply(200, {"id": 1296269, "name": self.repo, "full_name": f"{self.owner}/{self.repo}", "private": True,
                           "default_branch": "main", "owner": {"login": self.owner}, "permissions": dict(self.permissions)})  # fmt: skip

    def _ref_json(self, ref: str) -> dict[str, Any]:
        sha = self.refs[ref]
        kind = "tag" if sha in self.tag_objects else "commit"
        url = f"https://api.github.com/repos/{self.owner}/{self.repo}/git/refs/{ref}"
        return {"ref": f"refs/{ref}", "node_id": "REF_" + sha[:8], "url": url, "object": {"type": kind, "sha": sha, "url": url}}

    def _get_ref(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        assert req.match is not None
        ref = unquote(req.match["ref"])
        if not ref.startswith(("heads/", "tags/")):
            return self.server.reject(req, f"the ref must be heads/<branch> or tags/<tag>, got {ref!r}")
        with self._lock:
            if ref not in self.refs:
                return _error(404, "Not Found", f"{DOCS}/git/refs#get-a-reference")
            return Reply(200, self._ref_json(ref))

    def _create_ref(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        body = self._json_object(req)
        if isinstance(body, Reply):
            return body
        ref, sha = body.get("ref"), body.get("sha")
        if not isinstance(ref, str) or not ref.startswith("refs/") or ref.count("/") < 2:
            return self.server.reject(req, f"ref must be fully qualified (refs/heads/<name>), got {ref!r}")
        if not isinstance(sha, str) or not HEX40.fullmatch(sha):
            return self.server.reject(req, f"sha must be a full 40-hex commit sha, got {sha!r}")
        with self._lock:
            if sha not in self.commits and sha not in self.tag_objects:
                return _error(422, "Object does not exist", f"{DOCS}/git/refs#create-a-reference")
            short = ref[len("refs/") :]
            if short in self.refs:
                return _error(422, "Reference already exists", f"{DOCS}/git/refs#create-a-reference")
            self.refs[short] = sha
            self.created_refs.append(short)
            return Reply(201, self._ref_json(short))

    def _get_tag(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        assert req.match is not None
        commit = self.tag_objects.get(req.match["sha"])
        if commit is None:
            return _error(404, "Not Found", f"{DOCS}/git/tags#get-a-tag")
        return Reply(200, {"sha": req.match["sha"], "tag": "?", "message": "", "object": {"type": "commit", "sha": commit}})

    def _workflow(self, req: Request) -> dict[str, Any] | None:
        assert req.match is not None
        wf = unquote(req.match["wf"])
        return next((w for f, w in self.workflows.items() if f == wf or str(w["id"]) == wf), None)

    def _dispatch(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        body = self._json_object(req)
        if isinstance(body, Reply):
            return body
        doc = f"{DOCS}/actions/workflows#create-a-workflow-dispatch-event"
        allowed = {"ref", "inputs"} | ({"return_run_details"} if self.supports_run_details else set())
        unknown = sorted(set(body) - allowed)
        if unknown:
            return _error(422, f'Invalid request.\n\n"{unknown[0]}" is not a permitted key.', doc)
        wf = self._workflow(req)
        if wf is None:
            return _error(404, "Not Found", doc)
        ref, inputs = body.get("ref"), body.get("inputs") or {}
        if not isinstance(ref, str) or not ref:
            return self.server.reject(req, "ref (a branch or tag name) is required")
        if not isinstance(inputs, dict) or len(inputs) > 25 or not all(isinstance(v, str | bool | int | float) for v in inputs.values()):
            return self.server.reject(req, "inputs must be an object of at most 25 scalar values")
        short = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if f"heads/{short}" not in self.refs and f"tags/{short}" not in self.refs:
            return _error(422, f"No ref found for: {ref}", doc)
        unexpected = sorted(set(inputs) - set(wf["inputs"]))
        if unexpected:
            return _error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}", doc)
        missing = [name for name, required in wf["inputs"].items() if required and name not in inputs]
        if missing:
            return _error(422, f"Required input '{missing[0]}' not provided", doc)
        run = self._start_run(wf, short, inputs)
        if body.get("return_run_details"):
            return Reply(200, {"workflow_run_id": run["id"], "run_url": run["url"], "html_url": run["html_url"]})
        return Reply(204)

    def _start_run(self, wf: dict[str, Any], branch: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            run_id = next(self._ids) * 1000
            title = str(inputs.get(wf["run_name_input"]) or wf["name"]) if wf["run_name_input"] else wf["name"]
            head = self.refs.get(f"heads/{branch}") or self.refs[f"tags/{branch}"]
            run = {"id": run_id, "name": wf["name"], "display_title": title, "event": "workflow_dispatch", "head_branch": branch,
                   "head_sha": self.tag_objects.get(head, head), "path": wf["path"], "workflow_id": wf["id"],
                   "status": "queued", "conclusion": None, "created_at": _iso(datetime.now(UTC)), "run_number": len(self.runs) + 1,
                   "run_attempt": 1, "url": f"https://api.github.com/repos/{self.owner}/{self.repo}/actions/runs/{run_id}",
                   "html_url": f"https://github.com/{self.owner}/{self.repo}/actions/runs/{run_id}"}  # fmt: skip
            self.runs.append(run)
            self.dispatches.append({"workflow": wf["path"], "ref": branch, "inputs": dict(inputs)})
            return run

    def _list_runs(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        wf = self._workflow(req)
        if wf is None:
            return _error(404, "Not Found", f"{DOCS}/actions/workflow-runs#list-workflow-runs-for-a-workflow")
        runs = [r for r in self.runs if r["workflow_id"] == wf["id"]]
        if branch := req.arg("branch"):
            runs = [r for r in runs if r["head_branch"] == branch]
        if event := req.arg("event"):
            runs = [r for r in runs if r["event"] == event]
        created = req.arg("created") or ""
        if created.startswith(">="):
            runs = [r for r in runs if r["created_at"] >= created[2:]]
        runs.sort(key=lambda r: r["id"], reverse=True)
        return Reply(200, {"total_count": len(runs), "workflow_runs": runs[: int(req.arg("per_page") or 30)]})

    def _get_release(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        assert req.match is not None
        release = self.releases.get(unquote(req.match["tag"]))
        if release is None:
            return _error(404, "Not Found", f"{DOCS}/releases/releases#get-a-release-by-tag-name")
        return Reply(200, release)

    def _create_release(self, req: Request) -> Reply:
        problem = self._repo(req)
        if problem is not None:
            return problem
        body = self._json_object(req)
        if isinstance(body, Reply):
            return body
        tag = body.get("tag_name")
        if not isinstance(tag, str) or not tag:
            return self.server.reject(req, "tag_name is required")
        doc = f"{DOCS}/releases/releases#create-a-release"
        with self._lock:
            if tag in self.releases:
                return _error(
                    422, "Validation Failed", doc, errors=[{"resource": "Release", "code": "already_exists", "field": "tag_name"}]
                )
            if f"tags/{tag}" not in self.refs:
                target = body.get("target_commitish") or "main"
                sha = target if target in self.commits else self.refs.get(f"heads/{target}")
                if sha is None:
                    return _error(
                        422, "Validation Failed", doc, errors=[{"resource": "Release", "code": "invalid", "field": "target_commitish"}]
                    )
                self.refs[f"tags/{tag}"] = sha
            release_id = next(self._ids)
            notes = body.get("body") or ""
            if body.get("generate_release_notes"):
                notes = (notes + "\n\n" if notes else "") + "## What's Changed\n* Generated notes\n"
            now = _iso(datetime.now(UTC))
            release = {"id": release_id, "node_id": f"RE_{release_id}", "tag_name": tag, "name": body.get("name") or tag,
                       "target_commitish": body.get("target_commitish") or "main", "body": notes, "draft": bool(body.get("draft")),
                       "prerelease": bool(body.get("prerelease")), "created_at": now, "published_at": now, "assets": [],
                       "url": f"https://api.github.com/repos/{self.owner}/{self.repo}/releases/{release_id}",
                       "html_url": f"https://github.com/{self.owner}/{self.repo}/releases/tag/{tag}"}  # fmt: skip
            self.releases[tag] = release
            return Reply(201, release)
