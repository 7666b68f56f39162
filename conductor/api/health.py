"""Liveness, readiness (database and broker reachable) and Prometheus metrics; no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from conductor.api.deps import NoParams, SingleValues, State
from conductor.api.errors import error_responses
from conductor.api.schemas import HealthOut, ReadyOut
from conductor.read.tracks import ping

BROKER_TIMEOUT_S = 2.0


def broker_reachable(url: str, timeout: float = BROKER_TIMEOUT_S) -> None:
    """Raise unless the broker at `url` accepts a connection (kombu: Redis and AMQP alike)."""
    from kombu import Connection

    with Connection(url, connect_timeout=timeout, transport_options={"socket_timeout": timeout, "max_retries": 0}) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


def _short(exc: Exception) -> str:
    return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".rstrip(": ")


def build_router() -> APIRouter:
    router = APIRouter(tags=["health"], dependencies=[SingleValues])

    @router.get("/healthz", response_model=HealthOut, responses=error_responses(422), summary="The process is up")
    async def healthz(_q: NoParams) -> HealthOut:  # no I/O: on the event loop, no threadpool hop
        return HealthOut(status="ok")

    @router.get(
        "/readyz",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Database or broker unreachable"}, **error_responses(422)},
        summary="Ready to take traffic: database and broker reachable",
    )
    async def readyz(state: State, _q: NoParams) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(ping, state.conductor)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = _short(exc)
        if state.settings.broker_url:
            try:
                await run_in_threadpool(broker_reachable, state.settings.broker_url)
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = _short(exc)
        else:
            checks["broker"] = "embedded"  # no broker: events are processed in this process
        ready = all(v in ("ok", "embedded") for v in checks.values())
        body = ReadyOut(status="ready" if ready else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
            **error_responses(422),
        },
    )
    async def metrics(state: State, _q: NoParams) -> Response:
        return Response(await run_in_threadpool(state.metrics.render), media_type=CONTENT_TYPE_LATEST)

    return router
