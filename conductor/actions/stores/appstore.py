"""App Store Connect: one app's App Store versions, their phased release, and TestFlight groups.

The calls (App Store Connect API; request and response shapes from Apple's OpenAPI specification
and https://developer.apple.com/documentation/appstoreconnectapi):

    GET   /v1/apps/{id}                                              check()
    GET   /v1/apps/{id}/appStoreVersions?filter[versionString]=..&filter[platform]=IOS
    GET   /v1/appStoreVersions/{id}/build                            the version's build (find_build)
    GET   /v1/appStoreVersions/{id}/appStoreVersionPhasedRelease     read the phased release
    POST  /v1/appStoreVersionPhasedReleases                          create it (INACTIVE) for a version
    PATCH /v1/appStoreVersionPhasedReleases/{id}                     ACTIVE, PAUSED or COMPLETE
    POST  /v1/appStoreVersionReleaseRequests                         release an approved version
    GET   /v1/betaGroups?filter[app]=..&filter[name]=..              the TestFlight group of a ring
    GET   /v1/builds?filter[app]=..&filter[version]=..&filter[preReleaseVersion.version]=..
    GET   /v1/betaGroups/{id}/relationships/builds                   builds already in the group
    POST  /v1/betaGroups/{id}/relationships/builds                   add the build (distribute)

Apple's phased release is a fixed seven-day schedule (APPLE_PHASES); the robot gates each day
and calls `rollout` with that day's share, so `rollout` starts the phased release (or resumes a
paused one) and completes it at 100, and never sets a percentage of its own. There is no phased
release for an app's first version: that is refused clearly, not skipped. App Store release notes
belong to the reviewed version, so `notes` and `priority` (Play only) are not used here.

Auth: an ES256 JWT signed with the API key's .p8 private key (read from its CredentialRef when a
token is signed, never kept), reused until two minutes before it expires; tokens live 19 minutes
(Apple refuses more than 20). https://developer.apple.com/documentation/appstoreconnectapi/generating-tokens-for-api-requests
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from conductor.actions.base import ActionFailed
from conductor.actions.http import USER_AGENT, _short, retry_after_s
from conductor.actions.stores.base import APPLE_MAX_PAUSE_DAYS, APPLE_PHASES, RolloutStatus, StoreClient, StoreKind, StoreRollout
from conductor.clock import Clock, system_clock
from conductor.connect.credentials import CredentialError, CredentialRef

DEFAULT_ENDPOINT = "https://api.appstoreconnect.apple.com"
ENDPOINT_ENV = "CONDUCTOR_APPSTORE_API_ENDPOINT"
AUDIENCE = "appstoreconnect-v1"
TOKEN_LIFETIME_S = 19 * 60  # Apple refuses tokens that expire more than 20 minutes after they are issued
TOKEN_RENEW_BEFORE_S = 2 * 60
REVIEW_POLL_S = 15 * 60.0  # how long to wait before asking again while Apple reviews the version
DAY_S = 86400.0

# appVersionState (appStoreState, deprecated by Apple, where it differs) grouped by what the robot can do.
RELEASED = {"READY_FOR_DISTRIBUTION", "READY_FOR_SALE", "PREORDER_READY_FOR_SALE"}
APPROVED = "PENDING_DEVELOPER_RELEASE"
IN_REVIEW = {
    "WAITING_FOR_REVIEW", "IN_REVIEW", "READY_FOR_REVIEW", "WAITING_FOR_EXPORT_COMPLIANCE", "ACCEPTED",
    "PENDING_APPLE_RELEASE", "PROCESSING_FOR_DISTRIBUTION", "PROCESSING_FOR_APP_STORE", "PENDING_CONTRACT",
}  # fmt: skip
REJECTED = {"REJECTED", "METADATA_REJECTED", "DEVELOPER_REJECTED", "INVALID_BINARY"}
PHASED_STATUS: dict[str, RolloutStatus] = {"INACTIVE": "draft", "ACTIVE": "in_progress", "PAUSED": "paused", "COMPLETE": "completed"}
FIRST_VERSION = (
    "App Store Connect offers no phased release for an app's first version; release it to all users "
    "(a rollout at 100%) or start phased rollouts with the next version"
)


def default_endpoint() -> str:
    """The API's base URL: CONDUCTOR_APPSTORE_API_ENDPOINT when set (a proxy, a test double), else Apple's."""
    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


@dataclass(frozen=True)
class _Version:
    id: str
    version_string: str
    app_version_state: str | None
    app_store_state: str | None

    @property
    def state(self) -> str:
        return self.app_version_state or self.app_store_state or "UNKNOWN"

    @property
    def released(self) -> bool:
        return self.state in RELEASED or self.app_store_state in RELEASED


@dataclass(frozen=True)
class _Phased:
    id: str
    state: str
    day: int | None
    pause_days: int
    start_date: str | None


class _Token:
    """The ES256 bearer token: signed when none is held or the held one expires within two minutes."""

    def __init__(self, key_id: str, issuer_id: str, private_key: CredentialRef, clock: Clock):
        self.key_id, self.issuer_id, self.private_key, self.clock = key_id, issuer_id, private_key, clock
        self._text: str | None = None
        self._expires = 0.0

    def bearer(self) -> str:
        now = self.clock().timestamp()
        if self._text is None or self._expires - now < TOKEN_RENEW_BEFORE_S:
            self._text, self._expires = self._sign(int(now)), float(int(now) + TOKEN_LIFETIME_S)
        return self._text

    def forget(self) -> None:
        self._text = None

    def _sign(self, now: int) -> str:
        import jwt

        try:
            key = self.private_key.read()
        except CredentialError as exc:
            raise ActionFailed(f"App Store Connect API key {self.key_id}: {exc}", retryable=False) from None
        claims = {"iss": self.issuer_id, "iat": now, "exp": now + TOKEN_LIFETIME_S, "aud": AUDIENCE}
        try:
            return jwt.encode(claims, key, algorithm="ES256", headers={"kid": self.key_id, "typ": "JWT"})
        except (ValueError, TypeError, jwt.PyJWTError):
            raise ActionFailed(
                f"App Store Connect API key {self.key_id}: credential {self.private_key.describe()} is not an "
                "ES256 private key (the .p8 file App Store Connect lets you download once)",
                retryable=False,
            ) from None


class AppStoreError(ActionFailed):
    """A non-2xx answer from App Store Connect: the HTTP status and Apple's own words kept apart."""

    def __init__(self, message: str, *, status: int, apple: str, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status, self.apple = status, apple


def _errors(response: httpx.Response) -> str:
    """Apple's JSON:API errors as one line: 'title: detail (code); ...', or the start of a non-JSON body."""
    try:
        body = response.json()
    except ValueError:
        return _short(response.text) or response.reason_phrase
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return _short(response.text)
    parts = []
    for err in errors:
        if isinstance(err, dict):
            title, detail, code = err.get("title") or "", err.get("detail") or "", err.get("code") or ""
            text = f"{title}: {detail}" if title and detail and detail != title else (detail or title)
            parts.append(f"{text} ({code})" if code else text)
    return _short("; ".join(parts))


def _attrs(resource: Any) -> dict[str, Any]:
    attributes = resource.get("attributes") if isinstance(resource, dict) else None
    return attributes if isinstance(attributes, dict) else {}


class AppStoreConnect:
    """StoreClient for one App Store app (its Apple id, `app_id`) through an App Store Connect API key."""

    kind: StoreKind = "appstore"

    def __init__(
        self,
        client: httpx.Client,
        *,
        app_id: str,
        key_id: str,
        issuer_id: str,
        private_key: CredentialRef,
        endpoint: str | None = None,
        platform: str = "IOS",
        clock: Clock = system_clock,
    ):
        self.client, self.app_id, self.key_id, self.issuer_id = client, app_id, key_id, issuer_id
        self.private_key, self.platform = private_key, platform
        self.endpoint = (endpoint or default_endpoint()).rstrip("/")
        self._token = _Token(key_id, issuer_id, private_key, clock)

    # ------------------------------------------------------------------ HTTP

    def _call(self, method: str, path: str, what: str, *, params: dict[str, str] | None = None,
              body: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """One request; the JSON body of a 2xx answer ({} when empty), else the ActionFailed for it."""
        headers = {"authorization": f"Bearer {self._token.bearer()}", "accept": "application/json", "user-agent": USER_AGENT}
        content = None
        if body is not None:
            headers["content-type"] = "application/json"
            content = json.dumps(body, separators=(",", ":")).encode()
        try:
            response = self.client.request(method, self.endpoint + path, params=params, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise ActionFailed(f"App Store Connect: {what}: timed out ({exc.__class__.__name__})") from None
        except httpx.HTTPError as exc:
            raise ActionFailed(f"App Store Connect: {what}: {exc.__class__.__name__}: {_short(str(exc))}") from None
        if not response.is_success:
            raise self._failure(response, what)
        if not response.content:
            return {}
        try:
            doc = response.json()
        except ValueError:
            raise ActionFailed(f"App Store Connect: {what}: HTTP {response.status_code} but not JSON: {_short(response.text)}") from None
        return doc if isinstance(doc, dict) else {}

    def _failure(self, response: httpx.Response, what: str) -> AppStoreError:
        """What went wrong, in App Store Connect's words, and whether trying again can help: 409 (a state
        that changed under us), 429 and 5xx can; 401, 403, 404 and other 4xx cannot."""
        status, apple = response.status_code, _errors(response)
        head = f"App Store Connect: {what}: HTTP {status}"
        retryable = status >= 500 or status in (408, 409, 425, 429)
        if status == 401:
            self._token.forget()
            message = (f"{head}: the API key was refused ({apple}); check key id {self.key_id}, issuer id {self.issuer_id} "
                       f"and the .p8 private key in credential {self.private_key.describe()} (a revoked key is refused too)")  # fmt: skip
        elif status == 403:
            message = (f"{head}: API key {self.key_id} is not allowed to ({apple}); the key needs the App Manager or "
                       "Admin role in App Store Connect (Users and Access, Integrations)")  # fmt: skip
        elif status == 404:
            message = f"{head}: not found: {apple}"
        elif status == 409:
            message = f"{head}: refused in the current state: {apple}"
        elif status == 429:
            limit = response.headers.get("x-rate-limit")
            message = f"{head}: rate limit exceeded{f' (X-Rate-Limit {limit})' if limit else ''}: {apple}"
        else:
            message = f"{head}: {apple}"
        return AppStoreError(message, status=status, apple=apple, retryable=retryable, retry_after=retry_after_s(response))

    # ------------------------------------------------------------------ reads

    def _version(self, version: str) -> _Version | None:
        doc = self._call(
            "GET", f"/v1/apps/{self.app_id}/appStoreVersions", f"find version {version}",
            params={"filter[versionString]": version, "filter[platform]": self.platform, "limit": "2"},
        )  # fmt: skip
        data = doc.get("data")
        items = [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []
        match = next((r for r in items if _attrs(r).get("versionString") == version), None)
        if match is None:
            return None
        attrs = _attrs(match)
        return _Version(str(match.get("id")), version, attrs.get("appVersionState"), attrs.get("appStoreState"))

    def _require_version(self, version: str) -> _Version:
        found = self._version(version)
        if found is None:
            raise ActionFailed(
                f"App Store Connect: app {self.app_id} has no {self.platform} App Store version {version}; "
                "create it and attach the build first",
                retryable=False,
            )
        return found

    def _build_of(self, v: _Version) -> str | None:
        """The build number (the build's `version`) attached to the version; None when none is."""
        try:
            doc = self._call("GET", f"/v1/appStoreVersions/{v.id}/build", f"read the build of version {v.version_string}")
        except AppStoreError as exc:
            if exc.status == 404:  # no build attached may come as a 404 rather than {"data": null}
                return None
            raise
        number = _attrs(doc.get("data")).get("version")
        return str(number) if number is not None else None

    def _require_build(self, v: _Version, build: str) -> str | None:
        attached = self._build_of(v)
        if build and attached != build:
            has = f"build {attached}" if attached else "no build"
            raise ActionFailed(f"App Store Connect: version {v.version_string} has {has} attached, not build {build}", retryable=False)
        return attached

    def _phased(self, v: _Version) -> _Phased | None:
        what = f"read the phased release of version {v.version_string}"
        try:
            doc = self._call("GET", f"/v1/appStoreVersions/{v.id}/appStoreVersionPhasedRelease", what)
        except AppStoreError as exc:
            if exc.status == 404:  # 'no phased release' may come as a 404 rather than {"data": null}
                return None
            raise
        return self._phased_from(doc.get("data"))

    @staticmethod
    def _phased_from(resource: Any) -> _Phased | None:
        if not isinstance(resource, dict) or not resource.get("id"):
            return None
        a = _attrs(resource)
        day = a.get("currentDayNumber")
        return _Phased(str(resource["id"]), str(a.get("phasedReleaseState") or "INACTIVE"), int(day) if day else None,
                       int(a.get("totalPauseDuration") or 0), a.get("startDate"))  # fmt: skip

    def _rollout(self, v: _Version, phased: _Phased | None, build: str | None, **extra: Any) -> StoreRollout:
        """The normalised state of a version and its phased release."""
        detail: dict[str, Any] = {"app_id": self.app_id, "version_id": v.id, "app_version_state": v.app_version_state,
                                  "app_store_state": v.app_store_state, **extra}  # fmt: skip
        if phased is None:
            status: RolloutStatus = "completed" if v.released else "none"
            return StoreRollout(status, 100.0 if v.released else None, build, review_state=v.state, detail=detail)
        status = PHASED_STATUS.get(phased.state, "none")
        day = min(max(phased.day, 1), len(APPLE_PHASES)) if phased.day else None
        percent: float | None = float(APPLE_PHASES[day - 1]) if day and status in ("in_progress", "paused") else None
        if status == "completed":
            percent = 100.0
        detail.update(phased_release_id=phased.id, phased_release_state=phased.state, start_date=phased.start_date,
                      total_pause_days=phased.pause_days, pause_days_left=max(APPLE_MAX_PAUSE_DAYS - phased.pause_days, 0))  # fmt: skip
        return StoreRollout(status, percent, build, day=phased.day, paused_total_s=phased.pause_days * DAY_S,
                            review_state=v.state, detail=detail)  # fmt: skip

    # ------------------------------------------------------------------ StoreClient

    def check(self) -> str:
        doc = self._call("GET", f"/v1/apps/{self.app_id}", "read the app")
        a = _attrs(doc.get("data"))
        return f"App Store Connect: API key {self.key_id} sees app {a.get('name') or '?'} ({a.get('bundleId') or '?'}, id {self.app_id})"

    def find_build(self, version: str) -> str | None:
        v = self._version(version)
        return None if v is None else self._build_of(v)

    def review_state(self, version: str) -> str | None:
        """The version's appVersionState (appStoreState where Apple gives only that); None without such a version."""
        v = self._version(version)
        return None if v is None else v.state

    def read(self, build: str, version: str) -> StoreRollout:
        v = self._version(version)
        if v is None:
            return StoreRollout("none", detail={"app_id": self.app_id, "version": version, "note": "no such App Store version"})
        return self._rollout(v, self._phased(v), self._build_of(v))

    def rollout(self, build: str, version: str, percent: float, *, notes: dict[str, str] | None = None,
                priority: int | None = None) -> StoreRollout:  # fmt: skip
        """Release the approved version with a phased release (created when missing, then ACTIVE), or
        complete it at 100. Apple moves the days; a percent that is not today's share is fine."""
        if percent not in APPLE_PHASES:
            raise ActionFailed(
                f"App Store percentages are fixed: Apple's phased release gives {', '.join(f'{p}%' for p in APPLE_PHASES)} "
                f"of users on days 1 to 7; {percent:g}% cannot be set",
                retryable=False,
            )
        v = self._require_version(version)
        attached = self._require_build(v, build)
        phased = self._phased(v)
        if v.state == APPROVED:
            return self._release(v, phased, attached, percent)
        if v.released:
            return self._advance(v, phased, attached, percent)
        raise self._not_releasable(v)

    def halt(self, build: str, version: str) -> StoreRollout:
        """Pause the phased release (already paused: nothing to do), within Apple's 30 days of pauses."""
        v = self._require_version(version)
        attached = self._build_of(v)
        phased = self._phased(v)
        where = f"App Store Connect: version {version}"
        if phased is None:
            if v.released:
                raise ActionFailed(f"{where} was released to all users without a phased release: App Store Connect cannot pause "
                                   "it (only removing the app from sale stops downloads, a manual step)", retryable=False)  # fmt: skip
            return self._rollout(v, None, attached, note=f"not released ({v.state}): nothing to pause")
        left = max(APPLE_MAX_PAUSE_DAYS - phased.pause_days, 0)
        budget = f"{left} of {APPLE_MAX_PAUSE_DAYS} pause days left"
        if phased.state == "PAUSED":
            return self._rollout(v, phased, attached, note=f"already paused; {budget}")
        if phased.state == "COMPLETE":
            raise ActionFailed(f"{where}: the phased release is complete, every user gets the version: nothing to pause", retryable=False)
        if phased.state == "INACTIVE":
            return self._rollout(v, phased, attached, note="the phased release has not started: nothing to pause")
        if left <= 0:
            raise ActionFailed(f"{where}: the phased release was paused for {phased.pause_days} days already; Apple allows "
                               f"{APPLE_MAX_PAUSE_DAYS} in all, so it cannot be paused again", retryable=False)  # fmt: skip
        phased = self._patch(v, phased, "PAUSED")
        note = f"paused; {budget} (Apple resumes the phased release by itself when they run out)"
        return self._rollout(v, phased, attached, note=note)

    def resume(self, build: str, version: str) -> StoreRollout:
        """The paused phased release ACTIVE again (already active or complete: nothing to do)."""
        v = self._require_version(version)
        attached = self._require_build(v, build)
        phased = self._phased(v)
        if phased is None or phased.state in ("ACTIVE", "COMPLETE"):
            return self._rollout(v, phased, attached)
        if phased.state == "INACTIVE" and not v.released:
            return self._rollout(v, phased, attached, note=f"not released yet ({v.state}): rollout releases it")
        return self._rollout(v, self._patch(v, phased, "ACTIVE"), attached)

    # ------------------------------------------------------------------ rollout steps

    def _not_releasable(self, v: _Version) -> ActionFailed:
        where = f"App Store Connect: version {v.version_string}"
        if v.state in IN_REVIEW:
            processing = "PROCESSING" in v.state or v.state == "PENDING_APPLE_RELEASE"
            waits = "waits for Apple to finish processing it" if processing else "waits for review"
            return ActionFailed(f"{where} {waits} ({v.state}); the rollout starts once Apple approves it "
                                "(PENDING_DEVELOPER_RELEASE)", retry_after=REVIEW_POLL_S)  # fmt: skip
        if v.state in REJECTED:
            return ActionFailed(f"{where} was rejected ({v.state}); resolve it in App Store Connect and resubmit", retryable=False)
        if v.state == "PREPARE_FOR_SUBMISSION":
            return ActionFailed(f"{where} is not submitted for review yet (PREPARE_FOR_SUBMISSION)", retryable=False)
        return ActionFailed(f"{where} is {v.state}: it cannot be released", retryable=False)

    def _release(self, v: _Version, phased: _Phased | None, attached: str | None, percent: float) -> StoreRollout:
        """The approved version released: with a phased release below 100%, to everyone at 100%."""
        if percent < 100 and phased is None:
            phased = self._create_phased(v)
        body = {"data": {"type": "appStoreVersionReleaseRequests",
                         "relationships": {"appStoreVersion": {"data": {"type": "appStoreVersions", "id": v.id}}}}}  # fmt: skip
        self._call("POST", "/v1/appStoreVersionReleaseRequests", f"release version {v.version_string}", body=body)
        v = self._require_version(v.version_string)
        if v.released:  # Apple starts an INACTIVE phased release on release; _advance makes sure (and completes at 100)
            return self._advance(v, self._phased(v), attached, percent)
        return self._rollout(v, self._phased(v), attached, requested_percent=percent, note=f"release requested; Apple shows {v.state}")

    def _advance(self, v: _Version, phased: _Phased | None, attached: str | None, percent: float) -> StoreRollout:
        """A released version: complete the phased release at 100, else keep it (or make it) ACTIVE."""
        if phased is None:
            return self._rollout(v, None, attached, requested_percent=percent, note="released to all users without a phased release")
        if percent >= 100 and phased.state != "COMPLETE":
            phased = self._patch(v, phased, "COMPLETE")
        elif percent < 100 and phased.state in ("INACTIVE", "PAUSED"):
            phased = self._patch(v, phased, "ACTIVE")
        return self._rollout(v, phased, attached, requested_percent=percent)

    def _has_version_on_sale(self, v: _Version) -> bool:
        doc = self._call(
            "GET", f"/v1/apps/{self.app_id}/appStoreVersions", "look for a version on sale",
            params={"filter[platform]": self.platform, "filter[appVersionState]": "READY_FOR_DISTRIBUTION", "limit": "5"},
        )  # fmt: skip
        data = doc.get("data")
        return any(isinstance(r, dict) and r.get("id") != v.id for r in data) if isinstance(data, list) else False

    def _create_phased(self, v: _Version) -> _Phased:
        """A new INACTIVE phased release for `v`; refused clearly for an app's first version."""
        where = f"App Store Connect: version {v.version_string}"
        if not self._has_version_on_sale(v):
            raise ActionFailed(f"{where}: no earlier version is on sale. {FIRST_VERSION}", retryable=False)
        body = {"data": {"type": "appStoreVersionPhasedReleases", "attributes": {"phasedReleaseState": "INACTIVE"},
                         "relationships": {"appStoreVersion": {"data": {"type": "appStoreVersions", "id": v.id}}}}}  # fmt: skip
        try:
            doc = self._call(
                "POST", "/v1/appStoreVersionPhasedReleases", f"create the phased release of version {v.version_string}", body=body
            )
        except AppStoreError as exc:
            if exc.status not in (409, 422):
                raise
            existing = self._phased(v)  # made by an earlier attempt whose answer was lost
            if existing is not None:
                return existing
            raise ActionFailed(
                f"{where}: App Store Connect refused a phased release ({exc.apple}). {FIRST_VERSION}", retryable=False
            ) from None
        created = self._phased_from(doc.get("data")) or self._phased(v)
        if created is None:
            raise ActionFailed(f"{where}: App Store Connect created no phased release")
        return created

    def _patch(self, v: _Version, phased: _Phased, state: str) -> _Phased:
        body = {"data": {"type": "appStoreVersionPhasedReleases", "id": phased.id, "attributes": {"phasedReleaseState": state}}}
        what = f"set the phased release of version {v.version_string} {state}"
        doc = self._call("PATCH", f"/v1/appStoreVersionPhasedReleases/{phased.id}", what, body=body)
        return self._phased_from(doc.get("data")) or _Phased(phased.id, state, phased.day, phased.pause_days, phased.start_date)

    # ------------------------------------------------------------------ TestFlight

    def distribute(self, build: str, version: str, ring: str) -> StoreRollout:
        """`build` in the TestFlight beta group named `ring` (already there: nothing to do)."""
        group_id = self._beta_group(ring)
        build_id = self._testflight_build(build, version)
        detail = {"app_id": self.app_id, "beta_group": ring, "beta_group_id": group_id, "build_id": build_id}
        if build_id in self._group_build_ids(group_id, ring):
            return StoreRollout("completed", 100.0, build, detail={**detail, "already_in_group": True})
        body = {"data": [{"type": "builds", "id": build_id}]}
        try:
            self._call(
                "POST", f"/v1/betaGroups/{group_id}/relationships/builds", f"add build {build} to TestFlight group {ring}", body=body
            )
        except AppStoreError as exc:  # a 409 because an earlier attempt did add it is done, not a failure
            if exc.status != 409 or build_id not in self._group_build_ids(group_id, ring):
                raise
        return StoreRollout("completed", 100.0, build, detail={**detail, "already_in_group": False})

    def _beta_group(self, ring: str) -> str:
        params = {"filter[app]": self.app_id, "limit": "200"}
        if "," not in ring:  # filter values are comma-separated lists: a name with a comma is matched here only
            params["filter[name]"] = ring
        doc = self._call("GET", "/v1/betaGroups", f"find TestFlight group {ring}", params=params)
        data = doc.get("data")
        for group in data if isinstance(data, list) else []:
            if isinstance(group, dict) and _attrs(group).get("name") == ring:
                return str(group.get("id"))
        raise ActionFailed(f"App Store Connect: app {self.app_id} has no TestFlight group named {ring!r}; create it in "
                           "App Store Connect (TestFlight) or name an existing one", retryable=False)  # fmt: skip

    def _testflight_build(self, build: str, version: str) -> str:
        params = {"filter[app]": self.app_id, "filter[version]": build, "filter[preReleaseVersion.version]": version,
                  "filter[preReleaseVersion.platform]": self.platform, "limit": "2"}  # fmt: skip
        doc = self._call("GET", "/v1/builds", f"find build {build} of version {version}", params=params)
        data = doc.get("data")
        found = next((b for b in data if isinstance(b, dict)), None) if isinstance(data, list) else None
        where = f"App Store Connect: build {build} of version {version}"
        if found is None:
            raise ActionFailed(f"{where} is not in App Store Connect (yet): an upload takes minutes to appear", retry_after=300.0)
        a = _attrs(found)
        if a.get("expired"):
            raise ActionFailed(f"{where} has expired in TestFlight; upload a new build", retryable=False)
        state = a.get("processingState")
        if state == "PROCESSING":
            raise ActionFailed(f"{where} is still processing", retry_after=300.0)
        if state in ("FAILED", "INVALID"):
            raise ActionFailed(f"{where} failed processing ({state}); upload a new build", retryable=False)
        return str(found.get("id"))

    def _group_build_ids(self, group_id: str, ring: str) -> set[str]:
        """The ids of the builds in the group, every page of them (bounded; only links back to the endpoint are followed)."""
        ids: set[str] = set()
        path: str = f"/v1/betaGroups/{group_id}/relationships/builds"
        params: dict[str, str] | None = {"limit": "200"}
        for _ in range(50):
            doc = self._call("GET", path, f"list the builds of TestFlight group {ring}", params=params)
            data = doc.get("data")
            ids.update(str(r.get("id")) for r in (data if isinstance(data, list) else []) if isinstance(r, dict))
            links = doc.get("links")
            nxt = links.get("next") if isinstance(links, dict) else None
            if not isinstance(nxt, str) or not nxt.startswith(self.endpoint + "/"):
                break
            path, params = nxt[len(self.endpoint) :], None  # the next link carries its own query (cursor, limit)
        return ids


if TYPE_CHECKING:

    def _is_a_store_client(client: AppStoreConnect) -> StoreClient:
        return client  # mypy checks that AppStoreConnect satisfies the StoreClient protocol
