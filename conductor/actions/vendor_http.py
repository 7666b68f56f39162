"""Calls to vendors' admin APIs (GitLab, Unleash, Flagsmith over httpx; GitHub's answers come
through githubkit but are judged here too): one request helper and one error policy that names
the credential reference, never the secret.

    401                  bad credentials: the reference is named; not retryable (a human fixes it)
    403                  a rate limit (Retry-After, a remaining-count header at 0, or "rate limit"
                         in the message) is retryable after its wait; otherwise a missing
                         permission, not retryable
    404                  not there, or the credential cannot see it: not retryable
    408, 425, 429, 5xx   retryable, after Retry-After or the rate limit's reset time
    timeouts, connection errors   retryable: the adapters read before they write, so a retry
                         after a request that was applied but answered late does nothing twice
    any other 4xx        the vendor's own message; not retryable
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from conductor.actions.base import ActionFailed
from conductor.actions.http import RETRYABLE_STATUS, USER_AGENT, retry_after_s
from conductor.connect.credentials import CredentialError, CredentialRef

RATE_REMAINING = ("x-ratelimit-remaining", "ratelimit-remaining")  # GitHub; GitLab (and the IETF draft)
RATE_RESET = ("x-ratelimit-reset", "ratelimit-reset")  # epoch seconds on both


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wait_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """How long the vendor asked us to wait: Retry-After, else the rate limit's reset time."""
    after = retry_after_s(response, now)
    if after is not None:
        return after
    for name in RATE_RESET:
        value = response.headers.get(name, "").strip()
        if value.isascii() and value.isdigit():
            reset = int(value)
            if reset < 1_000_000_000:  # a delta in seconds, as some proxies send it
                return float(reset)
            return max(reset - (now or datetime.now(UTC)).timestamp(), 0.0)
    return None


def vendor_message(response: httpx.Response) -> str:
    """The vendor's own words: message/detail/error fields of a JSON body, else the start of the text."""
    try:
        data = response.json()
    except ValueError:
        return shorten(response.text) or response.reason_phrase
    if not isinstance(data, dict):
        return shorten(json.dumps(data))
    parts = [v if isinstance(v, str) else json.dumps(v) for k in ("message", "detail", "error", "error_description") if (v := data.get(k))]
    errors = data.get("errors") or data.get("details")
    if errors:
        parts.append(json.dumps(errors))
    return shorten("; ".join(parts) if parts else json.dumps(data))


def is_rate_limited(response: httpx.Response) -> bool:
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    if "retry-after" in response.headers or any(response.headers.get(h) == "0" for h in RATE_REMAINING):
        return True
    return "rate limit" in response.text.lower()


def classify(response: httpx.Response, what: str, credential: str) -> ActionFailed:
    """The ActionFailed for a vendor's non-2xx answer (see the module docstring)."""
    status, message = response.status_code, vendor_message(response)
    if status == 401:
        return ActionFailed(f"{what}: HTTP 401: bad credentials ({credential}): {message}", retryable=False)
    if is_rate_limited(response):
        return ActionFailed(f"{what}: HTTP {status}: rate limited: {message}", retry_after=wait_s(response))
    if status == 403:
        return ActionFailed(f"{what}: HTTP 403: not permitted for {credential}: {message}", retryable=False)
    if status == 404:
        return ActionFailed(f"{what}: HTTP 404: not found, or {credential} cannot see it: {message}", retryable=False)
    retryable = status >= 500 or status in RETRYABLE_STATUS
    return ActionFailed(f"{what}: HTTP {status}: {message}", retryable=retryable, retry_after=wait_s(response) if retryable else None)


def transport_failure(exc: Exception, what: str) -> ActionFailed:
    """A request that got no answer: retryable (the next attempt reads what the vendor has first)."""
    if isinstance(exc, httpx.TimeoutException):
        return ActionFailed(f"{what}: timed out ({exc.__class__.__name__}); it may have been applied, the retry reads first")
    return ActionFailed(f"{what}: {exc.__class__.__name__}: {shorten(str(exc))}")


def read_secret(ref: CredentialRef) -> str:
    """The secret, or a non-retryable ActionFailed naming the reference."""
    try:
        return ref.read().strip()
    except CredentialError as exc:
        raise ActionFailed(str(exc), retryable=False) from None


class VendorApi:
    """One vendor's base URL and auth header over a shared httpx.Client; answers other than 2xx
    (and the statuses a caller expects, such as 404 for "not there yet") become ActionFailed."""

    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        credential: CredentialRef,
        auth: Callable[[str], Mapping[str, str]],
        timeout_s: float | None = None,
    ):
        self.client, self.base_url, self.credential, self._auth = client, base_url.rstrip("/"), credential, auth
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)) if timeout_s else None

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send; return a 2xx answer or one whose status is in `expect`; otherwise raise ActionFailed."""
        headers = {"accept": "application/json", "user-agent": USER_AGENT, **self._auth(read_secret(self.credential))}
        try:
            timeout = self.timeout or self.client.timeout
            response = self.client.request(method, self.base_url + path, json=json_body, params=params, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise transport_failure(exc, what) from None
        if response.is_success or response.status_code in expect:
            return response
        raise classify(response, what, f"credential {self.credential.describe()}")
