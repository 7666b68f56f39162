"""vendor_http: the vendor's words, how long to wait, and which failures are retryable."""

from datetime import UTC, datetime

import httpx

from conductor.actions.vendor_http import classify, is_rate_limited, vendor_message, wait_s

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_the_vendors_own_words():
    assert vendor_message(httpx.Response(422, json={"message": "Validation Failed", "errors": [{"code": "already_exists"}]})) == (
        'Validation Failed; [{"code": "already_exists"}]'
    )
    assert vendor_message(httpx.Response(401, json={"detail": "Invalid API Key"})) == "Invalid API Key"
    assert vendor_message(httpx.Response(400, json={"message": {"base": ["Reference not found"]}})) == '{"base": ["Reference not found"]}'
    assert vendor_message(httpx.Response(502, text="<html>\n  Bad   Gateway</html>")) == "<html> Bad Gateway</html>"


def test_wait_from_retry_after_or_the_reset_time():
    assert wait_s(httpx.Response(429, headers={"Retry-After": "7", "x-ratelimit-reset": "1"}), NOW) == 7
    reset = int(NOW.timestamp()) + 90
    assert wait_s(httpx.Response(403, headers={"x-ratelimit-reset": str(reset)}), NOW) == 90
    assert wait_s(httpx.Response(429, headers={"RateLimit-Reset": "12"}), NOW) == 12  # a delta, as the IETF draft sends it
    assert wait_s(httpx.Response(403, headers={"x-ratelimit-reset": str(reset - 600)}), NOW) == 0
    assert wait_s(httpx.Response(503), NOW) is None


def test_rate_limit_or_permission():
    assert is_rate_limited(httpx.Response(403, headers={"x-ratelimit-remaining": "0"}))
    assert is_rate_limited(httpx.Response(403, json={"message": "You have exceeded a secondary rate limit."}))
    assert not is_rate_limited(httpx.Response(403, json={"message": "Resource not accessible by integration"}))
    denied = classify(httpx.Response(403, json={"message": "Resource not accessible by integration"}), "tag", "credential env T")
    assert not denied.retryable and "not permitted for credential env T" in str(denied)
    assert classify(httpx.Response(409, json={"message": "conflict"}), "x", "c").retryable is False
    assert classify(httpx.Response(504), "x", "c").retryable
