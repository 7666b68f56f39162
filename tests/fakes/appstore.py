"""A fake App Store Connect API on FakeServer: apps, App Store versions, builds, TestFlight groups
and phased releases, checking every request the way the real API is documented to.

Modelled on Apple's App Store Connect API documentation (developer.apple.com/documentation/appstoreconnectapi/):
  generating-tokens-for-api-requests           ES256 JWT: header alg/kid/typ; claims iss, iat, exp (at most
                                               20 minutes after iat), aud "appstoreconnect-v1"
  app-store-version-phased-releases            POST /v1/appStoreVersionPhasedReleases, PATCH .../{id};
                                               "not available for the first version of an app"
  phasedreleasestate                           INACTIVE, ACTIVE, PAUSED, COMPLETE
  get-v1-appstoreversions-_id_-appstoreversionphasedrelease, get-v1-appstoreversions-_id_-build,
  get-v1-apps-_id_-appstoreversions, get-v1-apps-_id_, post-v1-appstoreversionreleaserequests,
  get-v1-betagroups, get-v1-builds, get-v1-betagroups-_id_-relationships-builds,
  post-v1-betagroups-_id_-relationships-builds (204 No Content)
  interpreting-and-handling-errors, parsing-the-error-response-code, about-the-http-status-code
                                               {"errors": [{"id", "status", "code", "title", "detail"}]}
  identifying-rate-limits                      X-Rate-Limit: user-hour-lim:3600;user-hour-rem:...;
and https://developer.apple.com/help/app-store-connect/update-your-app/release-a-version-update-in-phases
(seven days: 1, 2, 5, 10, 20, 50, 100%; pauses up to 30 days in all, then Apple resumes the release).
Request bodies, attribute names, enum values and query parameters are those of Apple's OpenAPI
specification (4.4.1): anything else is a contract violation (server.reject, answered 400).

Not documented by Apple, so chosen here: the error text when a first version gets a phased
release (409 ENTITY_ERROR), an absent to-one relationship answered {"data": null}, a PATCH to the
state the phased release already has answered as a no-op and counted in `redundant_writes` (as is
adding a build that is already in a group), and a bad token answered 401 NOT_AUTHORIZED and recorded
as a violation (the client signed it wrong).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from tests.fakes.server import FakeServer, Reply, Request

AUDIENCE = "appstoreconnect-v1"
MAX_TOKEN_S = 20 * 60
PLATFORMS = {"IOS", "MAC_OS", "TV_OS", "VISION_OS"}
PHASED_STATES = {"INACTIVE", "ACTIVE", "PAUSED", "COMPLETE"}
APP_STORE_STATES = {
    "ACCEPTED", "DEVELOPER_REMOVED_FROM_SALE", "DEVELOPER_REJECTED", "IN_REVIEW", "INVALID_BINARY", "METADATA_REJECTED",
    "PENDING_APPLE_RELEASE", "PENDING_CONTRACT", "PENDING_DEVELOPER_RELEASE", "PREPARE_FOR_SUBMISSION",
    "PREORDER_READY_FOR_SALE", "PROCESSING_FOR_APP_STORE", "READY_FOR_REVIEW", "READY_FOR_SALE", "REJECTED",
    "REMOVED_FROM_SALE", "WAITING_FOR_EXPORT_COMPLIANCE", "WAITING_FOR_REVIEW", "REPLACED_WITH_NEW_VERSION", "NOT_APPLICABLE",
}  # fmt: skip
APP_VERSION_STATES = {
    "ACCEPTED", "DEVELOPER_REJECTED", "IN_REVIEW", "INVALID_BINARY", "METADATA_REJECTED", "PENDING_APPLE_RELEASE",
    "PENDING_DEVELOPER_RELEASE", "PREPARE_FOR_SUBMISSION", "PROCESSING_FOR_DISTRIBUTION", "READY_FOR_DISTRIBUTION",
    "READY_FOR_REVIEW", "REJECTED", "REPLACED_WITH_NEW_VERSION", "WAITING_FOR_EXPORT_COMPLIANCE", "WAITING_FOR_REVIEW",
}  # fmt: skip
# appStoreState (deprecated by Apple) -> appVersionState, for the states the fake's versions take
VERSION_STATE = {"READY_FOR_SALE": "READY_FOR_DISTRIBUTION", "PROCESSING_FOR_APP_STORE": "PROCESSING_FOR_DISTRIBUTION"}
PROCESSING_STATES = {"PROCESSING", "FAILED", "INVALID", "VALID"}
LIST_QUERY = {"limit", "include", "sort"}


@dataclass
class App:
    id: str
    name: str
    bundle_id: str


@dataclass
class Version:
    id: str
    app_id: str
    version_string: str
    state: str  # appStoreState; appVersionState is derived from it
    platform: str = "IOS"
    build_id: str | None = None

    @property
    def app_version_state(self) -> str:
        return VERSION_STATE.get(self.state, self.state)


@dataclass
class Build:
    id: str
    app_id: str
    number: str  # the build's `version` attribute (CFBundleVersion)
    pre_release_version: str  # the marketing version it belongs to
    platform: str = "IOS"
    processing_state: str = "VALID"
    expired: bool = False


@dataclass
class Group:
    id: str
    app_id: str
    name: str
    internal: bool = False
    build_ids: list[str] = field(default_factory=list)


@dataclass
class Phased:
    id: str
    version_id: str
    state: str = "INACTIVE"
    day: int | None = None
    pause_days: int = 0
    start_date: str | None = None


def _id() -> str:
    return str(uuid.uuid4())


def error(status: int, code: str, title: str, detail: str) -> Reply:
    """An App Store Connect error answer (ErrorResponse)."""
    return Reply(status, {"errors": [{"id": _id(), "status": str(status), "code": code, "title": title, "detail": detail}]})


def not_found(kind: str, ident: str) -> Reply:
    return error(404, "NOT_FOUND", "The specified resource does not exist", f"There is no resource of type '{kind}' with id '{ident}'")


class FakeAppStoreConnect:
    """The fake API for one API key (key id, issuer id, the public half of its .p8 key)."""

    def __init__(self, server: FakeServer, *, public_key: Any, key_id: str, issuer_id: str,
                 clock: Callable[[], datetime] | None = None):  # fmt: skip
        self.server, self.public_key, self.key_id, self.issuer_id = server, public_key, key_id, issuer_id
        self.clock = clock or (lambda: datetime.now(UTC))
        self.apps: dict[str, App] = {}
        self.versions: dict[str, Version] = {}
        self.builds: dict[str, Build] = {}
        self.groups: dict[str, Group] = {}
        self.phased: dict[str, Phased] = {}  # by version id
        self.revoked: set[str] = set()  # key ids App Store Connect no longer accepts
        self.redundant_writes: list[str] = []  # writes that changed nothing: an idempotent client sends none
        self.requests_left = 3600
        self._routes()

    @property
    def violations(self) -> list[str]:
        return self.server.violations

    # ------------------------------------------------------------------ the world

    def add_app(self, app_id: str, name: str = "Acme", bundle_id: str = "com.acme.app") -> App:
        self.apps[app_id] = App(app_id, name, bundle_id)
        return self.apps[app_id]

    def add_build(self, app_id: str, number: str, version: str, **kw: Any) -> Build:
        b = Build(_id(), app_id, number, version, **kw)
        self.builds[b.id] = b
        return b

    def add_version(self, app_id: str, version_string: str, state: str, build: Build | None = None, platform: str = "IOS") -> Version:
        v = Version(_id(), app_id, version_string, state, platform, build.id if build else None)
        self.versions[v.id] = v
        return v

    def add_group(self, app_id: str, name: str, internal: bool = False, build_ids: list[str] | None = None) -> Group:
        g = Group(_id(), app_id, name, internal, list(build_ids or []))
        self.groups[g.id] = g
        return g

    def add_phased(self, version: Version, state: str = "INACTIVE", day: int | None = None, pause_days: int = 0) -> Phased:
        p = Phased(_id(), version.id, state, day, pause_days, self._now() if day else None)
        self.phased[version.id] = p
        return p

    def version(self, version_string: str, app_id: str | None = None) -> Version:
        return next(v for v in self.versions.values() if v.version_string == version_string and (app_id is None or v.app_id == app_id))

    def phased_of(self, version_string: str) -> Phased | None:
        return self.phased.get(self.version(version_string).id)

    def advance_days(self, days: int = 1) -> None:
        """Apple's calendar: an ACTIVE phased release moves a day (after day 7 it is COMPLETE); a PAUSED one
        adds a pause day, and after 30 days of pauses in all Apple resumes it."""
        for _ in range(days):
            for p in self.phased.values():
                if p.state == "ACTIVE":
                    if (p.day or 1) >= 7:
                        p.state = "COMPLETE"
                    else:
                        p.day = (p.day or 0) + 1
                elif p.state == "PAUSED":
                    p.pause_days += 1
                    if p.pause_days >= 30:
                        p.state = "ACTIVE"

    def _now(self) -> str:
        return self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # ------------------------------------------------------------------ checks

    def _routes(self) -> None:
        r, i = self.server.route, r"(?P<id>[^/]+)"
        r("GET", rf"/v1/apps/{i}", self._guard(self._get_app))
        r("GET", rf"/v1/apps/{i}/appStoreVersions", self._guard(self._list_versions))
        r("GET", rf"/v1/appStoreVersions/{i}/build", self._guard(self._version_build))
        r("GET", rf"/v1/appStoreVersions/{i}/appStoreVersionPhasedRelease", self._guard(self._version_phased))
        r("POST", r"/v1/appStoreVersionPhasedReleases", self._guard(self._create_phased))
        r("PATCH", rf"/v1/appStoreVersionPhasedReleases/{i}", self._guard(self._patch_phased))
        r("POST", r"/v1/appStoreVersionReleaseRequests", self._guard(self._release_request))
        r("GET", r"/v1/betaGroups", self._guard(self._list_groups))
        r("GET", r"/v1/builds", self._guard(self._list_builds))
        r("GET", rf"/v1/betaGroups/{i}/relationships/builds", self._guard(self._group_builds))
        r("POST", rf"/v1/betaGroups/{i}/relationships/builds", self._guard(self._add_group_builds))

    def _guard(self, handler: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
        """Every endpoint: the bearer token checked first; every answer carries X-Rate-Limit."""

        def guarded(req: Request) -> Reply:
            reply = self._authorize(req)
            if reply is None and req.body and not req.headers.get("content-type", "").startswith("application/json"):
                reply = self.server.reject(req, "a request body must be sent as application/json")
            if reply is None:
                reply = handler(req)
            self.requests_left = max(self.requests_left - 1, 0)
            reply.headers.setdefault("X-Rate-Limit", f"user-hour-lim:3600;user-hour-rem:{self.requests_left};")
            return reply

        return guarded

    def _authorize(self, req: Request) -> Reply | None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        problem = "no Bearer token in the Authorization header" if scheme != "Bearer" or not token else self._token_problem(token)
        if problem:
            self.violations.append(f"{req.method} {req.path}: JWT: {problem}")
            return error(401, "NOT_AUTHORIZED", "Authentication credentials are missing or invalid.",
                         "Provide a properly configured and signed bearer token, and make sure that it has not expired.")  # fmt: skip
        if self.key_id in self.revoked:
            return error(401, "NOT_AUTHORIZED", "Authentication credentials are missing or invalid.", "The API key has been revoked.")
        return None

    def _token_problem(self, token: str) -> str | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            return f"not a JWT ({exc})"
        if header.get("alg") != "ES256" or header.get("typ") != "JWT" or header.get("kid") != self.key_id:
            return f"header must be alg ES256, typ JWT, kid {self.key_id}: got {header}"
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"], audience=AUDIENCE, issuer=self.issuer_id,
                                options={"verify_exp": False, "verify_iat": False, "require": ["iss", "iat", "exp", "aud"]})  # fmt: skip
        except jwt.PyJWTError as exc:
            return f"{exc.__class__.__name__}: {exc}"
        now = self.clock().timestamp()
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "iat and exp must be integer seconds"
        if exp - iat > MAX_TOKEN_S:
            return f"exp is {exp - iat} s after iat; App Store Connect accepts at most {MAX_TOKEN_S}"
        if exp <= now:
            return f"expired {now - exp:.0f} s ago"
        if iat > now + 60:
            return "iat is in the future"
        return None

    def _query(self, req: Request, allowed: set[str], enums: dict[str, set[str]] | None = None) -> Reply | None:
        """Only the documented query parameters; enum filters take comma-separated documented values."""
        for name, values in req.query.items():
            if name not in allowed and not name.startswith("fields["):
                return self.server.reject(req, f"query parameter {name} is not one this endpoint takes")
            if len(values) != 1:
                return self.server.reject(req, f"query parameter {name} is given {len(values)} times")
            for value in values[0].split(","):
                if enums and name in enums and value not in enums[name]:
                    return self.server.reject(req, f"{name}={value} is not one of {sorted(enums[name])}")
            if name == "limit" and not (values[0].isdigit() and 1 <= int(values[0]) <= 200):
                return self.server.reject(req, f"limit={values[0]} must be 1..200")
        return None

    def _filter(self, req: Request, name: str) -> set[str] | None:
        value = req.arg(f"filter[{name}]")
        return None if value is None else set(value.split(","))

    def _body(self, req: Request, kind: str, keys: set[str], attributes: dict[str, set[str]],
              relationships: dict[str, str]) -> dict[str, Any] | Reply:  # fmt: skip
        """A JSON:API request document for one `kind` resource: {"data": {...}} with only the documented
        members, attribute names, enum values and relationships ({"data": {"type", "id"}})."""
        try:
            doc = req.json()
        except ValueError:
            return self.server.reject(req, "the body is not JSON")
        data = doc.get("data") if isinstance(doc, dict) and set(doc) == {"data"} else None
        if not isinstance(data, dict):
            return self.server.reject(req, 'the body must be {"data": {...}} and nothing else')
        if not set(data) <= keys or data.get("type") != kind:
            return self.server.reject(req, f"data takes {sorted(keys)} with type {kind!r}: got {sorted(data)}, type {data.get('type')!r}")
        attributes_given = data.get("attributes") or {}
        if not isinstance(attributes_given, dict):
            return self.server.reject(req, "data.attributes must be an object")
        for name, value in attributes_given.items():
            if name not in attributes:
                return self.server.reject(req, f"{kind} has no attribute {name!r} in this request")
            if value is not None and value not in attributes[name]:
                return self.server.reject(req, f"{name}={value!r} is not one of {sorted(attributes[name])}")
        rels = data.get("relationships") or {}
        if set(rels) != set(relationships):
            return self.server.reject(req, f"relationships must be {sorted(relationships)}: got {sorted(rels)}")
        for name, rel_type in relationships.items():
            linkage = rels[name].get("data") if isinstance(rels[name], dict) and set(rels[name]) == {"data"} else None
            if not isinstance(linkage, dict) or set(linkage) != {"type", "id"} or linkage["type"] != rel_type:
                return self.server.reject(req, f'relationships.{name} must be {{"data": {{"type": "{rel_type}", "id": ...}}}}')
        return data

    # ------------------------------------------------------------------ documents

    def _link(self, path: str) -> dict[str, str]:
        return {"self": f"{self.server.url}{path}"}

    def _app_doc(self, a: App) -> dict[str, Any]:
        attrs = {"name": a.name, "bundleId": a.bundle_id, "sku": a.bundle_id.upper(), "primaryLocale": "en-US"}
        return {"type": "apps", "id": a.id, "attributes": attrs, "links": self._link(f"/v1/apps/{a.id}")}

    def _version_doc(self, v: Version) -> dict[str, Any]:
        attrs = {"platform": v.platform, "versionString": v.version_string, "appStoreState": v.state,
                 "appVersionState": v.app_version_state, "releaseType": "MANUAL", "createdDate": "2026-11-20T10:00:00Z"}  # fmt: skip
        rels = {
            name: {"links": {"related": f"{self.server.url}/v1/appStoreVersions/{v.id}/{name}"}}
            for name in ("build", "appStoreVersionPhasedRelease")
        }
        return {
            "type": "appStoreVersions",
            "id": v.id,
            "attributes": attrs,
            "relationships": rels,
            "links": self._link(f"/v1/appStoreVersions/{v.id}"),
        }

    def _build_doc(self, b: Build) -> dict[str, Any]:
        attrs = {"version": b.number, "uploadedDate": "2026-11-20T09:00:00Z", "expired": b.expired, "minOsVersion": "16.0",
                 "processingState": b.processing_state, "buildAudienceType": "APP_STORE_ELIGIBLE"}  # fmt: skip
        return {"type": "builds", "id": b.id, "attributes": attrs, "links": self._link(f"/v1/builds/{b.id}")}

    def _phased_doc(self, p: Phased) -> dict[str, Any]:
        attrs = {"phasedReleaseState": p.state, "startDate": p.start_date, "totalPauseDuration": p.pause_days, "currentDayNumber": p.day}
        return {
            "type": "appStoreVersionPhasedReleases",
            "id": p.id,
            "attributes": attrs,
            "links": self._link(f"/v1/appStoreVersionPhasedReleases/{p.id}"),
        }

    def _group_doc(self, g: Group) -> dict[str, Any]:
        attrs = {"name": g.name, "isInternalGroup": g.internal, "hasAccessToAllBuilds": False, "publicLinkEnabled": False}
        return {"type": "betaGroups", "id": g.id, "attributes": attrs, "links": self._link(f"/v1/betaGroups/{g.id}")}

    def _list(self, req: Request, items: list[dict[str, Any]]) -> Reply:
        limit = int(req.arg("limit") or 50)
        return Reply(200, {"data": items[:limit], "links": self._link(req.path), "meta": {"paging": {"total": len(items), "limit": limit}}})

    # ------------------------------------------------------------------ endpoints

    def _get_app(self, req: Request) -> Reply:
        app_id = req.match["id"] if req.match else ""
        bad = self._query(req, {"include"})
        if bad:
            return bad
        app = self.apps.get(app_id)
        return Reply(200, {"data": self._app_doc(app), "links": self._link(req.path)}) if app else not_found("apps", app_id)

    def _list_versions(self, req: Request) -> Reply:
        app_id = req.match["id"] if req.match else ""
        allowed = {f"filter[{n}]" for n in ("platform", "versionString", "appStoreState", "appVersionState", "id")} | LIST_QUERY
        enums = {"filter[platform]": PLATFORMS, "filter[appStoreState]": APP_STORE_STATES, "filter[appVersionState]": APP_VERSION_STATES}
        bad = self._query(req, allowed, enums)
        if bad:
            return bad
        if app_id not in self.apps:
            return not_found("apps", app_id)
        wanted = {n: self._filter(req, n) for n in ("platform", "versionString", "appStoreState", "appVersionState", "id")}
        found = [
            v for v in self.versions.values()
            if v.app_id == app_id and all(w is None or getattr(v, a) in w for w, a in (
                (wanted["platform"], "platform"), (wanted["versionString"], "version_string"), (wanted["appStoreState"], "state"),
                (wanted["appVersionState"], "app_version_state"), (wanted["id"], "id")))
        ]  # fmt: skip
        return self._list(req, [self._version_doc(v) for v in reversed(found)])

    def _version_build(self, req: Request) -> Reply:
        vid = req.match["id"] if req.match else ""
        bad = self._query(req, set())
        if bad:
            return bad
        v = self.versions.get(vid)
        if v is None:
            return not_found("appStoreVersions", vid)
        build = self.builds.get(v.build_id) if v.build_id else None
        return Reply(200, {"data": self._build_doc(build) if build else None, "links": self._link(req.path)})

    def _version_phased(self, req: Request) -> Reply:
        vid = req.match["id"] if req.match else ""
        bad = self._query(req, set())
        if bad:
            return bad
        if vid not in self.versions:
            return not_found("appStoreVersions", vid)
        p = self.phased.get(vid)
        return Reply(200, {"data": self._phased_doc(p) if p else None, "links": self._link(req.path)})

    def _create_phased(self, req: Request) -> Reply:
        data = self._body(req, "appStoreVersionPhasedReleases", {"type", "attributes", "relationships"},
                          {"phasedReleaseState": PHASED_STATES}, {"appStoreVersion": "appStoreVersions"})  # fmt: skip
        if isinstance(data, Reply):
            return data
        v = self.versions.get(data["relationships"]["appStoreVersion"]["data"]["id"])
        state = (data.get("attributes") or {}).get("phasedReleaseState") or "INACTIVE"
        if v is None:
            return error(409, "ENTITY_ERROR.RELATIONSHIP.INVALID", "The provided entity includes a relationship with an invalid value",
                         "The appStoreVersion does not exist")  # fmt: skip
        if v.id in self.phased:
            return error(
                409,
                "ENTITY_ERROR",
                "The request entity is not valid",
                "An appStoreVersionPhasedRelease already exists for this appStoreVersion",
            )
        on_sale = [
            o
            for o in self.versions.values()
            if o.app_id == v.app_id and o.platform == v.platform and o.id != v.id and o.state == "READY_FOR_SALE"
        ]
        if not on_sale:
            return error(
                409, "ENTITY_ERROR", "The request entity is not valid", "Phased release is not available for the first version of an app."
            )
        if v.state == "READY_FOR_SALE" or state not in ("INACTIVE", "ACTIVE"):
            return error(
                409,
                "STATE_ERROR",
                "The request cannot be fulfilled in the current state",
                f"A phased release cannot be created {state} now",
            )
        p = self.add_phased(v)
        return Reply(201, {"data": self._phased_doc(p), "links": self._link(f"/v1/appStoreVersionPhasedReleases/{p.id}")})

    def _patch_phased(self, req: Request) -> Reply:
        pid = req.match["id"] if req.match else ""
        data = self._body(req, "appStoreVersionPhasedReleases", {"type", "id", "attributes"}, {"phasedReleaseState": PHASED_STATES}, {})
        if isinstance(data, Reply):
            return data
        if data.get("id") != pid:
            return self.server.reject(req, f"data.id {data.get('id')!r} is not the id in the path {pid!r}")
        p = next((p for p in self.phased.values() if p.id == pid), None)
        if p is None:
            return not_found("appStoreVersionPhasedReleases", pid)
        target = (data.get("attributes") or {}).get("phasedReleaseState")
        problem = self._transition(p, target) if target else None
        if problem:
            return error(409, "STATE_ERROR", "The request cannot be fulfilled in the current state", problem)
        return Reply(200, {"data": self._phased_doc(p), "links": self._link(req.path)})

    def _transition(self, p: Phased, target: str) -> str | None:
        """Apply a PATCH of phasedReleaseState; the reason it is refused, or None."""
        released = self.versions[p.version_id].state == "READY_FOR_SALE"
        if target == p.state:
            self.redundant_writes.append(f"PATCH phased release {p.id} to {target}: already {target}")
            return None
        if p.state == "COMPLETE":
            return "The phased release is complete and can no longer be changed."
        if not released:
            return "The phased release has not started: the app store version is not released yet."
        if target == "INACTIVE":
            return "A started phased release cannot be made inactive."
        if target == "PAUSED" and (p.state != "ACTIVE" or p.pause_days >= 30):
            return (
                "The phased release cannot be paused: it has been paused for 30 days in total."
                if p.pause_days >= 30
                else "Only an active phased release can be paused."
            )
        if target == "ACTIVE" and p.day is None:
            p.day, p.start_date = 1, self._now()
        p.state = target
        return None

    def _release_request(self, req: Request) -> Reply:
        data = self._body(req, "appStoreVersionReleaseRequests", {"type", "relationships"}, {}, {"appStoreVersion": "appStoreVersions"})
        if isinstance(data, Reply):
            return data
        v = self.versions.get(data["relationships"]["appStoreVersion"]["data"]["id"])
        if v is None:
            return error(409, "ENTITY_ERROR.RELATIONSHIP.INVALID", "The provided entity includes a relationship with an invalid value",
                         "The appStoreVersion does not exist")  # fmt: skip
        if v.state != "PENDING_DEVELOPER_RELEASE":
            return error(409, "STATE_ERROR", "The request cannot be fulfilled in the current state",
                         f"The app store version is {v.state}; only a version pending developer release can be released")  # fmt: skip
        for other in self.versions.values():
            if other.app_id == v.app_id and other.platform == v.platform and other.state == "READY_FOR_SALE":
                other.state = "REPLACED_WITH_NEW_VERSION"
        v.state = "READY_FOR_SALE"
        p = self.phased.get(v.id)
        if p is not None and p.state == "INACTIVE":
            p.state, p.day, p.start_date = "ACTIVE", 1, self._now()
        rid = _id()
        doc = {"type": "appStoreVersionReleaseRequests", "id": rid, "links": self._link(f"/v1/appStoreVersionReleaseRequests/{rid}")}
        return Reply(201, {"data": doc, "links": self._link(f"/v1/appStoreVersionReleaseRequests/{rid}")})

    def _list_groups(self, req: Request) -> Reply:
        allowed = {f"filter[{n}]" for n in ("name", "isInternalGroup", "app", "id", "builds")} | LIST_QUERY
        bad = self._query(req, allowed, {"filter[isInternalGroup]": {"true", "false"}})
        if bad:
            return bad
        names, apps = self._filter(req, "name"), self._filter(req, "app")
        found = [g for g in self.groups.values() if (names is None or g.name in names) and (apps is None or g.app_id in apps)]
        return self._list(req, [self._group_doc(g) for g in found])

    def _list_builds(self, req: Request) -> Reply:
        names = ("app", "version", "preReleaseVersion.version", "preReleaseVersion.platform", "processingState", "expired", "id")
        allowed = {f"filter[{n}]" for n in names} | LIST_QUERY
        enums = {
            "filter[preReleaseVersion.platform]": PLATFORMS,
            "filter[processingState]": PROCESSING_STATES,
            "filter[expired]": {"true", "false"},
        }
        bad = self._query(req, allowed, enums)
        if bad:
            return bad
        w = {n: self._filter(req, n) for n in names}
        found = [
            b for b in self.builds.values()
            if all(w[n] is None or str(value) in (w[n] or ()) for n, value in (
                ("app", b.app_id), ("version", b.number), ("preReleaseVersion.version", b.pre_release_version),
                ("preReleaseVersion.platform", b.platform), ("processingState", b.processing_state),
                ("expired", str(b.expired).lower()), ("id", b.id)))
        ]  # fmt: skip
        return self._list(req, [self._build_doc(b) for b in found])

    def _group_builds(self, req: Request) -> Reply:
        gid = req.match["id"] if req.match else ""
        bad = self._query(req, {"limit", "cursor"})
        if bad:
            return bad
        g = self.groups.get(gid)
        if g is None:
            return not_found("betaGroups", gid)
        limit, start = int(req.arg("limit") or 50), int(req.arg("cursor") or 0)
        page = g.build_ids[start : start + limit]
        links = self._link(req.path)
        if start + limit < len(g.build_ids):
            links["next"] = f"{self.server.url}{req.path}?cursor={start + limit}&limit={limit}"
        data = [{"type": "builds", "id": b} for b in page]
        return Reply(200, {"data": data, "links": links, "meta": {"paging": {"total": len(g.build_ids), "limit": limit}}})

    def _add_group_builds(self, req: Request) -> Reply:
        gid = req.match["id"] if req.match else ""
        doc = req.json() if req.body else None
        items = doc.get("data") if isinstance(doc, dict) and set(doc) == {"data"} else None
        if (
            not isinstance(items, list)
            or not items
            or any(not isinstance(x, dict) or set(x) != {"type", "id"} or x["type"] != "builds" for x in items)
        ):
            return self.server.reject(req, 'the body must be {"data": [{"type": "builds", "id": ...}, ...]}')
        g = self.groups.get(gid)
        if g is None:
            return not_found("betaGroups", gid)
        for item in items:
            b = self.builds.get(item["id"])
            if b is None or b.app_id != g.app_id:
                return error(409, "ENTITY_ERROR.RELATIONSHIP.INVALID", "The provided entity includes a relationship with an invalid value",
                             f"Build {item['id']} is not a build of the group's app")  # fmt: skip
            if b.processing_state != "VALID":
                return error(
                    409, "STATE_ERROR", "The request cannot be fulfilled in the current state", f"Build {b.id} is {b.processing_state}"
                )
            if b.id in g.build_ids:
                self.redundant_writes.append(f"POST build {b.id} to group {g.name}: already in it")
            else:
                g.build_ids.append(b.id)
        return Reply(204)
