"""The FastAPI app factory: webhooks, REST, health and metrics around one Conductor service.

Nothing is built at import time: `create_app()` reads the settings, opens the database, picks the
dispatcher (Celery when CONDUCTOR_BROKER_URL is set, the embedded runner otherwise) and wires the routers.
`conductor api` serves it with uvicorn; `uvicorn --factory conductor.api:create_app` works too.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conductor.api import health, releases, tracks, webhooks
from conductor.api.deps import ApiState
from conductor.api.errors import install_error_handlers
from conductor.api.limits import BodyLimit
from conductor.api.metrics import ApiMetrics
from conductor.errors import ConductorError
from conductor.sources.generic import GenericEvent
from conductor.sources.junit import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from conductor.config import Settings
    from conductor.service.dispatch import Dispatcher
    from conductor.service.engine import Conductor

log = structlog.get_logger("conductor.api")

WEBHOOK_MAX_BYTES = 5_000_000  # CI events are kilobytes; a push with thousands of commits stays well under this
JSON_MAX_BYTES = 1_000_000  # every other JSON body

DESCRIPTION = """\
Conductor walks each app release through a declared pipeline of stages, advances it when its
gates pass, asks a release manager when a signal is ambiguous and halts a rollout on a bad one.

* **Webhooks** (`/webhooks/*`): signed CI events, stored in the inbox and answered 202 before any work.
* **REST** (`/tracks`, `/releases`): read with a viewer token, write with release_manager
  (tracks: admin). Writes may send the release `version` they were based on (`expected_version`
  or `If-Match`) and get 409 if it moved on.
* Every error is `{"error", "detail", "field"}`.
"""


class RequestContext:
    """Bind request_id (X-Request-ID, else a new one), method and path to structlog for the request; clear after."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if 0 < len(given) <= 100 and given.isascii() and given.isprintable() else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=scope["method"], path=scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info("request_finished", status=status, duration_ms=round((time.perf_counter() - started) * 1000, 1))
            structlog.contextvars.clear_contextvars()


def _conductor_from(settings: "Settings") -> "Conductor":
    from conductor.domain.loader import DefinitionCatalog
    from conductor.service import Conductor
    from conductor.store.db import Database, upgrade

    if settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)  # embedded mode: the file is ours, keep it at head
    return Conductor(Database(settings.database_url), DefinitionCatalog(settings.definitions_dir))


def _check_webhook_secrets(settings: "Settings") -> None:
    """Refuse to start with a Standard Webhooks secret that can never verify anything."""
    from standardwebhooks.webhooks import Webhook

    for i, secret in enumerate(webhooks.split_secrets(settings.webhook_secret)):
        try:
            Webhook(secret)
        except Exception:
            raise ConductorError(f"CONDUCTOR_WEBHOOK_SECRET entry #{i + 1} is not a Standard Webhooks secret (whsec_ + base64)") from None


def create_app(
    settings: "Settings | None" = None,
    conductor: "Conductor | None" = None,
    dispatcher: "Dispatcher | None" = None,
    *,
    webhook_max_bytes: int = WEBHOOK_MAX_BYTES,
    report_max_bytes: int = DEFAULT_MAX_BYTES,
    json_max_bytes: int = JSON_MAX_BYTES,
    embedded_tick_seconds: float | None = None,
) -> FastAPI:
    """Build the API around `conductor` (default: from `settings`, default: the environment).

    `dispatcher` defaults to Celery when a broker URL is configured. Without a broker, an app that
    builds its own conductor also runs the embedded worker and scheduler (conductor.runner) for
    its lifetime, as `conductor serve` does; an app given a conductor processes events inline.
    `embedded_tick_seconds=0` turns the embedded runner off (its intervals come from the settings).
    Raises ConductorError for an unusable configuration (a malformed webhook secret).
    """
    from conductor.config import Settings
    from conductor.service.dispatch import CeleryDispatcher, InlineDispatcher

    settings = settings or Settings()
    _check_webhook_secrets(settings)
    own_conductor = conductor is None
    if conductor is None:
        from conductor.logging import configure_logging

        configure_logging(settings.log_format, settings.log_level)
        conductor = _conductor_from(settings)
    runner = None
    if dispatcher is None:
        if settings.broker_url:
            dispatcher = CeleryDispatcher(settings.broker_url, visibility_timeout_s=settings.broker_visibility_timeout_s)
        elif own_conductor and embedded_tick_seconds != 0:
            from conductor.runner import EmbeddedRunner

            runner = EmbeddedRunner(conductor, settings)
            dispatcher = runner.dispatcher
        else:
            dispatcher = InlineDispatcher(conductor)
    state = ApiState(settings, conductor, dispatcher, ApiMetrics(conductor), webhook_max_bytes, report_max_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runner is not None:
            runner.start()
        log.info("api_started", database=conductor.db.engine.dialect.name, dispatcher=type(dispatcher).__name__)
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            if own_conductor:
                conductor.db.dispose()

    def body_limit(path: str) -> int:
        if path.startswith("/webhooks/"):
            return webhook_max_bytes
        if path.endswith("/test-reports"):
            return report_max_bytes
        return json_max_bytes

    app = FastAPI(title="Conductor", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.conductor_api = state
    install_error_handlers(app)
    def body_refused(path: str) -> None:
        if path.startswith("/webhooks/"):
            state.metrics.rejected.labels(path.removeprefix("/webhooks/")[:30], "too_large").inc()

    app.add_middleware(BodyLimit, limit_for=body_limit, on_refused=body_refused)
    app.add_middleware(RequestContext)

    app.include_router(health.build_router())
    app.include_router(webhooks.build_router())
    app.include_router(tracks.build_router())
    app.include_router(releases.build_router())

    # ---- dashboard: conductor/api/dashboard/ belongs to the dashboard's author, who wires it here. ----
    # Included only when the package exists; it gets the app's Conductor through a dependency.
    if importlib.util.find_spec("conductor.api.dashboard") is not None:
        from conductor.api.dashboard import build_router as dashboard_router

        def get_conductor(request: Request) -> "Conductor":
            return request.app.state.conductor_api.conductor

        app.include_router(dashboard_router(get_conductor, secret_key=settings.session_secret,
                                            poll_seconds=settings.dashboard_poll_seconds))
    # ---- end dashboard ----

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            generic = GenericEvent.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(generic.pop("$defs", {}))
            components["GenericEvent"] = generic  # the body of POST /webhooks/generic, read raw for the signature
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
