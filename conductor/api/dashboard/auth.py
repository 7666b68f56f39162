"""Dashboard sessions: an API token is exchanged once for a signed session cookie.

The cookie holds the token's row id, a CSRF secret and a timestamp, signed with itsdangerous
(not encrypted: it holds nothing secret but the CSRF value, which the page shows anyway). It is
HttpOnly, SameSite=Strict, and Secure when the request came over TLS. Every request re-reads the
token row, so revoking the token ends its sessions at once. Every form carries the session's CSRF
token (synchronizer token); the login form, before any session exists, a double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import structlog
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from conductor.context import Context
from conductor.service.tokens import Principal, active_token

log = structlog.get_logger("conductor.dashboard")

SESSION_COOKIE = "conductor_session"
LOGIN_CSRF_COOKIE = "conductor_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECRET_ENV = "CONDUCTOR_SESSION_SECRET"


@dataclass(frozen=True)
class DashboardSession:
    principal: Principal
    csrf: str
    token_id: int


def session_secret(given: str | None) -> str:
    """The signing key: the one configured (Settings.session_secret), else a random one per process."""
    if given:
        return given
    # Without a configured key sessions end when the process restarts and are not shared by workers.
    log.warning("session_secret_generated", hint=f"set {SECRET_ENV} to keep sessions across restarts and workers")
    return secrets.token_urlsafe(32)


def is_tls(request: Request) -> bool:
    # uvicorn --proxy-headers rewrites the scheme from X-Forwarded-Proto for trusted proxies.
    return request.url.scheme == "https"


class Sessions:
    def __init__(self, secret: str, max_age: timedelta):
        self.max_age = max_age
        self._signer = URLSafeTimedSerializer(secret, salt="conductor.dashboard.session")

    def read(self, request: Request, ctx: Context) -> DashboardSession | None:
        """The session of this request if its cookie is valid and its token not revoked, else None."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._signer.loads(raw, max_age=int(self.max_age.total_seconds()))
            token_id, csrf = int(data["t"]), str(data["c"])
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        principal = active_token(ctx, token_id)
        return DashboardSession(principal, csrf, token_id) if principal is not None else None

    def start(self, request: Request, response: Response, token_id: int) -> None:
        """Set a fresh session cookie (a new CSRF secret every login)."""
        value = self._signer.dumps({"t": token_id, "c": secrets.token_urlsafe(32)})
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(self.max_age.total_seconds()),
            path="/",
            httponly=True,
            secure=is_tls(request),
            samesite="strict",
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def login_csrf_token(request: Request) -> str:
    """The double-submit token for the login form: the cookie's value, or a new one."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_login_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/", httponly=True, secure=is_tls(request), samesite="strict")


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
