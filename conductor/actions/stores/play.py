"""Google Play: the StoreClient over the Play Developer Publishing API v3 (androidpublisher).

One change is one edit: edits.insert opens it, edits.tracks.get reads the track, edits.tracks.update
changes one release and edits.commit applies it. Every call reads the track first and, when it
already says what is wanted, deletes its read-only edit and commits nothing, so a retry after a
commit that timed out (but was applied) finds the change made and does not make it twice. Each
attempt opens a new edit: Play invalidates an edit once it or any other edit of the app is committed.

A track update names only the release it changes, as fastlane supply sends it (Track.releases in an
update "represents desired changes"): Play keeps the completed release that serves the users
outside a staged rollout's userFraction, so production reads, mid-rollout,

    [{name: 8.9.0, versionCodes: [890], status: inProgress, userFraction: 0.2},
     {name: 8.8.0, versionCodes: [880], status: completed}]

The client is google-api-python-client with the discovery document it ships (no fetch at run time),
authorised by a service-account key (google-auth; tokens from the key's token_uri) over httplib2
with a timeout and no retries of its own: Conductor's outbox retries, honouring Retry-After.
CONDUCTOR_PLAY_API_ENDPOINT points the client at another base URL (a proxy, or a test's fake).
https://developers.google.com/android-publisher/api-ref/rest/v3/edits.tracks
https://developers.google.com/android-publisher/tracks
"""

from __future__ import annotations

import http.client
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import structlog

from conductor.actions.base import ActionFailed
from conductor.actions.http import retry_after_s
from conductor.actions.stores.base import RolloutStatus, StoreKind, StoreRollout
from conductor.connect.credentials import CredentialError, CredentialRef

log = structlog.get_logger(__name__)

SCOPE = "https://www.googleapis.com/auth/androidpublisher"
ENDPOINT_ENV = "CONDUCTOR_PLAY_API_ENDPOINT"
PRODUCTION = "production"
DEFAULT_TIMEOUT_S = 30.0
# Worth another attempt whatever Play says: a timeout of the request, a conflict (409), an edit gone (410).
RETRYABLE_STATUS = {408, 409, 410, 425, 429}
# Play's words for an edit that can no longer be used (committed, deleted, expired, or dropped because
# another edit was committed); it answers these with 400 as well, and a new attempt opens a new edit.
EDIT_GONE = ("edit has been deleted", "already been successfully committed", "edit has expired")
_STATUS: dict[str, RolloutStatus] = {"draft": "draft", "inProgress": "in_progress", "halted": "halted", "completed": "completed"}
_KEY_FIELDS = ("client_email", "private_key", "token_uri")
# What of a release as read is sent back in an update: never inAppUpdatePriority (fixed once rolled out).
_RESENT = ("name", "versionCodes", "releaseNotes", "status", "userFraction", "countryTargeting")

Release = dict[str, Any]
Track = dict[str, Any]
Decide = Callable[[Track], Release | None]  # the release to send, or None when the track already says it


class PlayStore:
    """One app (`package_name`) on Google Play. `credential` names the service-account JSON key;
    `endpoint` is the API's base URL (default: $CONDUCTOR_PLAY_API_ENDPOINT, else Google's);
    `timeout_s` bounds each HTTP request, the token request included. Not thread-safe (httplib2
    is not): one instance per worker thread."""

    kind: StoreKind = "play"

    def __init__(self, package_name: str, credential: CredentialRef, *, endpoint: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:  # fmt: skip
        self.package_name = package_name
        self.credential = credential
        self.endpoint = endpoint if endpoint is not None else (os.environ.get(ENDPOINT_ENV) or None)
        self.timeout_s = timeout_s
        self._account = "unknown"  # the key's client_email once read: shown in errors, never the key
        self._http: Any = None
        self._service: Any = None

    # ------------------------------------------------------------ StoreClient

    def check(self) -> str:
        tracks = self._list_tracks()
        names = ", ".join(sorted(str(t.get("track")) for t in tracks)) or "none"
        return f"Google Play: service account {self._account} ({self.credential.describe()}) can edit {self.package_name}; tracks: {names}"

    def find_build(self, version: str) -> str | None:
        """The highest versionCode of a release named `version` on a testing track (internal, alpha,
        beta or a closed track: any track but production)."""
        codes = [
            int(code)
            for track in self._list_tracks()
            if _is_testing(str(track.get("track", "")))
            for release in track.get("releases", [])
            if release.get("name") == version
            for code in release.get("versionCodes", [])
        ]
        return str(max(codes)) if codes else None

    def distribute(self, build: str, version: str, ring: str) -> StoreRollout:
        _check_build(build)
        if not _is_testing(ring):
            raise ActionFailed(f"Play distribute of {version}: {ring} is not a testing track (rollout is for production)", retryable=False)

        def decide(track: Track) -> Release | None:
            current = _release_of(track, build)
            if current is not None and current.get("status") == "completed":
                return None
            return {"name": version, "versionCodes": [build], "status": "completed"}

        return self._change(ring, build, decide)

    def rollout(self, build: str, version: str, percent: float, *, notes: dict[str, str] | None = None,
                priority: int | None = None) -> StoreRollout:  # fmt: skip
        """Production at `percent` (a halted release too: it resumes at the percent asked)."""
        _check_build(build)
        if math.isnan(percent) or not 0 < percent <= 100:
            raise ActionFailed(f"Play rollout of {version}: percent must be above 0 and at most 100, not {percent}", retryable=False)
        if priority is not None and (isinstance(priority, bool) or priority not in range(6)):
            raise ActionFailed(f"Play rollout of {version}: inAppUpdatePriority must be 0..5, not {priority!r}", retryable=False)
        fraction = None if percent >= 100 else percent / 100

        def decide(track: Track) -> Release | None:
            current = _release_of(track, build)
            if current is not None and _is_at(current, fraction):
                return None
            return _rollout_release(current, build, version, fraction, notes, priority)

        return self._change(PRODUCTION, build, decide)

    def halt(self, build: str, version: str) -> StoreRollout:
        def decide(track: Track) -> Release | None:
            current = _release_of(track, build)
            if current is None or current.get("status") not in ("inProgress", "halted", "completed"):
                return None  # never rolled out (its submit was superseded): nobody gets it, nothing to halt
            return None if current.get("status") == "halted" else _resend(current, status="halted")

        _check_build(build)
        return self._change(PRODUCTION, build, decide)

    def resume(self, build: str, version: str) -> StoreRollout:
        def decide(track: Track) -> Release | None:
            current = self._rolled_out(track, build, version, "resume")
            if current.get("status") != "halted":
                return None
            # A halted staged rollout keeps its userFraction; a halted completed release has none.
            return _resend(current, status="inProgress" if "userFraction" in current else "completed")

        _check_build(build)
        return self._change(PRODUCTION, build, decide)

    def read(self, build: str, version: str) -> StoreRollout:
        _check_build(build)
        with self._edit() as edit:
            track = self._get_track(edit, PRODUCTION)
            self._delete_edit(edit)
        return _normalise(track, build, committed=False)

    # ------------------------------------------------------------ edits

    def _change(self, track_name: str, build: str, decide: Decide) -> StoreRollout:
        """Read `track_name` in a new edit; commit `decide`'s release, or nothing when it has none."""
        with self._edit() as edit:
            track = self._get_track(edit, track_name)
            release = decide(track)
            if release is None:
                self._delete_edit(edit)
                return _normalise(track, build, committed=False)
            body = {"track": track_name, "releases": [release]}
            update = self._edits().tracks().update(packageName=self.package_name, editId=edit, track=track_name, body=body)
            self._call(f"edits.tracks.update {track_name}", update)
            self._call("edits.commit", self._edits().commit(packageName=self.package_name, editId=edit))
        log.info("play.edit_committed", package=self.package_name, track=track_name, edit=edit, name=release.get("name"),
                 status=release.get("status"), fraction=release.get("userFraction"), codes=release.get("versionCodes"))  # fmt: skip
        return _normalise(body, build, committed=True)

    def _rolled_out(self, track: Track, build: str, version: str, verb: str) -> Release:
        current = _release_of(track, build)
        if current is None or current.get("status") not in ("inProgress", "halted", "completed"):
            state = "is not on the production track" if current is None else f"is a {current.get('status')} release, not rolled out"
            raise ActionFailed(f"Play {verb} of {version} on {self.package_name}: build {build} {state}", retryable=False)
        return current

    def _list_tracks(self) -> list[Track]:
        with self._edit() as edit:
            listing = self._call("edits.tracks.list", self._edits().tracks().list(packageName=self.package_name, editId=edit))
            self._delete_edit(edit)
        return list(listing.get("tracks", []))

    @contextmanager
    def _edit(self) -> Iterator[str]:
        """A new edit's id; deleted when Play refuses what is done in it (a retryable failure leaves it
        to expire: the next attempt opens its own)."""
        edit = str(self._call("edits.insert", self._edits().insert(packageName=self.package_name, body={}))["id"])
        try:
            yield edit
        except ActionFailed as exc:
            if not exc.retryable:
                self._delete_edit(edit)
            raise

    def _get_track(self, edit: str, name: str) -> Track:
        request = self._edits().tracks().get(packageName=self.package_name, editId=edit, track=name)
        track: Track = self._call(f"edits.tracks.get {name}", request)
        return track

    def _delete_edit(self, edit: str) -> None:
        """Discard a read-only edit; it would expire anyway, so a failure is only logged."""
        try:
            self._call("edits.delete", self._edits().delete(packageName=self.package_name, editId=edit))
        except ActionFailed as exc:
            log.warning("play.edit_not_deleted", package=self.package_name, edit=edit, error=str(exc))

    # ------------------------------------------------------------ client, calls, failures

    def _edits(self) -> Any:
        if self._service is None:
            self._service = self._build()
        return self._service.edits()

    def _build(self) -> Any:
        """The androidpublisher v3 client: bundled discovery document, a timeout on every request
        (build() takes credentials or an http, not both: the credentials ride in AuthorizedHttp)."""
        import google_auth_httplib2
        import httplib2
        from googleapiclient import discovery

        self._http = google_auth_httplib2.AuthorizedHttp(self._credentials(), http=httplib2.Http(timeout=self.timeout_s))
        options = {"api_endpoint": self.endpoint.rstrip("/") + "/"} if self.endpoint else None
        return discovery.build("androidpublisher", "v3", http=self._http, static_discovery=True, cache_discovery=False,
                               client_options=options, num_retries=0)  # fmt: skip

    def _credentials(self) -> Any:
        from google.oauth2 import service_account

        where = f"credential {self.credential.describe()}"
        try:
            info = json.loads(self.credential.read())
        except CredentialError as exc:
            raise ActionFailed(str(exc), retryable=False) from None
        except ValueError:
            raise ActionFailed(f"{where}: not JSON; a Google service-account key file is", retryable=False) from None
        missing = [name for name in _KEY_FIELDS if not isinstance(info, dict) or not isinstance(info.get(name), str)]
        if missing:
            raise ActionFailed(f"{where}: not a Google service-account key (no {', '.join(missing)})", retryable=False)
        self._account = info["client_email"]
        try:
            return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, IndexError) as exc:  # never the exception's text: it may quote the key
            raise ActionFailed(f"{where}: the private key could not be loaded ({exc.__class__.__name__})", retryable=False) from None

    def _call(self, what: str, request: Any) -> Any:
        """Execute one request once (the outbox retries); ActionFailed on any failure."""
        import httplib2
        from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
        from googleapiclient.errors import HttpError

        where = f"Play {what} ({self.package_name})"
        try:
            return request.execute(num_retries=0)
        except HttpError as exc:
            raise self._http_failure(where, exc) from None
        except RefreshError as exc:
            raise self._token_failure(where, exc) from None
        except TimeoutError:
            self._drop_connections()
            raise ActionFailed(f"{where}: timed out after {self.timeout_s:g}s", retryable=True) from None
        except (TransportError, httplib2.HttpLib2Error, http.client.HTTPException, OSError) as exc:
            self._drop_connections()
            raise ActionFailed(f"{where}: {exc.__class__.__name__}: {_clip(str(exc)) or 'no detail'}", retryable=True) from None
        except GoogleAuthError as exc:  # the key cannot sign (never its text: it may quote the key)
            raise ActionFailed(f"{where}: credential {self.credential.describe()}: {exc.__class__.__name__}", retryable=False) from None

    def _http_failure(self, where: str, exc: Any) -> ActionFailed:
        status = int(exc.status_code)
        message, code = _error_words(exc)
        text = f"{where}: HTTP {status}{f' {code}' if code else ''}: {message}"
        if status == 401:
            return ActionFailed(f"{text}; Google did not accept {self.credential.describe()} ({self._account})", retryable=False)
        if status == 403:
            return ActionFailed(f"{text}; the service account {self._account} ({self.credential.describe()}) lacks this permission "
                                f"on {self.package_name}: grant it in Play Console, Users and permissions", retryable=False)  # fmt: skip
        if status >= 500 or status in RETRYABLE_STATUS or any(words in message.lower() for words in EDIT_GONE):
            return ActionFailed(text, retryable=True, retry_after=_retry_after(exc, status))
        return ActionFailed(text, retryable=False)

    def _token_failure(self, where: str, exc: Any) -> ActionFailed:
        """The token endpoint refused the key (RefreshError: its error and description, no secret)."""
        said = _clip(str(exc.args[0])) if exc.args else exc.__class__.__name__
        if getattr(exc, "retryable", False):
            return ActionFailed(f"{where}: Google's token endpoint failed: {said}", retryable=True)
        return ActionFailed(f"{where}: Google's token endpoint refused the key {self.credential.describe()} "
                            f"(service account {self._account}): {said}", retryable=False)  # fmt: skip

    def _drop_connections(self) -> None:
        """After a transport failure, no kept-alive connection carries a late answer into the next request."""
        if self._http is not None:
            self._http.close()


# ------------------------------------------------------------ releases


def _check_build(build: str) -> None:
    if not (build.isascii() and build.isdigit()):
        raise ActionFailed(f"Play: build {build!r} is not a versionCode", retryable=False)


def _is_testing(track: str) -> bool:
    return track != PRODUCTION and not track.endswith(f":{PRODUCTION}")


def _release_of(track: Track, build: str) -> Release | None:
    for release in track.get("releases", []):
        if build in [str(code) for code in release.get("versionCodes", [])]:
            return dict(release)
    return None


def _is_at(release: Release, fraction: float | None) -> bool:
    if fraction is None:
        return release.get("status") == "completed"
    current = release.get("userFraction")
    return release.get("status") == "inProgress" and current is not None and math.isclose(float(current), fraction, rel_tol=1e-9)


def _resend(current: Release, **changes: Any) -> Release:
    """A release as read, sent back with `changes`: the fields an update takes, without the fixed priority."""
    release = {key: current[key] for key in _RESENT if key in current} | changes
    if release.get("status") != "inProgress":
        release.pop("countryTargeting", None)  # Play takes countries only for a staged rollout
    return release


def _rollout_release(current: Release | None, build: str, version: str, fraction: float | None,
                     notes: dict[str, str] | None, priority: int | None) -> Release:  # fmt: skip
    """The release for a rollout: notes and in-app update priority only the first time (from nothing or a draft)."""
    status = "completed" if fraction is None else "inProgress"
    if current is not None and current.get("status") != "draft":
        release = _resend(current, status=status)
    else:
        release = _resend(current, status=status) if current is not None else {"name": version, "versionCodes": [build], "status": status}
        if notes:
            release["releaseNotes"] = [{"language": language, "text": text} for language, text in notes.items()]
        if priority is not None:
            release["inAppUpdatePriority"] = priority
    if fraction is None:
        release.pop("userFraction", None)
    else:
        release["userFraction"] = fraction
    return release


def _normalise(track: Track, build: str, *, committed: bool) -> StoreRollout:
    release = _release_of(track, build)
    detail = {"track": track.get("track"), "release": release, "committed": committed}
    if release is None:
        return StoreRollout("none", detail=detail)
    status = _STATUS.get(str(release.get("status")), "none")
    fraction = release.get("userFraction")
    percent: float | None = None
    if status == "completed" or (status == "halted" and fraction is None):
        percent = 100.0  # a halted completed release: it had everyone
    elif status in ("in_progress", "halted") and fraction is not None:
        percent = round(float(fraction) * 100, 6)
    return StoreRollout(status, percent=percent, build=build, detail=detail)


# ------------------------------------------------------------ errors


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_words(exc: Any) -> tuple[str, str]:
    """Play's message and status name (PERMISSION_DENIED, ...) from an error body; the HTTP reason
    phrase when the body is not Google's JSON (a proxy's HTML page)."""
    try:
        error = json.loads(exc.content.decode("utf-8"))["error"]
        return _clip(str(error.get("message") or exc.resp.reason)), str(error.get("status") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return _clip(str(getattr(exc.resp, "reason", "") or "no message")), ""


def _retry_after(exc: Any, status: int) -> float | None:
    value = exc.resp.get("retry-after") if hasattr(exc.resp, "get") else None
    return retry_after_s(httpx.Response(status, headers={"retry-after": value})) if value else None
