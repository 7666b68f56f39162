"""Google Play Android vitals of one versionCode: crash and ANR rates (Play Developer Reporting API v1beta1).

Per metric set the signals use (crashRateMetricSet, anrRateMetricSet), two calls through
google-api-python-client's bundled discovery document (static, no discovery fetch):

    GET  {base}/v1beta1/apps/{package}/{set}          freshnessInfo.freshnesses[].latestEndTime
    POST {base}/v1beta1/apps/{package}/{set}:query    the period ending there, sliced by versionCode
         {"timelineSpec": {"aggregationPeriod": "DAILY", "startTime": ..., "endTime": ...},
          "dimensions": ["versionCode"], "metrics": [..., "distinctUsers"], "filter": "versionCode = 8901"}

(https://developers.google.com/play/developer/reporting/reference/rest/v1beta1/vitals.crashrate/query).
The rates are fractions of distinct users, read as percents; samples are distinctUsers (the
rate's denominator, rounded by Google) and events the users the rate counts, round(rate x
users). The observed time is the metric set's freshness (the end of the latest complete period:
a day in America/Los_Angeles, or an hour in UTC), never the fetch time.

Auth is a service account's JSON key (by reference) and google-auth, scope playdeveloperreporting;
the OAuth token request goes to the key's token_uri. Both libraries speak httplib2's interface,
so the injected httpx client carries every request (its timeouts apply) through `_Transport`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httplib2
import httpx
from pydantic import Field

from conductor.connect.credentials import CredentialRef
from conductor.connect.http import USER_AGENT
from conductor.sources.pull._http import (
    BaseUrl,
    Call,
    Fault,
    PullConfig,
    SignalName,
    count,
    field,
    json_body,
    number,
    percent,
    pull,
    reading,
    status_fault,
    transport_fault,
)
from conductor.sources.pull.base import FetchResult, PullTarget, Reading

SCOPE = "https://www.googleapis.com/auth/playdeveloperreporting"
PlayMetric = Literal["crashRate", "userPerceivedCrashRate", "anrRate", "userPerceivedAnrRate"]
METRIC_SET = {"crashRate": "crashRateMetricSet", "userPerceivedCrashRate": "crashRateMetricSet",
              "anrRate": "anrRateMetricSet", "userPerceivedAnrRate": "anrRateMetricSet"}  # fmt: skip
PACKAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")
_RESOURCE = {"crashRateMetricSet": "crashrate", "anrRateMetricSet": "anrrate"}
_ZONE = {"DAILY": "America/Los_Angeles", "HOURLY": "UTC"}  # the only zones the metric sets support
_STEP = {"DAILY": timedelta(days=1), "HOURLY": timedelta(hours=1)}


class PlayVitalsConfig(PullConfig):
    """Android vitals of the release's versionCode in one app."""

    kind: Literal["play_vitals"]
    base_url: BaseUrl = "https://playdeveloperreporting.googleapis.com"
    package: str | None = Field(default=None, pattern=f"^{PACKAGE_NAME.pattern}$",
                                description="the app's package name; default: the track's")  # fmt: skip
    service_account: CredentialRef = Field(description="a service account's JSON key with 'View app information' on the app")
    aggregation: Literal["DAILY", "HOURLY"] = "DAILY"
    user_cohort: Literal["OS_PUBLIC", "OS_BETA", "APP_TESTERS"] | None = None
    signals: dict[SignalName, PlayMetric] = Field(min_length=1)


class _Transport:
    """httplib2's request() over the injected httpx client, for google-api-python-client and
    google-auth: every request noted, transport faults and error statuses (but a 401, which
    google-auth answers by refreshing the token once) raised as Faults, a 2xx that is not JSON too."""

    def __init__(self, client: httpx.Client, call: Call):
        self.client = client
        self.call = call
        self.last: httpx.Response | None = None

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
                redirections: int = 5, connection_type: Any = None, **_: Any) -> tuple[httplib2.Response, bytes]:  # fmt: skip
        sent = {k: v for k, v in (headers or {}).items() if k.lower() not in ("content-length", "user-agent")}
        sent["user-agent"] = USER_AGENT
        self.call.note(method, uri)
        try:
            response = self.client.request(method, uri, content=body, headers=sent)
        except httpx.HTTPError as exc:
            raise transport_fault(exc) from None
        self.last = response
        if not response.is_success and response.status_code != 401:
            raise status_fault(response, self.call.now)
        if response.is_success and response.content:
            json_body(response)
        dropped = ("content-encoding", "content-length")  # httpx has decoded and measured the body
        info: dict[str, Any] = {k.lower(): v for k, v in response.headers.items() if k.lower() not in dropped}
        info["status"] = str(response.status_code)
        return httplib2.Response(info), response.content


class PlayVitalsSource:
    """Reads the vitals metric sets the signals need, for the release's versionCode."""

    kind = "play_vitals"

    def __init__(self, config: PlayVitalsConfig, client: httpx.Client):
        self.config = config
        self.client = client
        self._service: Any = None
        self._credentials: Any = None
        self._key_digest: str | None = None

    def signals(self) -> tuple[str, ...]:
        return tuple(self.config.signals)

    def fetch(self, target: PullTarget, now: datetime) -> FetchResult:
        return pull("play vitals", self.signals(), self.client, now, lambda call: self._read(call, target))

    def _read(self, call: Call, target: PullTarget) -> Sequence[Reading]:
        package = self.config.package or target.package
        if not package or not PACKAGE_NAME.fullmatch(package):
            raise Fault(f"{package!r} is not an app's package name: set package, or give the track one" if package else "no package name")
        build = target.build
        if not build or not build.isascii() or not build.isdigit():
            raise Fault(f"release {target.version} has no versionCode (build) to slice the vitals by")
        transport = _Transport(self.client, call)
        http = self._authorized(call, transport)
        readings: list[Reading] = []
        for metric_set in dict.fromkeys(METRIC_SET[m] for m in self.config.signals.values()):
            wanted = {s: m for s, m in self.config.signals.items() if METRIC_SET[m] == metric_set}
            readings += self._metric_set(http, transport, package, metric_set, int(build), wanted)
        return [next(r for r in readings if r.signal == signal) for signal in self.signals()]

    def _authorized(self, call: Call, transport: _Transport) -> Any:
        from google.oauth2 import service_account
        from google_auth_httplib2 import AuthorizedHttp
        from googleapiclient.discovery import build

        key = call.secret(self.config.service_account)
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest != self._key_digest:
            try:
                info = json.loads(key)
            except ValueError:
                raise Fault(f"the service account key ({self.config.service_account.describe()}) is not JSON") from None
            try:
                self._credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])  # type: ignore[no-untyped-call]
            except (ValueError, KeyError, TypeError) as exc:
                raise Fault(f"the service account key ({self.config.service_account.describe()}) is not usable: {exc}") from None
            self._key_digest = digest
        if self._service is None:
            self._service = build("playdeveloperreporting", "v1beta1", http=transport, static_discovery=True, cache_discovery=False,
                                  client_options={"api_endpoint": self.config.base_url + "/"})  # fmt: skip
        return AuthorizedHttp(self._credentials, http=transport)

    def _execute(self, request: Any, http: Any, transport: _Transport) -> dict[str, Any]:
        from google.auth.exceptions import GoogleAuthError
        from googleapiclient.errors import HttpError

        try:
            answer = request.execute(http=http, num_retries=0)
        except HttpError:
            assert transport.last is not None
            raise status_fault(transport.last, transport.call.now) from None
        except GoogleAuthError as exc:
            last = transport.last
            if last is not None and not last.is_success:
                raise Fault(f"the token endpoint: {status_fault(last, transport.call.now).reason}") from None
            raise Fault(f"the service account's token: {' '.join(str(exc).split())[:200]}") from None
        if not isinstance(answer, dict):
            raise Fault("the answer is not an object")
        return answer

    def _metric_set(self, http: Any, transport: _Transport, package: str, metric_set: str, build: int,
                    wanted: Mapping[str, str]) -> list[Reading]:  # fmt: skip
        period = self.config.aggregation
        resource = getattr(self._service.vitals(), _RESOURCE[metric_set])()
        name = f"apps/{package}/{metric_set}"
        end = _freshness(self._execute(resource.get(name=name), http, transport), period, metric_set)
        body: dict[str, Any] = {
            "timelineSpec": {"aggregationPeriod": period, "startTime": _date_time(end - _STEP[period], period),
                             "endTime": _date_time(end, period)},
            "dimensions": ["versionCode"], "metrics": [*dict.fromkeys(wanted.values()), "distinctUsers"],
            "filter": f"versionCode = {build}", "pageSize": 100,
        }  # fmt: skip
        if self.config.user_cohort:
            body["userCohort"] = self.config.user_cohort
        row = _row_for(self._execute(resource.query(name=name, body=body), http, transport), build, metric_set, end)
        users = count(_decimal(row, "distinctUsers"), "distinctUsers")
        out = []
        for signal, metric in wanted.items():
            rate = number(_decimal(row, metric), metric)
            out.append(reading(signal, percent(rate, metric), end.astimezone(UTC), samples=users, events=round(rate * users)))
        return out


def _zone(value: dict[str, Any], period: str) -> Any:
    if isinstance(value.get("timeZone"), dict) and value["timeZone"].get("id"):
        try:
            return ZoneInfo(str(value["timeZone"]["id"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise Fault(f"unknown time zone {value['timeZone']['id']!r}") from None
    if isinstance(value.get("utcOffset"), str) and value["utcOffset"].endswith("s"):
        return timezone(timedelta(seconds=number(value["utcOffset"][:-1], "utcOffset")))
    return ZoneInfo(_ZONE[period])


def _civil(value: Any, period: str, what: str) -> datetime:
    """A google.type.DateTime as an aware datetime."""
    if not isinstance(value, dict):
        raise Fault(f"{what} is not a date-time")
    try:
        year, month, day, hours, minutes, seconds = (
            int(value.get(k, 0) or 0) for k in ("year", "month", "day", "hours", "minutes", "seconds")
        )
        return datetime(year, month, day, hours, minutes, seconds, tzinfo=_zone(value, period))
    except (TypeError, ValueError):
        raise Fault(f"{what} is not a date-time: {value}") from None


def _date_time(at: datetime, period: str) -> dict[str, Any]:
    """The request's google.type.DateTime for `at`: a day (DAILY) or an hour (HOURLY) in the set's zone."""
    local = at.astimezone(ZoneInfo(_ZONE[period]))
    out: dict[str, Any] = {"year": local.year, "month": local.month, "day": local.day}
    if period == "HOURLY":
        out["hours"] = local.hour
    out["timeZone"] = {"id": _ZONE[period]}
    return out


def _freshness(metric_set: dict[str, Any], period: str, name: str) -> datetime:
    freshnesses = field(metric_set, "freshnessInfo", "freshnesses")
    for entry in freshnesses if isinstance(freshnesses, list) else []:
        if isinstance(entry, dict) and entry.get("aggregationPeriod") == period:
            # Aware arithmetic on it is wall-clock arithmetic: a day back from midnight is the
            # previous midnight in the zone, across a DST change too.
            return _civil(field(entry, "latestEndTime"), period, "latestEndTime")
    raise Fault(f"{name} has no {period} freshness (a missing field)")


def _version_code(row: Any) -> str | None:
    for dim in row.get("dimensions", []) if isinstance(row, dict) else []:
        if isinstance(dim, dict) and dim.get("dimension") == "versionCode":
            return str(dim.get("int64Value", dim.get("stringValue")))
    return None


def _row_for(answer: dict[str, Any], build: int, metric_set: str, end: datetime) -> dict[str, Any]:
    rows = answer.get("rows") or []
    if not isinstance(rows, list) or not rows:
        raise Fault(f"no {metric_set} rows for versionCode {build} in the period ending {end:%Y-%m-%d %H:%M %Z} (an empty series)")
    codes = [_version_code(row) for row in rows]
    mine = [row for row, code in zip(rows, codes, strict=True) if code == str(build)]
    if not mine:
        raise Fault(f"the series is for versionCode {codes[0]}, not {build}")
    return max(mine, key=lambda row: _start_key(row.get("startTime")))


def _start_key(start: Any) -> tuple[int, ...]:
    if not isinstance(start, dict):
        return ()
    return tuple(int(start.get(k, 0) or 0) if str(start.get(k, 0) or 0).isdigit() else 0 for k in ("year", "month", "day", "hours"))


def _decimal(row: dict[str, Any], metric: str) -> Any:
    for value in row.get("metrics", []):
        if isinstance(value, dict) and value.get("metric") == metric:
            return field(value, "decimalValue", "value")
    raise Fault(f"the row has no {metric} (a missing field)")
