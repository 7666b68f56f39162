"""What the pulled sources share: one fetch's HTTP, its faults as readings, templates and values.

A source's fetch runs inside `pull()`: every request goes through a `Call`, which notes what was
asked (the URL with secrets redacted, for `conductor sources check`) and turns every vendor fault
into a `Fault`: a timeout, a connection error, an HTTP error status (a 429's or 503's Retry-After
handed back), an HTML page or a body that is not JSON. The source raises `Fault` too for what it
finds wrong in a well-formed answer (a missing field, an empty series, a series for another
release). `pull()` turns a fault into one failed reading per signal of the source, with the
reason prefixed by the source's name and every secret read during the fetch blanked out of it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, field_validator

from conductor.connect.credentials import CredentialError, CredentialRef
from conductor.connect.http import USER_AGENT, retry_after_s
from conductor.domain.definition import Duration
from conductor.sources.pull.base import FetchResult, PullTarget, Reading

MIN_INTERVAL = timedelta(seconds=30)
DETAIL_LIMIT = 200
_SECRET_PARAM = re.compile(r"token|key|secret|password|passwd|signature|sig|auth|credential", re.IGNORECASE)

Params = Sequence[tuple[str, str]] | Mapping[str, str] | None
SignalName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Fault(Exception):
    """A vendor fault or an answer that cannot be read: every signal of the source fails with it."""

    def __init__(self, reason: str, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


# ------------------------------------------------------------------ configuration


def _base_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) base URL such as https://sentry.example.com")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("a base URL has no credentials, query or fragment (credentials go in a credential reference)")
    return value.strip().rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_base_url)]


class PullConfig(BaseModel):
    """Every pulled source's configuration: how often to poll, and nothing unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: Duration = timedelta(minutes=5)

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, value: timedelta) -> timedelta:
        if value < MIN_INTERVAL:
            raise ValueError(f"poll at most every {MIN_INTERVAL.seconds}s (vendors rate-limit); e.g. 5m")
        return value


# Placeholders a query or URL template may use: the PullTarget's fields. Other braces are left as
# they are, so PromQL's label matchers ({job="api"}) need no escaping.
PLACEHOLDERS = ("version", "track", "stage", "build", "release_name", "package")
_WORD_IN_BRACES = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def known_placeholders(text: str, extra: Sequence[str] = ()) -> str:
    """`text`, when every {word} in it is a placeholder (or one of `extra`); ValueError otherwise."""
    allowed = (*PLACEHOLDERS, *extra)
    unknown = sorted({m[1] for m in _WORD_IN_BRACES.finditer(text)} - set(allowed))
    if unknown:
        known = ", ".join("{" + p + "}" for p in allowed)
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; a template may use {known}")
    return text


Template = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(known_placeholders)]


def expand(template: str, target: PullTarget, escape: Callable[[str], str] = str, extra: Mapping[str, str] | None = None) -> str:
    """`template` with each placeholder replaced by the target's value (or `extra`'s), escaped; a
    Fault when the release has no value for one it uses (no build number yet, say)."""
    names = (*PLACEHOLDERS, *(extra or {}))

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name not in names:
            return match[0]
        value = extra[name] if extra and name in extra else getattr(target, name)
        if value is None or value == "":
            raise Fault(f"the query uses {{{name}}} but release {target.version} has none")
        return escape(str(value))

    return _WORD_IN_BRACES.sub(one, template)


# ------------------------------------------------------------------ one fetch's HTTP


def redact_url(url: str) -> str:
    """The URL as shown in notes: no user info, and secret-looking query values blanked."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))


def _short(text: str, limit: int = DETAIL_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _media_type(response: httpx.Response) -> str:
    media_type: str = response.headers.get("content-type", "")
    return media_type.split(";")[0].strip().lower()


def _is_json_type(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _looks_like_html(response: httpx.Response) -> bool:
    return "html" in _media_type(response) or response.content.lstrip()[:1] == b"<"


def _error_message(data: Any) -> str | None:
    """The message of a JSON error body, as the common vendors shape it."""
    if not isinstance(data, dict):
        return None
    for key in ("detail", "message", "error_description", "error", "errorMessages", "errors"):
        value = data.get(key)
        if isinstance(value, dict):  # Google: {"error": {"code": 403, "message": "...", "status": "..."}}
            value = value.get("message") or value.get("status")
        if isinstance(value, list):
            value = "; ".join(str(v.get("message", v) if isinstance(v, dict) else v) for v in value[:3])
        if isinstance(value, str) and value:
            error_type = data.get("errorType")  # Prometheus names the kind of error beside it
            return f"{error_type}: {value}" if isinstance(error_type, str) and error_type else value
    return None


def _body_detail(response: httpx.Response) -> str:
    if not response.content:
        return ""
    if _looks_like_html(response):
        return " (an HTML page, not JSON)"
    if _is_json_type(_media_type(response)):
        try:
            message = _error_message(json.loads(response.content))
        except ValueError:
            message = None
        return f": {_short(message)}" if message else ""
    return f": {_short(response.text)}"


def status_fault(response: httpx.Response, now: datetime) -> Fault:
    """The Fault for a non-2xx answer, carrying the vendor's wait: Retry-After, or GitHub's
    x-ratelimit-reset on a 403/429 with no requests left."""
    status = response.status_code
    wait = retry_after_s(response, now)
    if wait is None and status in (403, 429) and response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset", "")
        if reset.isascii() and reset.isdigit():
            wait = max(int(reset) - now.timestamp(), 0.0)
    if status == 429 or (status == 403 and wait is not None):
        return Fault(f"HTTP {status} (rate limited{'' if wait is None else f'; retry after {wait:g} s'})", retry_after_s=wait)
    return Fault(f"HTTP {status}{_body_detail(response)}", retry_after_s=wait)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_body(response: httpx.Response) -> Any:
    """A successful answer's JSON; a Fault for an HTML page, another content type or a body that
    does not parse."""
    status = response.status_code
    media_type = _media_type(response)
    if _looks_like_html(response) and not _is_json_type(media_type):
        raise Fault(f"HTTP {status} but an HTML page, not JSON")
    if media_type and not _is_json_type(media_type):
        raise Fault(f"HTTP {status} but {media_type}, not JSON")
    try:
        return json.loads(response.content, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise Fault(f"HTTP {status} but the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise Fault(f"HTTP {status} but the body is not JSON ({_short(str(exc), 80)})") from None


def transport_fault(exc: httpx.HTTPError) -> Fault:
    """A timeout or a connection failure; the exception's text is left out (it can carry the URL)."""
    if isinstance(exc, httpx.TimeoutException):
        return Fault(f"no answer in time ({exc.__class__.__name__})")
    return Fault(f"could not reach it ({exc.__class__.__name__})")


class Call:
    """One fetch's requests: each noted (secrets redacted), each vendor fault a Fault."""

    def __init__(self, client: httpx.Client, now: datetime):
        self.client = client
        self.now = now
        self.notes: list[str] = []
        self._secrets: list[str] = []

    def secret(self, ref: CredentialRef) -> str:
        """The secret's text (stripped), remembered so that no reason or note can show it."""
        try:
            value = ref.read().strip()
        except CredentialError as exc:
            raise Fault(str(exc)) from None
        if not value:
            raise Fault(f"credential {ref.describe()} is empty")
        self._secrets.append(value)
        return value

    def hide(self, derived: str) -> None:
        """Keep a text made from a secret (Basic auth's base64) out of reasons and notes too."""
        self._secrets.append(derived)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            for form in (secret, quote(secret, safe=""), quote_plus(secret)):
                text = text.replace(form, "***")
        return text

    def note(self, method: str, url: str) -> None:
        self.notes.append(f"{method} {redact_url(url)}")

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Params = None,
        headers: Mapping[str, str] | None = None,
        json_payload: Any = None,
    ) -> httpx.Response:
        """The answer to one request: a 2xx, or a Fault."""
        all_headers = {"accept": "application/json", "user-agent": USER_AGENT, **(headers or {})}
        query = tuple(params.items() if isinstance(params, Mapping) else params or ())
        request = self.client.build_request(method, url, params=query or None, headers=all_headers, json=json_payload)
        self.note(method, str(request.url))
        try:
            response = self.client.send(request)
        except httpx.HTTPError as exc:
            raise transport_fault(exc) from None
        if not response.is_success:
            raise status_fault(response, self.now)
        return response

    def get_json(self, url: str, *, params: Params = None,
                 headers: Mapping[str, str] | None = None) -> Any:  # fmt: skip
        return json_body(self.send("GET", url, params=params, headers=headers))

    def post_json(self, url: str, payload: Any, *, headers: Mapping[str, str] | None = None) -> Any:
        return json_body(self.send("POST", url, headers=headers, json_payload=payload))


def pull(what: str, signals: Sequence[str], client: httpx.Client, now: datetime, work: Callable[[Call], Sequence[Reading]]) -> FetchResult:
    """Run one fetch: `work`'s readings, or a failed reading per signal naming the fault."""
    call = Call(client, now)
    started = time.perf_counter()
    retry: float | None = None
    try:
        readings = tuple(work(call))
    except Fault as fault:
        reason = call.scrub(f"{what}: {fault.reason}")
        readings = tuple(Reading.failed(signal, now, reason) for signal in signals)
        retry = fault.retry_after_s
    latency = time.perf_counter() - started
    return FetchResult(readings, retry_after_s=retry, latency_s=latency, notes=tuple(call.scrub(n) for n in call.notes))


# ------------------------------------------------------------------ values


def field(data: Any, *path: str) -> Any:
    """data[path[0]][path[1]]...; a Fault naming the first missing key."""
    for depth, key in enumerate(path):
        if not isinstance(data, dict) or key not in data:
            raise Fault(f"the answer has no {'.'.join(path[: depth + 1])} (a missing field)")
        data = data[key]
    return data


def number(value: Any, what: str) -> float:
    """A finite number from a JSON number or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Fault(f"{what} is {_short(repr(value), 60)}, not a number")
    try:
        result = float(value)
    except (ValueError, OverflowError):
        raise Fault(f"{what} is {_short(repr(value), 60)}, not a number") from None
    if not math.isfinite(result):
        raise Fault(f"{what} is {value}, not a finite number")
    return result


def count(value: Any, what: str) -> int:
    """A non-negative whole number from a JSON number or a numeric string."""
    result = number(value, what)
    if result < 0 or result != int(result):
        raise Fault(f"{what} is {value}, not a count")
    return int(result)


def percent(rate: float, what: str) -> float:
    """A rate in 0..1 as a percent (float noise rounded off)."""
    if not 0.0 <= rate <= 1.0:
        raise Fault(f"{what} is {rate:g}, not a rate between 0 and 1")
    return round(rate * 100.0, 9)


def timestamp(value: Any, what: str) -> datetime:
    """An aware UTC time from ISO 8601 (naive means UTC) or epoch seconds; a number above 1e11 is
    taken as epoch milliseconds (1e11 seconds is the year 5138)."""
    if isinstance(value, str) and not re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value):
        try:
            at = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise Fault(f"{what} is {_short(repr(value), 60)}, not an ISO 8601 time or epoch seconds") from None
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    seconds = number(value, what)
    if abs(seconds) > 1e11:
        seconds /= 1000.0
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Fault(f"{what} is {value}, not a time") from None


def reading(signal: str, value: float, at: datetime, samples: int | None = None, events: int | None = None) -> Reading:
    """A reading whose counts hold together (events are some of the samples)."""
    if events is not None and (samples is None or events > samples):
        raise Fault(f"{signal}: {events} events cannot exceed {samples} samples")
    return Reading(signal, value, at, samples=samples, events=events)
