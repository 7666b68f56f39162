"""The FastAPI app factory: webhooks, REST, dashboard, health and metrics around one wired Conductor.

Nothing is built at import time: `create_app()` takes a wired app from conductor.bootstrap (by
default: built from the environment's settings, with Celery when CONDUCTOR_BROKER_URL is set and
the embedded runner otherwise, which then runs for the API's lifetime) and adds the routers.
`conductor api` serves it with uvicorn; `uvicorn --factory conductor.api:create_app` works too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog
from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conductor.api import freezes, health, releases, replays, tracks, webhooks
from conductor.api.dashboard import build_router as dashboard_router
from conductor.api.deps import ApiState
from conductor.api.errors import install_error_handlers
from conductor.api.limits import BodyLimit
from conductor.api.metrics import ApiMetrics
from conductor.domain.errors import ConductorError
from conductor.sources.generic import GenericEvent
from conductor.sources.junit import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from conductor.bootstrap import App
    from conductor.config import Settings
    from conductor.context import Context

log = structlog.get_logger("conductor.api")

WEBHOOK_MAX_BYTES = 5_000_000  # CI events are kilobytes; a push with thousands of commits stays well under this
JSON_MAX_BYTES = 1_000_000  # every other JSON body

DESCRIPTION = """\
Conductor walks each app release through a declared pipeline of stages, advances it when its
gates pass, asks a release manager when a signal is ambiguous and halts a rollout on a bad one.

* **Webhooks** (`/webhooks/*`): signed CI events, stored in the inbox and answered 202 before any work;
  `GET /webhooks/events/{id}` tells what became of one.
* **REST** (`/tracks`, `/releases`): read with a viewer token, write with release_manager
  (tracks: admin). Writes may send the release `version` they were based on (`expected_version`
  or `If-Match`) and get 409 if it moved on.
* Every error is `{"error", "detail", "field"}`.
"""


def _plausible_request_id(value: str) -> bool:
    """A caller's X-Request-ID is kept when it is short printable ASCII (any tracing scheme), else replaced."""
    return 0 < len(value) <= 100 and value.isascii() and value.isprintable()


class RequestContext:
    """Bind the request id (asgi-correlation-id's), method and path to structlog for the request;
    log one line when it finishes; clear the context after."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=correlation_id.get(), method=scope["method"], path=scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log.info("request_finished", status=status, duration_ms=round((time.perf_counter() - started) * 1000, 1))
            structlog.contextvars.clear_contextvars()


def _check_webhook_secrets(settings: Settings) -> None:
    """Refuse to start with a Standard Webhooks secret that can never verify anything."""
    from standardwebhooks.webhooks import Webhook

    for i, secret in enumerate(webhooks.split_secrets(settings.webhook_secret)):
        try:
            Webhook(secret)
        except Exception:
            raise ConductorError(f"CONDUCTOR_WEBHOOK_SECRET entry #{i + 1} is not a Standard Webhooks secret (whsec_ + base64)") from None


def create_app(
    settings: Settings | None = None,
    app: App | None = None,
    *,
    webhook_max_bytes: int = WEBHOOK_MAX_BYTES,
    report_max_bytes: int = DEFAULT_MAX_BYTES,
    json_max_bytes: int = JSON_MAX_BYTES,
) -> FastAPI:
    """Build the API around a wired `app` (conductor.bootstrap.build; default: built from `settings`,
    default: the environment). An embedded runner of an app built here runs for the API's lifetime;
    a given app is its owner's to start and close. Raises ConductorError for an unusable
    configuration (a malformed webhook secret)."""
    from conductor.bootstrap import build
    from conductor.config import load_settings

    settings = settings or (app.settings if app is not None else load_settings())
    _check_webhook_secrets(settings)
    own = app is None
    wired = app or build(settings)
    state = ApiState(wired, ApiMetrics(wired.conductor), webhook_max_bytes, report_max_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if own and wired.runner is not None:
            wired.runner.start()
        log.info("api_started", database=wired.conductor.db.engine.dialect.name, dispatcher=type(wired.dispatcher).__name__)
        try:
            yield
        finally:
            if own:
                if wired.runner is not None:
                    wired.runner.stop()
                wired.close()

    # /docs is the dashboard router's: Swagger UI from vendored files under its CSP. FastAPI's own
    # pages (/docs, /redoc) load their scripts from a CDN, so they are off.
    api = FastAPI(title="Conductor", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None)
    api.state.conductor_api = state
    install_error_handlers(api)
    _add_middleware(api, state, webhook_max_bytes, report_max_bytes, json_max_bytes)
    for router in (
        health.build_router(),
        webhooks.build_router(),
        tracks.build_router(),
        releases.build_router(),
        replays.build_router(),
        freezes.build_router(),
    ):
        api.include_router(router)

    def get_context(request: Request) -> Context:
        return request.app.state.conductor_api.conductor

    api.include_router(dashboard_router(get_context, secret_key=settings.session_secret, poll_seconds=settings.dashboard_poll_seconds))
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


def _add_middleware(api: FastAPI, state: ApiState, webhook_max_bytes: int, report_max_bytes: int, json_max_bytes: int) -> None:
    def body_limit(path: str) -> int:
        if path.startswith("/webhooks/"):
            return webhook_max_bytes
        if path.endswith("/test-reports"):
            return report_max_bytes
        return json_max_bytes

    def body_refused(path: str) -> None:
        if path.startswith("/webhooks/"):
            state.metrics.rejected.labels(path.removeprefix("/webhooks/")[:30], "too_large").inc()

    api.add_middleware(BodyLimit, limit_for=body_limit, on_refused=body_refused)
    api.add_middleware(RequestContext)
    # Outermost: the request id exists before anything logs, and every answer carries it back.
    api.add_middleware(
        CorrelationIdMiddleware, header_name="X-Request-ID", validator=_plausible_request_id, generator=lambda: uuid.uuid4().hex
    )


def _openapi(api: FastAPI) -> dict[str, Any]:
    """The schema, with the body of POST /webhooks/generic (read raw, for its signature) described."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        generic = GenericEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(generic.pop("$defs", {}))
        components["GenericEvent"] = generic
        api.openapi_schema = schema
    return api.openapi_schema
