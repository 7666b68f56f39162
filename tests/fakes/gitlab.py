"""GitLab REST API (v4) contract fake: one project with branches, tags, releases and pipelines.

Shapes and answers follow GitLab's documentation and its API source (lib/api/*.rb):
  - https://docs.gitlab.com/api/rest/#namespaced-paths        project paths and ref names URL-encoded
  - https://docs.gitlab.com/api/rest/authentication/          PRIVATE-TOKEN header; 401 "401 Unauthorized"
  - https://docs.gitlab.com/api/projects/#get-a-single-project  permissions.project_access.access_level
  - https://docs.gitlab.com/api/branches/#get-single-repository-branch     404 "404 Branch Not Found"
  - https://docs.gitlab.com/api/branches/#create-repository-branch         branch, ref; 201;
        400 "Branch already exists" (lib/api/branches.rb renders the service's message with 400)
  - https://docs.gitlab.com/api/pipelines/#create-a-new-pipeline           {ref, variables: [{key, value}]}; 201;
        400 {"message": {"base": ["Reference not found"]}}
  - https://docs.gitlab.com/api/tags/#get-a-single-repository-tag / #create-a-new-tag   tag_name, ref;
        400 "Tag v1 already exists" (lib/api/tags.rb)
  - https://docs.gitlab.com/api/releases/#get-a-release-by-a-tag-name / #create-a-release   409 "Release already exists"
  - https://docs.gitlab.com/security/rate_limits/    429 "Retry later" with Retry-After and RateLimit-* headers

Contract checks (server.reject): no PRIVATE-TOKEN header (an Authorization header instead), a
project path or ref name not URL-encoded (no route matches), a missing branch/ref/tag_name, a
variables field that is not an array of {key, value}.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Reply, Request

API = r"/api/v4/projects/(?P<pid>[^/]+)"


def sha_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class GitLabFake:
    """Routes for one project on `server`; state is public for tests to arrange and inspect."""

    def __init__(self, server: FakeServer, path: str = "acme/mobile/app", project_id: int = 4242, token: str = "glpat-fake0001"):
        self.server, self.path, self.project_id, self.tokens = server, path, project_id, {token}
        self.web = f"https://gitlab.example.com/{path}"
        self.access_level = 30  # developer
        self.commits: set[str] = {sha_of("main")}
        self.branches: dict[str, str] = {"main": sha_of("main")}
        self.tags: dict[str, dict[str, Any]] = {}
        self.releases: dict[str, dict[str, Any]] = {}
        self.pipelines: list[dict[str, Any]] = []
        self.created: list[str] = []  # "branch:x", "tag:x", "release:x", in order
        self._ids = itertools.count(880001)
        self._lock = threading.Lock()
        s, p = server, API
        s.route("GET", p, self._project)
        s.route("GET", p + r"/repository/branches/(?P<name>[^/]+)", self._get_branch)
        s.route("POST", p + r"/repository/branches", self._create_branch)
        s.route("POST", p + r"/pipeline", self._create_pipeline)
        s.route("GET", p + r"/repository/tags/(?P<name>[^/]+)", self._get_tag)
        s.route("POST", p + r"/repository/tags", self._create_tag)
        s.route("GET", p + r"/releases/(?P<name>[^/]+)", self._get_release)
        s.route("POST", p + r"/releases", self._create_release)

    def add_commit(self, name: str) -> str:
        self.commits.add(sha_of(name))
        return sha_of(name)

    def pipeline_hook(self, template: dict[str, Any], pipeline: dict[str, Any], status: str = "success") -> dict[str, Any]:
        """A Pipeline Hook body for `pipeline`: a real captured hook (`template`) with this pipeline's fields."""
        body = copy.deepcopy(template)
        body["object_attributes"].update({"id": pipeline["id"], "iid": pipeline["iid"], "ref": pipeline["ref"], "sha": pipeline["sha"],
                                          "status": status, "source": "api", "variables": pipeline["variables"]})  # fmt: skip
        body["project"].update({"id": self.project_id, "path_with_namespace": self.path, "web_url": self.web})
        return body

    # ------------------------------------------------------------ checks

    def _check(self, req: Request) -> Reply | None:
        token = req.headers.get("private-token")
        if token is None:
            return self.server.reject(req, "authenticate with the PRIVATE-TOKEN header")
        if token not in self.tokens:
            return Reply(401, {"message": "401 Unauthorized"})
        assert req.match is not None
        pid = unquote(req.match["pid"])
        if pid not in (str(self.project_id), self.path):
            return Reply(404, {"message": "404 Project Not Found"})
        return None

    def _params(self, req: Request) -> dict[str, Any]:
        """Grape takes parameters from the query string or a JSON body alike."""
        params: dict[str, Any] = {k: v[0] for k, v in req.query.items()}
        if req.body:
            body = req.json()
            if isinstance(body, dict):
                params.update(body)
        return params

    def _resolve(self, ref: str) -> str | None:
        if ref in self.commits:
            return ref
        return self.branches.get(ref) or (self.tags[ref]["commit"] if ref in self.tags else None)

    def _commit(self, sha: str) -> dict[str, Any]:
        return {"id": sha, "short_id": sha[:8], "title": "Bump version", "message": "Bump version\n", "parent_ids": [],
                "created_at": "2026-11-20T10:00:00.000+00:00", "web_url": f"{self.web}/-/commit/{sha}"}  # fmt: skip

    # ------------------------------------------------------------ routes

    def _project(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        return Reply(200, {"id": self.project_id, "name": self.path.rsplit("/", 1)[-1], "path_with_namespace": self.path,
                           "default_branch": "main", "web_url": self.web,
                           "permissions": {"project_access": {"access_level": self.access_level, "notification_level": 3},
                                           "group_access": None}})  # fmt: skip

    def _branch(self, name: str) -> dict[str, Any]:
        return {"name": name, "merged": False, "protected": name == "main", "default": name == "main", "developers_can_push": False,
                "developers_can_merge": False, "can_push": True, "web_url": f"{self.web}/-/tree/{name}",
                "commit": self._commit(self.branches[name])}  # fmt: skip

    def _get_branch(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        assert req.match is not None
        name = unquote(req.match["name"])
        if name not in self.branches:
            return Reply(404, {"message": "404 Branch Not Found"})
        return Reply(200, self._branch(name))

    def _create_branch(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        params = self._params(req)
        name, ref = params.get("branch"), params.get("ref")
        if not name or not ref:
            return self.server.reject(req, "branch and ref are required")
        with self._lock:
            sha = self._resolve(ref)
            if sha is None:
                return Reply(400, {"message": "Invalid reference name: " + ref})
            if name in self.branches:
                return Reply(400, {"message": "Branch already exists"})
            self.branches[name] = sha
            self.created.append(f"branch:{name}")
            return Reply(201, self._branch(name))

    def _create_pipeline(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        body = req.json() if req.body else {}
        ref, variables = body.get("ref"), body.get("variables", [])
        if not ref:
            return self.server.reject(req, "ref is required")
        if not isinstance(variables, list) or not all(isinstance(v, dict) and {"key", "value"} <= set(v) for v in variables):
            return self.server.reject(req, "variables must be an array of {key, value} objects")
        with self._lock:
            sha = self._resolve(ref)
            if sha is None:
                return Reply(400, {"message": {"base": ["Reference not found"]}})
            pid = next(self._ids)
            pipeline = {"id": pid, "iid": len(self.pipelines) + 1, "project_id": self.project_id, "sha": sha, "ref": ref,
                        "status": "created", "source": "api", "created_at": _now(), "updated_at": _now(),
                        "web_url": f"{self.web}/-/pipelines/{pid}",
                        "variables": [{"key": v["key"], "value": v["value"]} for v in variables]}  # fmt: skip
            self.pipelines.append(pipeline)
            return Reply(201, {k: v for k, v in pipeline.items() if k != "variables"})

    def _tag(self, name: str) -> dict[str, Any]:
        tag = self.tags[name]
        release = self.releases.get(name)
        return {"name": name, "message": tag["message"], "target": tag["target"], "commit": self._commit(tag["commit"]),
                "release": {"tag_name": name, "description": release["description"]} if release else None,
                "protected": False, "created_at": None}  # fmt: skip

    def _get_tag(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        assert req.match is not None
        name = unquote(req.match["name"])
        if name not in self.tags:
            return Reply(404, {"message": "404 Tag Not Found"})
        return Reply(200, self._tag(name))

    def _create_tag(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        params = self._params(req)
        name, ref = params.get("tag_name"), params.get("ref")
        if not name or not ref:
            return self.server.reject(req, "tag_name and ref are required")
        with self._lock:
            sha = self._resolve(ref)
            if sha is None:
                return Reply(400, {"message": "Target " + ref + " is invalid"})
            if name in self.tags:
                return Reply(400, {"message": f"Tag {name} already exists"})
            self.tags[name] = {"target": sha, "commit": sha, "message": None}
            self.created.append(f"tag:{name}")
            return Reply(201, self._tag(name))

    def _get_release(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        assert req.match is not None
        release = self.releases.get(unquote(req.match["name"]))
        return Reply(200, release) if release else Reply(404, {"message": "404 Not Found"})

    def _create_release(self, req: Request) -> Reply:
        problem = self._check(req)
        if problem is not None:
            return problem
        params = self._params(req)
        tag = params.get("tag_name")
        if not tag:
            return self.server.reject(req, "tag_name is required")
        with self._lock:
            if tag in self.releases:
                return Reply(409, {"message": "Release already exists"})
            if tag not in self.tags:
                sha = self._resolve(params.get("ref") or "")
                if sha is None:
                    return Reply(422, {"message": "Ref is not specified"})
                self.tags[tag] = {"target": sha, "commit": sha, "message": None}
            release = {"tag_name": tag, "name": params.get("name") or tag, "description": params.get("description"),
                       "created_at": _now(), "released_at": _now(), "upcoming_release": False,
                       "commit": self._commit(self.tags[tag]["commit"]),
                       "_links": {"self": f"{self.web}/-/releases/{tag}"}}  # fmt: skip
            self.releases[tag] = release
            self.created.append(f"release:{tag}")
            return Reply(201, release)
