"""Google Play Developer Reporting API v1beta1 (vitals crash and ANR rate metric sets) and Google's
OAuth token endpoint for a service account, as documented.

GET  /v1beta1/apps/{app}/crashRateMetricSet | anrRateMetricSet          -> freshnessInfo
POST /v1beta1/apps/{app}/crashRateMetricSet:query | anrRateMetricSet:query  -> rows
    https://developers.google.com/play/developer/reporting/reference/rest/v1beta1/vitals.crashrate
    https://developers.google.com/play/developer/reporting/reference/rest/v1beta1/vitals.anrrate
    https://developers.google.com/play/developer/reporting/metricset-queries (freshness, then query)
POST /token  (grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer, assertion=<RS256 JWT>)
    https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests

Checked per request:
- the token request: the grant type, the JWT's RS256 signature against the service account's
  public key, its kid, iss (the client email), aud (the token_uri), scope (playdeveloperreporting)
  and a lifetime of at most an hour;
- the reporting calls: Authorization: Bearer <a token this endpoint issued>, a known package and
  metric set;
- the query body against the discovery document's request schema bundled with
  google-api-python-client (GooglePlayDeveloperReportingV1beta1Query{CrashRate,AnrRate}MetricSetRequest:
  no unknown fields, types, enums), then what its descriptions require: supported metrics and
  dimensions of the set, a DAILY timeline aligned to days in America/Los_Angeles or an HOURLY one
  aligned to hours in UTC, start before end, end not past the set's freshness, and a filter of the
  form versionCode = N (AIP-160 equality).

Answers are the documented shapes: a metric set with freshnessInfo.freshnesses[] (aggregationPeriod,
latestEndTime as google.type.DateTime), and query rows with startTime, aggregationPeriod,
dimensions [{dimension: versionCode, int64Value}] and metrics [{metric, decimalValue: {value}}]
(rates as fractions in decimal strings, distinctUsers rounded as Google rounds it).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import googleapiclient
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.server import FakeServer, Reply, Request

SCOPE = "https://www.googleapis.com/auth/playdeveloperreporting"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # "always", whatever token_uri is (the service-account page)
DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "playdeveloperreporting.v1beta1.json"
REQUEST_SCHEMA = {
    "crashRateMetricSet": "GooglePlayDeveloperReportingV1beta1QueryCrashRateMetricSetRequest",
    "anrRateMetricSet": "GooglePlayDeveloperReportingV1beta1QueryAnrRateMetricSetRequest",
}
METRICS = {  # from the metric sets' descriptions in the discovery document
    "crashRateMetricSet": {"crashRate", "crashRate7dUserWeighted", "crashRate28dUserWeighted", "userPerceivedCrashRate",
                           "userPerceivedCrashRate7dUserWeighted", "userPerceivedCrashRate28dUserWeighted", "distinctUsers"},
    "anrRateMetricSet": {"anrRate", "anrRate7dUserWeighted", "anrRate28dUserWeighted", "userPerceivedAnrRate",
                         "userPerceivedAnrRate7dUserWeighted", "userPerceivedAnrRate28dUserWeighted", "distinctUsers"},
}  # fmt: skip
DIMENSIONS = {"apiLevel", "versionCode", "deviceModel", "deviceBrand", "deviceType", "countryCode", "deviceRamBucket", "deviceSocMake",
              "deviceSocModel", "deviceCpuMake", "deviceCpuModel", "deviceGpuMake", "deviceGpuModel", "deviceGpuVersion",
              "deviceVulkanVersion", "deviceGlEsVersion", "deviceScreenSize", "deviceScreenDpi"}  # fmt: skip
ZONES = {"DAILY": "America/Los_Angeles", "HOURLY": "UTC"}


def throwaway_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_key(token_uri: str, key: rsa.RSAPrivateKey) -> tuple[dict[str, str], rsa.RSAPublicKey]:
    """A service account JSON key made of a throwaway RSA key, whose token_uri is the fake's; and its public key."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    info = {
        "type": "service_account", "project_id": "acme-release", "private_key_id": "fake-key-1", "private_key": pem,
        "client_email": "conductor@acme-release.iam.gserviceaccount.com", "client_id": "1234567890", "token_uri": token_uri,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "universe_domain": "googleapis.com",
    }  # fmt: skip
    return info, key.public_key()


def schema_problems(value: Any, schema: dict[str, Any], schemas: dict[str, Any], path: str) -> list[str]:
    """Where `value` breaks a discovery document schema (objects, arrays, strings, enums, integers)."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        props = schema.get("properties", {})
        out = [f"{path}.{k}: not a field of the schema" for k in value if k not in props]
        return out + [p for k, v in value.items() if k in props for p in schema_problems(v, props[k], schemas, f"{path}.{k}")]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: not an array"]
        return [p for i, v in enumerate(value) for p in schema_problems(v, schema["items"], schemas, f"{path}[{i}]")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: not a string"]
        return [f"{path}: {value!r} is not one of the enum"] if "enum" in schema and value not in schema["enum"] else []
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool) and (schema.get("format") != "int32" or -(2**31) <= value < 2**31)
        return [] if ok else [f"{path}: not an {schema.get('format', 'integer')}"]
    return []


def date_time(at: datetime, period: str) -> dict[str, Any]:
    local = at.astimezone(ZoneInfo(ZONES[period]))
    out: dict[str, Any] = {"year": local.year, "month": local.month, "day": local.day}
    if period == "HOURLY":
        out["hours"] = local.hour
    return out | {"timeZone": {"id": ZONES[period]}}


class FakePlayReporting:
    def __init__(self, server: FakeServer, *, package: str, service_account: dict[str, str], public_key: rsa.RSAPublicKey):
        self.server = server
        self.package = package
        self.account = service_account
        self.public_key = public_key
        self.tokens: set[str] = set()
        self.discovery = json.loads(DISCOVERY.read_text())
        # the end (exclusive) of the latest complete period per aggregation period
        self.fresh = {"DAILY": datetime(2026, 11, 29, tzinfo=ZoneInfo("America/Los_Angeles")),
                      "HOURLY": datetime(2026, 11, 30, 8, tzinfo=UTC)}  # fmt: skip
        # (metric set, versionCode) -> metric -> decimal string
        self.rows: dict[tuple[str, int], dict[str, str]] = {}
        self.queries: list[dict[str, Any]] = []
        server.route("POST", r"/token", self._token)
        server.route("GET", r"/v1beta1/apps/(?P<app>[^/]+)/(?P<set>crashRateMetricSet|anrRateMetricSet)", self._metric_set)
        server.route("POST", r"/v1beta1/apps/(?P<app>[^/]+)/(?P<set>crashRateMetricSet|anrRateMetricSet):query", self._query)

    # ------------------------------------------------------------ OAuth

    def _jwt_problem(self, assertion: str) -> str | None:
        try:
            head, body, sig = assertion.split(".")
            header = json.loads(_unb64(head))
            claims = json.loads(_unb64(body))
            self.public_key.verify(_unb64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            return "the assertion is not a JWT signed with the service account's key"
        if header.get("alg") != "RS256" or header.get("kid") != self.account["private_key_id"]:
            return "the JWT header must be alg RS256 with the key's id as kid"
        if claims.get("iss") != self.account["client_email"] or claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return f"iss must be the client email and aud {GOOGLE_TOKEN_AUDIENCE}"
        if SCOPE not in str(claims.get("scope", "")).split():
            return f"scope must include {SCOPE}"
        if not (isinstance(claims.get("iat"), int) and isinstance(claims.get("exp"), int) and 0 < claims["exp"] - claims["iat"] <= 3600):
            return "iat and exp must be set, exp at most an hour after iat"
        return None

    def _token(self, req: Request) -> Reply:
        form = parse_qs(req.body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self.server.reject(req, "grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer")
        problem = self._jwt_problem((form.get("assertion") or [""])[0])
        if problem:
            return self.server.reject(req, problem)
        token = f"ya29.fake-{len(self.tokens) + 1}-{int(time.time())}"
        self.tokens.add(token)
        return Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # ------------------------------------------------------------ reporting

    def _call_problem(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.tokens:
            return "Authorization must be Bearer <an access token from the token endpoint>"
        if req.match is None or req.match["app"] != self.package:
            return f"unknown app (expected apps/{self.package})"
        return None

    def _metric_set(self, req: Request) -> Reply:
        problem = self._call_problem(req)
        if problem:
            return self.server.reject(req, problem)
        assert req.match is not None
        freshnesses = [{"aggregationPeriod": p, "latestEndTime": date_time(at, p)} for p, at in self.fresh.items()]
        return Reply(200, {"name": f"apps/{self.package}/{req.match['set']}", "freshnessInfo": {"freshnesses": freshnesses}})

    def _query_problem(self, metric_set: str, body: Any) -> str | None:
        schemas = self.discovery["schemas"]
        problems = schema_problems(body, schemas[REQUEST_SCHEMA[metric_set]], schemas, "body")
        if problems:
            return "; ".join(problems)
        if set(body.get("metrics", [])) - METRICS[metric_set]:
            return f"unsupported metrics {sorted(set(body['metrics']) - METRICS[metric_set])} for {metric_set}"
        if set(body.get("dimensions", [])) - DIMENSIONS:
            return f"unsupported dimensions {sorted(set(body['dimensions']) - DIMENSIONS)}"
        spec = body.get("timelineSpec", {})
        period = spec.get("aggregationPeriod")
        if period not in ZONES:
            return "timelineSpec.aggregationPeriod must be DAILY or HOURLY for this metric set"
        for end in ("startTime", "endTime"):
            value = spec.get(end, {})
            if value.get("timeZone", {"id": ZONES[period]}).get("id") != ZONES[period] or "utcOffset" in value:
                return f"timelineSpec.{end}: {period} supports only the {ZONES[period]} time zone"
            if any(
                k in value for k in (("minutes", "seconds", "nanos") if period == "HOURLY" else ("hours", "minutes", "seconds", "nanos"))
            ):
                return f"timelineSpec.{end} must be aligned to the {period} period"
        start, end = _at(spec["startTime"], period), _at(spec["endTime"], period)
        if not start < end <= self.fresh[period]:
            return "the timeline must start before it ends, and end no later than the set's freshness"
        filt = body.get("filter", "")
        if filt and not (filt.startswith("versionCode = ") and filt.removeprefix("versionCode = ").isdigit()):
            return f"filter {filt!r}: expected versionCode = N"
        return None

    def _query(self, req: Request) -> Reply:
        problem = self._call_problem(req)
        assert req.match is not None
        metric_set = req.match["set"]
        body = req.json()
        problem = problem or self._query_problem(metric_set, body)
        if problem:
            return self.server.reject(req, problem)
        self.queries.append(body)
        spec = body["timelineSpec"]
        period = spec["aggregationPeriod"]
        start, end = _at(spec["startTime"], period), _at(spec["endTime"], period)
        step = timedelta(days=1) if period == "DAILY" else timedelta(hours=1)
        wanted = int(body["filter"].removeprefix("versionCode = ")) if body.get("filter") else None
        rows = []
        for (set_name, code), values in sorted(self.rows.items()):
            if set_name != metric_set or (wanted is not None and code != wanted):
                continue
            at = start
            while at < end:
                metrics = [{"metric": m, "decimalValue": {"value": values[m]}} for m in body.get("metrics", []) if m in values]
                dims = [{"dimension": "versionCode", "int64Value": str(code)}] if "versionCode" in body.get("dimensions", []) else []
                rows.append({"aggregationPeriod": period, "startTime": date_time(at, period), "dimensions": dims, "metrics": metrics})
                at += step
        return Reply(200, {"rows": rows})


def _at(value: dict[str, Any], period: str) -> datetime:
    zone = ZoneInfo(value.get("timeZone", {}).get("id", ZONES[period]))
    return datetime(value["year"], value["month"], value["day"], value.get("hours", 0), tzinfo=zone)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
