"""HTTP delivery shared by the adapters: Standard Webhooks signing and one failure policy.

Retry policy: timeouts, connection errors, 408, 425, 429 and 5xx can succeed later (retryable);
any other 4xx means the receiver refused this request or its configuration is wrong, so trying
the same request again cannot help (not retryable; it is shown on the release instead).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from conductor.actions.base import ActionFailed
from conductor.connect.http import USER_AGENT, retry_after_s

__all__ = ["USER_AGENT", "failure", "make_client", "post_json", "response_summary", "retry_after_s", "standard_webhook_headers"]

RETRYABLE_STATUS = {408, 425, 429}


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def standard_webhook_headers(secret: str, msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """webhook-id / webhook-timestamp / webhook-signature for `body`, signed with `secret` (standardwebhooks)."""
    from standardwebhooks.webhooks import Webhook

    ts = now or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=ts, data=body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(ts.timestamp())), "webhook-signature": signature}


def post_json(
    client: httpx.Client,
    url: str,
    payload: dict[str, Any],
    *,
    what: str,
    idempotency_key: str,
    secret: str | None = None,
) -> httpx.Response:
    """POST `payload` as JSON (signed when a secret is given); ActionFailed naming `what` unless 2xx."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, "idempotency-key": idempotency_key}
    if secret:
        headers.update(standard_webhook_headers(secret, idempotency_key, body))
    try:
        response = client.post(url, content=body.encode(), headers=headers)
    except httpx.TimeoutException as exc:
        raise ActionFailed(f"{what}: timed out ({exc.__class__.__name__})") from None
    except httpx.HTTPError as exc:
        raise ActionFailed(f"{what}: {exc.__class__.__name__}: {_short(str(exc))}") from None
    if response.is_success:
        return response
    raise failure(response, what)


def failure(response: httpx.Response, what: str) -> ActionFailed:
    """The ActionFailed for a non-2xx answer: retryable for 408, 425, 429 and 5xx, carrying the
    Retry-After; any other 4xx is the request's or the configuration's fault, not retryable."""
    retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUS
    return ActionFailed(f"{what}: HTTP {response.status_code}: {_short(response.text)}", retryable=retryable,
                        retry_after=retry_after_s(response))  # fmt: skip


def response_summary(response: httpx.Response) -> dict[str, Any]:
    """What to keep of a receiver's answer: the status and a JSON body (or the start of a text one)."""
    out: dict[str, Any] = {"status_code": response.status_code}
    if response.content:
        try:
            data = response.json()
            out["body"] = data if len(response.content) <= 4000 else _short(response.text, 4000)
        except ValueError:
            out["body"] = _short(response.text, 1000)
    return out


def make_client(timeout_s: float) -> httpx.Client:
    """The adapters' HTTP client: bounded time per call so a stuck receiver cannot hold a worker."""
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)), follow_redirects=False)
