"""Every refusal as one JSON shape, {"error", "detail", "field"}, with the status its error class declares.

ConductorError subclasses carry their own http_status; FastAPI's validation errors become 422 naming
the field; a database outage is 503; anything else is a bug, logged, and answered 500 in the same
shape (never a traceback).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from conductor.domain.errors import ConductorError
from conductor.sources.errors import PayloadInvalid

log = structlog.get_logger("conductor.api")


class ErrorBody(BaseModel):
    """What went wrong, for every 4xx and 5xx answer."""

    error: str = Field(description="Error type, e.g. NotFound, Forbidden, PayloadInvalid, SignatureInvalid")
    detail: str = Field(description="What was refused and how to fix it")
    field: str | None = Field(default=None, description="The offending field, header or JSON path, when one is to blame")


class Unauthorized(ConductorError):
    """No valid API token was sent (Authorization: Bearer <token>)."""

    http_status = 401


class InvalidRequest(ConductorError):
    """A request value the models could not check on their own is invalid; `field` names it."""

    http_status = 422

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class RequestTimeout(ConductorError):
    """The request's body did not arrive in time."""

    http_status = 408


class ServiceUnavailable(ConductorError):
    """A dependency (database, broker) is unreachable; nothing was written, retry later."""

    http_status = 503


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or invalid credentials (API token or webhook signature)",
    403: "The token's role does not allow this (or four-eyes forbids it)",
    404: "No such resource",
    408: "The request's body did not arrive in time",
    409: "Conflict: stale version, illegal transition, superseded decision or duplicate",
    413: "Request body too large",
    422: "The request is well-formed but invalid; `field` names the problem",
    503: "The database or broker is unreachable; nothing was stored",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: ErrorBody for each status code given."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


_HTTP_NAMES = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 401: "Unauthorized", 403: "Forbidden"}


def error_response(status: int, error: str, detail: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error, detail=detail, field=field).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


def _methods_of(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(request.url.path):
            methods |= set(route_methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ConductorError)
    async def conductor_error(request: Request, exc: ConductorError) -> JSONResponse:
        field = exc.field if isinstance(exc, PayloadInvalid) else getattr(exc, "field", None)
        detail = exc.detail if isinstance(exc, PayloadInvalid) else str(exc)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        log.info("request_refused", error=type(exc).__name__, status=exc.http_status, detail=detail, field=field)
        return error_response(exc.http_status, type(exc).__name__, detail, field, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {"msg": "invalid request", "loc": ()}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        field = _field_of(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = f"malformed JSON: {first.get('ctx', {}).get('error', 'decode error')}"
            field = "body"
        return error_response(422, "ValidationError", f"{msg}{more}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; list every method of it.
            headers["Allow"] = ", ".join(_methods_of(request))
        return error_response(exc.status_code, name, str(exc.detail), None, headers or None)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("database_unavailable", error=str(exc).splitlines()[0][:300])
        return error_response(503, "ServiceUnavailable", "the database is unreachable; nothing was written, retry later")

    @app.exception_handler(DataError)
    async def bad_data(request: Request, exc: DataError) -> JSONResponse:
        # Input the request models should have refused; refuse it here rather than answer 500.
        log.warning("data_refused_by_database", error=str(exc).splitlines()[0][:300])
        return error_response(422, "InvalidInput", "a value is out of range or not storable")

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity_conflict", error=str(exc).splitlines()[0][:300])
        return error_response(409, "Conflict", "the write conflicts with existing data; reload and retry")

    @app.exception_handler(ClientDisconnect)
    async def aborted(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away while sending its body: its doing, not ours, and nobody reads the answer.
        log.info("request_aborted", reason="client disconnected before the body was complete")
        return error_response(400, "ClientDisconnect", "the request body was not completely sent")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request_crashed", error=type(exc).__name__)
        return error_response(500, "InternalError", "an unexpected error occurred; it was logged")
