"""A fake Google Play Developer Publishing API v3 (androidpublisher): edits and their tracks.

References:
  https://developers.google.com/android-publisher/api-ref/rest/v3/edits.tracks  (Track, TrackRelease)
  https://developers.google.com/android-publisher/tracks  (tracks, staged rollouts, halting)
  https://developers.google.com/android-publisher/edits   (the edit workflow)

Every request is checked against the discovery document google-api-python-client ships
(androidpublisher.v3.json, loaded here at test time): the HTTP method and path template, the
required and known parameters with their types, and the request body against its schema (unknown
fields, wrong types, output-only fields, enum values). On top of the schema, the rules the
documentation states for a release: status set; userFraction only for inProgress (required) or
halted, strictly between 0 and 1; no userFraction on a completed or draft release; versionCodes
int64 strings; inAppUpdatePriority 0..5 and not changed once the release is rolled out;
countryTargeting only on a staged production release. A request that breaks these is answered 400
and recorded in `violations` (the client broke the contract).

Play's state, kept as Play keeps it:
  - apps by package name, each with its tracks (production, beta, alpha, internal and closed
    tracks), the version codes uploaded to its library, and the service accounts with access;
  - edits: an id and an expiry; each reads and changes its own copy of the app's tracks; commit
    applies the copy atomically. An edit cannot be used after it is committed ("This edit has
    already been successfully committed, please create a new Edit.") nor after it was deleted,
    expired or another edit of the app was committed ("This Edit has been deleted.", which Play
    answers with 400 FAILED_PRECONDITION; older answers were 410 editDeleted);
  - a completed release "will have no further changes" but a halt (and the undoing of that halt);
  - a track update names the releases it changes (Track.releases "represents desired changes"):
    a staged (inProgress or halted) release joins the completed one that serves everyone else; a
    new completed release supersedes the previous completed one; halting a completed release brings
    the previous completed release back (Play serves the previous version again).

What Play refuses for the state it is in (a version code not in the library, halting a release that
is not out, unknown tracks and packages, no permission) is answered as Play answers, not recorded.
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import googleapiclient

from tests.fakes.google_oauth import GoogleOAuthFake
from tests.fakes.server import FakeServer, Reply, Request

DISCOVERY_PATH = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "androidpublisher.v3.json"
SCOPE = "https://www.googleapis.com/auth/androidpublisher"
STANDARD_TRACKS = ("production", "beta", "alpha", "internal")
STAGED = ("inProgress", "halted")
EDIT_DELETED = "This Edit has been deleted."
EDIT_COMMITTED = "This edit has already been successfully committed, please create a new Edit."
INT32 = (-(2**31), 2**31 - 1)


# ------------------------------------------------------------ the discovery document


@dataclass
class Method:
    id: str
    http_method: str
    pattern: re.Pattern[str]
    literal: int  # characters of the template outside {params}: the most specific template wins
    desc: dict[str, Any]


class Discovery:
    """Methods (by HTTP method and path template), parameters and schemas of a discovery document."""

    def __init__(self, path: Path = DISCOVERY_PATH) -> None:
        self.doc = json.loads(path.read_text(encoding="utf-8"))
        self.schemas: dict[str, Any] = self.doc["schemas"]
        self.methods = sorted(self._walk(self.doc.get("resources", {})), key=lambda m: -m.literal)

    def _walk(self, resources: dict[str, Any]) -> list[Method]:
        found = []
        for resource in resources.values():
            for desc in resource.get("methods", {}).values():
                template = "/" + self.doc["servicePath"] + desc["path"]
                pieces = re.split(r"\{(\+?)(\w+)\}", template)
                regex = "".join(re.escape(p) if i % 3 == 0 else "" if i % 3 == 1 else f"(?P<{p}>[^/]+?)" for i, p in enumerate(pieces))
                literal = sum(len(p) for i, p in enumerate(pieces) if i % 3 == 0)
                found.append(Method(desc["id"], desc["httpMethod"], re.compile(regex), literal, desc))
            found += self._walk(resource.get("resources", {}))
        return found

    def match(self, http_method: str, path: str) -> tuple[Method, dict[str, str]] | None:
        for method in self.methods:
            m = method.pattern.fullmatch(path)
            if m and method.http_method == http_method:
                return method, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    def query_problems(self, method: Method, query: dict[str, list[str]]) -> list[str]:
        params = {k: v for k, v in method.desc.get("parameters", {}).items() if v["location"] == "query"}
        known = params | self.doc.get("parameters", {})
        problems = [f"query parameter {name} is required" for name, p in params.items() if p.get("required") and name not in query]
        for name, values in query.items():
            if name not in known:
                problems.append(f"unknown query parameter {name}")
                continue
            problems += [f"query parameter {name}: {p}" for v in values for p in self._scalar_problems(v, known[name], query=True)]
        return problems

    def body_problems(self, value: Any, schema: dict[str, Any], where: str) -> list[str]:
        """What in `value` does not fit `schema` (a schema, a property, or a {"$ref": ...}) in a request."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                return [f"{where}: expected an object ({schema.get('id', 'object')}), got {type(value).__name__}"]
            return self._object_problems(value, schema, where)
        if kind == "array":
            if not isinstance(value, list):
                return [f"{where}: expected an array, got {type(value).__name__}"]
            return [p for i, item in enumerate(value) for p in self.body_problems(item, schema["items"], f"{where}[{i}]")]
        return [f"{where}: {p}" for p in self._scalar_problems(value, schema)]

    def _object_problems(self, value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        problems = []
        for key, item in value.items():
            if key in props:
                if props[key].get("readOnly"):
                    problems.append(f"{where}.{key}: output only, not to be sent")
                problems += self.body_problems(item, props[key], f"{where}.{key}")
            elif extra:
                problems += self.body_problems(item, extra, f"{where}.{key}")
            else:
                problems.append(f"{where}.{key}: no such field in {schema.get('id', 'the object')}")
        return problems

    @staticmethod
    def _scalar_problems(value: Any, schema: dict[str, Any], *, query: bool = False) -> list[str]:
        kind, fmt = schema.get("type"), schema.get("format")
        if value is None:
            return [f"null is not a {kind}"]
        if query and kind in ("boolean", "integer"):
            ok = value in ("true", "false") if kind == "boolean" else re.fullmatch(r"-?\d+", value) is not None
            return [] if ok else [f"{value!r} is not a {kind}"]
        if kind == "string":
            if not isinstance(value, str):
                return [f"expected a string, got {type(value).__name__} {value!r}"]
            if fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
                return [f"{value!r} is not an {fmt} (a string of digits)"]
            if "enum" in schema and value not in schema["enum"]:
                return [f"{value!r} is not one of {schema['enum']}"]
            return []
        if kind == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                return [f"expected an integer, got {type(value).__name__} {value!r}"]
            return [] if fmt != "int32" or INT32[0] <= value <= INT32[1] else [f"{value} is out of int32 range"]
        if kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            return [] if ok else [f"expected a number, got {type(value).__name__} {value!r}"]
        if kind == "boolean":
            return [] if isinstance(value, bool) else [f"expected a boolean, got {type(value).__name__} {value!r}"]
        return []


# ------------------------------------------------------------ Play's state


@dataclass
class App:
    package: str
    tracks: dict[str, list[dict[str, Any]]]  # committed: track -> releases, as tracks.get shows them
    previous: dict[str, list[dict[str, Any]]]  # per track, completed releases superseded (newest last)
    bundles: set[str]  # version codes uploaded to the app's library
    users: set[str]  # service accounts with release permission
    generation: int = 0  # commits so far: an edit opened before the last commit is gone


@dataclass
class Edit:
    id: str
    package: str
    expires_at: float
    generation: int
    tracks: dict[str, list[dict[str, Any]]]
    previous: dict[str, list[dict[str, Any]]]
    state: str = "open"  # open, committed, deleted
    updates: list[dict[str, Any]] = field(default_factory=list)  # the Track bodies sent to it


def google_error(code: int, status: str, message: str, reason: str = "badRequest", headers: dict[str, str] | None = None) -> Reply:
    """Google's JSON error format (https://cloud.google.com/apis/design/errors#http_mapping)."""
    errors = [{"message": message, "domain": "global", "reason": reason}]
    return Reply(code, {"error": {"code": code, "message": message, "errors": errors, "status": status}}, headers or {})


def _codes(release: dict[str, Any]) -> set[str]:
    return {str(c) for c in release.get("versionCodes", [])}


# ------------------------------------------------------------ the fake


class PlayFake:
    """The androidpublisher v3 edits API on a FakeServer, authorised by tokens of `oauth`."""

    def __init__(self, server: FakeServer, oauth: GoogleOAuthFake, discovery: Discovery | None = None) -> None:
        self.server, self.oauth = server, oauth
        self.discovery = discovery or Discovery()
        self.apps: dict[str, App] = {}
        self.edits: dict[str, Edit] = {}
        self.commits: list[Edit] = []
        self.edit_ttl_s = 3600.0
        self.before_commit: Callable[[Edit], None] | None = None  # e.g. someone commits in the Play Console first
        self.handlers: dict[str, Callable[[Request, Method, dict[str, str]], Reply]] = {
            "androidpublisher.edits.insert": self._insert,
            "androidpublisher.edits.get": lambda r, m, p: self._edit_reply(self._edit(p)),
            "androidpublisher.edits.delete": self._delete,
            "androidpublisher.edits.validate": lambda r, m, p: self._edit_reply(self._edit(p)),
            "androidpublisher.edits.commit": self._commit,
            "androidpublisher.edits.tracks.get": self._get_track,
            "androidpublisher.edits.tracks.list": self._list_tracks,
            "androidpublisher.edits.tracks.update": self._update_track,
            "androidpublisher.edits.tracks.patch": self._update_track,
        }
        for verb in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            server.route(verb, r"/androidpublisher/v3/.*", self._serve)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def violations(self) -> list[str]:
        return self.server.violations

    # ------------------------------------------------------------ set-up and inspection

    def app(self, package: str, *, users: tuple[str, ...], bundles: tuple[str, ...] = (), closed_tracks: tuple[str, ...] = ()) -> App:
        tracks: dict[str, list[dict[str, Any]]] = {name: [] for name in (*STANDARD_TRACKS, *closed_tracks)}
        self.apps[package] = App(package, tracks, {}, set(bundles), set(users))
        return self.apps[package]

    def seed(self, package: str, track: str, releases: list[dict[str, Any]]) -> None:
        """Committed state as if made earlier (in the Play Console): no request, no check."""
        app = self.apps[package]
        app.tracks[track] = copy.deepcopy(releases)
        app.bundles |= {c for r in releases for c in _codes(r)}
        app.generation += 1

    def track(self, package: str, track: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.apps[package].tracks[track])

    def open_edits(self) -> list[Edit]:
        """Edits neither committed nor deleted (expired ones included): a client should leave none."""
        return [e for e in self.edits.values() if e.state == "open"]

    # ------------------------------------------------------------ serving

    def _serve(self, req: Request) -> Reply:
        found = self.discovery.match(req.method, req.path)
        if found is None:
            return self.server.reject(req, "no such method in the androidpublisher v3 discovery document")
        method, params = found
        denied = self._authorise(req, params.get("packageName", ""))
        if denied is not None:
            return denied
        problems = self.discovery.query_problems(method, req.query) + self._body_problems(req, method)
        if problems:
            return self.server.reject(req, f"{method.id}: " + "; ".join(problems))
        handler = self.handlers.get(method.id)
        if handler is None:
            return self.server.reject(req, f"{method.id} is in the API but not modelled by this fake")
        try:
            return handler(req, method, params)
        except _Refusal as refusal:
            return refusal.reply

    def _body_problems(self, req: Request, method: Method) -> list[str]:
        if not req.body:
            return []
        if "request" not in method.desc:
            return ["this method takes no request body"]
        if not req.headers.get("content-type", "").startswith("application/json"):
            return ["the request body must be application/json"]
        try:
            body = json.loads(req.body)
        except ValueError:
            return ["the request body is not JSON"]
        return self.discovery.body_problems(body, method.desc["request"], method.desc["request"]["$ref"])

    def _authorise(self, req: Request, package: str) -> Reply | None:
        header = req.headers.get("authorization", "")
        token = self.oauth.token_info(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if token is None:
            message = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                       "other valid authentication credential.")  # fmt: skip
            return google_error(
                401, "UNAUTHENTICATED", message, "authError", {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
            )
        if SCOPE not in token.scopes:
            return google_error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", "insufficientPermissions")
        app = self.apps.get(package)
        if app is None:
            return google_error(404, "NOT_FOUND", f"Package not found: {package}.", "notFound")
        if token.email not in app.users:
            return google_error(403, "PERMISSION_DENIED", "The caller does not have permission", "forbidden")
        return None

    # ------------------------------------------------------------ edits

    def _insert(self, req: Request, method: Method, params: dict[str, str]) -> Reply:
        app = self.apps[params["packageName"]]
        edit = Edit(str(secrets.randbelow(10**20)).zfill(20), app.package, time.time() + self.edit_ttl_s, app.generation,
                    copy.deepcopy(app.tracks), copy.deepcopy(app.previous))  # fmt: skip
        self.edits[edit.id] = edit
        return self._edit_reply(edit)

    def _edit_reply(self, edit: Edit) -> Reply:
        return Reply(200, {"id": edit.id, "expiryTimeSeconds": str(int(edit.expires_at))})

    def _edit(self, params: dict[str, str]) -> Edit:
        """The edit of the request if it can still be used; a refusal as Play answers otherwise."""
        edit = self.edits.get(params["editId"])
        if edit is None or edit.package != params["packageName"]:
            raise _Refusal(google_error(404, "NOT_FOUND", "Edit not found.", "notFound"))
        if edit.state == "committed":
            raise _Refusal(google_error(400, "FAILED_PRECONDITION", EDIT_COMMITTED, "editAlreadyCommitted"))
        stale = edit.generation != self.apps[edit.package].generation
        if edit.state == "deleted" or stale or time.time() > edit.expires_at:
            raise _Refusal(google_error(400, "FAILED_PRECONDITION", EDIT_DELETED, "editDeleted"))
        return edit

    def _delete(self, req: Request, method: Method, params: dict[str, str]) -> Reply:
        self._edit(params).state = "deleted"
        return Reply(204, None)

    def _commit(self, req: Request, method: Method, params: dict[str, str]) -> Reply:
        edit = self._edit(params)
        if self.before_commit is not None:
            hook, self.before_commit = self.before_commit, None
            hook(edit)
            edit = self._edit(params)
        app = self.apps[edit.package]
        app.tracks, app.previous = copy.deepcopy(edit.tracks), copy.deepcopy(edit.previous)
        app.generation += 1
        edit.state = "committed"
        self.commits.append(edit)
        return self._edit_reply(edit)

    # ------------------------------------------------------------ tracks

    def _track_json(self, name: str, releases: list[dict[str, Any]]) -> dict[str, Any]:
        return {"track": name, "releases": copy.deepcopy(releases)} if releases else {"track": name}

    def _get_track(self, req: Request, method: Method, params: dict[str, str]) -> Reply:
        edit = self._edit(params)
        if params["track"] not in edit.tracks:
            return google_error(404, "NOT_FOUND", f"Track not found: {params['track']}.", "notFound")
        return Reply(200, self._track_json(params["track"], edit.tracks[params["track"]]))

    def _list_tracks(self, req: Request, method: Method, params: dict[str, str]) -> Reply:
        edit = self._edit(params)
        tracks = [self._track_json(name, releases) for name, releases in edit.tracks.items()]
        return Reply(200, {"kind": "androidpublisher#tracksListResponse", "tracks": tracks})

    def _update_track(self, req: Request, method: Method, params: dict[str, str]) -> Reply:
        edit, name, body = self._edit(params), params["track"], req.json() or {}
        if name not in edit.tracks:
            return google_error(404, "NOT_FOUND", f"Track not found: {name}.", "notFound")
        problems = _track_problems(name, body)
        if problems:
            return self.server.reject(req, "; ".join(problems))
        submitted = [dict(r, versionCodes=[str(c) for c in r["versionCodes"]]) for r in body["releases"]]
        for release in submitted:
            refused = self._release_refusal(req, edit, name, release)
            if refused is not None:
                return refused
        releases, superseded = _merge(edit.tracks[name], submitted, edit.previous.get(name, []))
        if sum(r["status"] == "completed" for r in releases) > 1 or sum(r["status"] in STAGED for r in releases) > 1:
            return google_error(400, "INVALID_ARGUMENT", "A track can hold one completed release and one staged rollout.")
        edit.tracks[name], edit.previous[name] = releases, superseded
        edit.updates.append(copy.deepcopy(body))
        return Reply(200, self._track_json(name, releases))

    def _release_refusal(self, req: Request, edit: Edit, track: str, release: dict[str, Any]) -> Reply | None:
        """What Play refuses for this release given the track's state (and keeps what is fixed)."""
        app = self.apps[edit.package]
        unknown = sorted(_codes(release) - app.bundles)
        if unknown:
            return google_error(400, "INVALID_ARGUMENT", f"Version code {', '.join(unknown)} not found: upload the bundle first.")
        existing = next((r for r in edit.tracks[track] if _codes(r) & _codes(release)), None)
        if existing is not None and existing["status"] == "completed" and release["status"] not in ("completed", "halted"):
            return google_error(400, "FAILED_PRECONDITION", "A completed release will have no further changes; it can only be halted.")
        out = existing is not None and existing["status"] in (*STAGED, "completed")
        if release["status"] == "halted" and not out:
            return google_error(400, "FAILED_PRECONDITION", "Only a release that is rolled out can be halted.")
        if out and existing is not None:
            fixed = existing.get("inAppUpdatePriority", 0)
            if release.get("inAppUpdatePriority", fixed) != fixed:
                return self.server.reject(req, "inAppUpdatePriority can not be updated once the release is rolled out")
            if "inAppUpdatePriority" in existing:
                release["inAppUpdatePriority"] = fixed
            release["_was"] = existing["status"]
        return None


class _Refusal(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def _track_problems(name: str, body: dict[str, Any]) -> list[str]:
    """The documented rules for a Track update beyond the schema's types."""
    problems = [f"Track.track is {body['track']!r} but the path names {name!r}"] if body.get("track", name) != name else []
    releases = body.get("releases")
    if not releases:
        return [*problems, "Track.releases: the releases to change are required"]
    seen: set[str] = set()
    for i, release in enumerate(releases):
        problems += [f"releases[{i}]: {p}" for p in _release_problems(name, release)]
        if seen & _codes(release):
            problems.append(f"releases[{i}]: version codes {sorted(seen & _codes(release))} are in two releases")
        seen |= _codes(release)
    return problems


def _release_problems(track: str, release: dict[str, Any]) -> list[str]:
    status, fraction = release.get("status"), release.get("userFraction")
    problems = []
    if status in (None, "statusUnspecified"):
        problems.append("status is required")
    if not release.get("versionCodes"):
        problems.append("versionCodes is required")
    if status == "inProgress" and fraction is None:
        problems.append("an inProgress release needs a userFraction")
    if fraction is not None and status not in STAGED:
        problems.append(f"userFraction can only be set when status is inProgress or halted, not {status}")
    if fraction is not None and not 0 < fraction < 1:
        problems.append(f"userFraction must be strictly between 0 and 1, not {fraction}")
    if not 0 <= release.get("inAppUpdatePriority", 0) <= 5:
        problems.append("inAppUpdatePriority must be in [0, 5]")
    if "countryTargeting" in release and (status != "inProgress" or track != "production"):
        problems.append("countryTargeting is only allowed on an inProgress release of the production track")
    notes = release.get("releaseNotes", [])
    if any(not n.get("language") or not n.get("text") for n in notes):
        problems.append("each releaseNotes entry needs a language and a text")
    if len({n.get("language") for n in notes}) != len(notes):
        problems.append("releaseNotes has a language twice")
    return problems


def _merge(current: list[dict[str, Any]], submitted: list[dict[str, Any]],
           previous: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """The track after an update naming `submitted`, and the superseded completed releases."""
    previous = copy.deepcopy(previous)
    touched = {c for r in submitted for c in _codes(r)}
    completed_sent = any(r["status"] == "completed" for r in submitted)
    staged_sent = any(r["status"] in STAGED for r in submitted)
    releases = [{k: v for k, v in r.items() if k != "_was"} for r in submitted]
    for release in current:
        if _codes(release) & touched:
            continue
        if release["status"] == "completed" and completed_sent:
            previous.append(release)  # superseded by the new completed release
        elif release["status"] == "draft" or release["status"] == "completed" or not (completed_sent or staged_sent):
            releases.append(release)
    halted_completed = any(r["status"] == "halted" and r.get("_was") == "completed" for r in submitted)
    if halted_completed and previous and not any(r["status"] == "completed" for r in releases):
        releases.append(previous.pop())  # Play serves the previous version again
    releases.sort(key=lambda r: -max((int(c) for c in _codes(r)), default=0))
    return releases, previous
