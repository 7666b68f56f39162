"""Webhook receivers: verify the raw body, parse it once, store it in the inbox, dispatch, answer 202.

Order, for every source: bounded read of the raw bytes (413 past the limit, counted while reading)
-> signature / token check on those exact bytes (401, nothing stored) -> parse (422 naming the
field; unknown event types are not errors, they are stored as ``ignored``) -> insert into the inbox,
unique per (source, delivery id), committed in one round trip (503 if that fails: never a 2xx
without a durable write) -> handed to the dispatcher (a broker publish, the embedded runner's
queue, or run in place by the inline one) -> 202 with the event id. Which release the event is
about is decided by the worker; GET /webhooks/events/{id} shows the outcome.

Secrets: the global one from the environment is tried first (CONDUCTOR_GITHUB_SECRET,
CONDUCTOR_GITLAB_TOKEN, CONDUCTOR_WEBHOOK_SECRET; the last may list several, space- or
comma-separated, for rotation). If it is not set or does not match, the secrets in the settings of
the tracks whose repository the payload names are tried (github_secret, gitlab_token,
webhook_secret). The payload is parsed for that lookup only; nothing from it is trusted or stored
unless one of those secrets verifies the body.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from conductor.api.deps import ApiState, NoParams, SingleValues, State, Viewer
from conductor.api.errors import RequestTimeout, ServiceUnavailable, error_responses
from conductor.api.schemas import MAX_INT, EventOut, WebhookAccepted
from conductor.domain.errors import ConductorError
from conductor.read.tracks import get_event
from conductor.service.inbox import IGNORABLE_KINDS, ReplayGuard, Stored, store_event
from conductor.service.tracks import track_secrets
from conductor.sources import (
    PayloadInvalid,
    PayloadTooLarge,
    SignatureInvalid,
    SourceError,
    parse_cloudevent,
    parse_generic,
    parse_github,
    parse_gitlab,
    verify_github,
    verify_gitlab,
    verify_standard_webhook,
)
from conductor.sources.events import InboundEvent

log = structlog.get_logger("conductor.webhooks")

Parser = Callable[[Mapping[str, str], bytes], InboundEvent]
Verifier = Callable[[list[str]], None]


def split_secrets(value: str | None) -> list[str]:
    """'whsec_a whsec_b' or 'whsec_a,whsec_b' -> both (rotation); None -> []."""
    return [s for s in (value or "").replace(",", " ").split() if s]


def global_secrets(state: ApiState, source: str) -> list[str]:
    s = state.settings
    if source == "github":
        return [s.github_secret] if s.github_secret else []
    if source == "gitlab":
        return [s.gitlab_token] if s.gitlab_token else []
    return split_secrets(s.webhook_secret)


def _any_of(check: Callable[[str], None]) -> Verifier:
    """Try each secret in turn; the last SignatureInvalid if none matches."""

    def verify(secrets: list[str]) -> None:
        error: SignatureInvalid | None = None
        for secret in secrets:
            try:
                check(secret)
                return
            except SignatureInvalid as exc:
                error = exc
        raise error or SignatureInvalid("no secret to check against")

    return verify


def authenticate(state: ApiState, source: str, secret_kind: str, verify: Verifier, parse: Callable[[], InboundEvent]) -> InboundEvent:
    """The delivery's event, once a secret verified its body: the global secret first, then the
    secrets of the tracks of the payload's repository. SignatureInvalid if none verifies.

    The body is parsed once: after the global secret verified it, or (to pick the per-track
    secrets) before they are tried, in which case nothing of it is used unless one verifies."""
    error: SignatureInvalid | None = None
    secrets = global_secrets(state, source)
    if secrets:
        try:
            verify(secrets)
            return parse()
        except SignatureInvalid as exc:
            error = exc
    per_track = track_secrets(state.conductor, secret_kind)
    if per_track:
        try:
            event: InboundEvent | None = parse()
        except SourceError:
            event = None  # unverified and unreadable: the signature error below is the answer
        if event is not None and event.repository in per_track:
            try:
                verify(per_track[event.repository])
                return event
            except SignatureInvalid as exc:
                error = error or exc
            except ValueError as exc:  # a malformed per-track secret: a configuration problem, not the sender's
                log.warning("track_secret_invalid", source=source, repository=event.repository, error=str(exc))
    raise error or SignatureInvalid(f"no {source} webhook secret is configured for this delivery")


_REJECT_REASONS = {SignatureInvalid: "signature", PayloadTooLarge: "too_large", PayloadInvalid: "payload"}


async def receive(
    request: Request,
    state: ApiState,
    source: str,
    secret_kind: str,
    verifier: Callable[[bytes, dict[str, str]], Verifier],
    parser: Parser,
) -> JSONResponse:
    metrics = state.metrics
    settings = state.settings
    try:
        # BodyLimit stops the read past the limit (413, counted there); a sender that trickles its
        # body gets a 408 instead of holding a connection.
        try:
            body = await asyncio.wait_for(request.body(), timeout=settings.webhook_body_timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {settings.webhook_body_timeout_s:g} s") from None
        if len(body) > state.webhook_max_bytes:  # belt and braces: never parse past the limit
            raise PayloadTooLarge(len(body), state.webhook_max_bytes)
        headers = dict(request.headers)
    except SourceError as exc:
        _count_rejection(metrics, source, exc)
        raise

    def verify_parse_store_dispatch() -> tuple[InboundEvent, Stored]:
        # One hop off the event loop for the whole request.
        try:
            event = authenticate(state, source, secret_kind, verifier(body, headers), lambda: parser(headers, body))
        except SourceError as exc:
            _count_rejection(metrics, source, exc)
            raise
        structlog.contextvars.bind_contextvars(delivery_id=event.delivery_id, source=source)
        try:
            stored = store_event(state.conductor, event, _replay_guard(state, source, body))
        except (SQLAlchemyError, ConductorError) as exc:
            metrics.rejected.labels(source, "store_unavailable").inc()
            log.error("event_store_failed", source=source, delivery_id=event.delivery_id, error=str(exc).splitlines()[0][:300])
            raise ServiceUnavailable("the event could not be stored; nothing was accepted, send it again") from None
        if stored.created or stored.status == "pending":
            _dispatch(state, stored.event_id)  # committed: hand it on (the transition is what the sender waits for)
        return event, stored

    try:
        # A database that stops answering is a 503 within seconds (the thread may still finish the
        # write later: the sender's retry is then a duplicate, never a second event).
        event, stored = await asyncio.wait_for(run_in_threadpool(verify_parse_store_dispatch), timeout=settings.webhook_store_timeout_s)
    except TimeoutError:
        metrics.rejected.labels(source, "store_unavailable").inc()
        log.error("event_store_timed_out", source=source, timeout_s=settings.webhook_store_timeout_s)
        raise ServiceUnavailable(f"the database did not answer within {settings.webhook_store_timeout_s:g} s; send it again") from None
    structlog.contextvars.bind_contextvars(event_id=stored.event_id)
    metrics.received.labels(source).inc()
    ignored = event.kind in IGNORABLE_KINDS
    if not stored.created:
        metrics.deduplicated.labels(source).inc()
        status = "duplicate"
    elif ignored:
        log.info("event_ignored", source=source, event_id=stored.event_id, raw_type=event.raw_type, reason=event.reason)
        status = "ignored"
    else:
        status = "accepted"
    out = WebhookAccepted(
        event_id=stored.event_id,
        source=source,
        delivery_id=event.delivery_id,
        kind=event.kind,
        duplicate=not stored.created,
        status=status,
        reason=(event.reason or event.kind) if ignored else None,
        event_url=f"/webhooks/events/{stored.event_id}",
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=202)


# Sources whose signatures cover neither a timestamp nor the delivery id: a captured body could be
# sent again under a new id (Standard Webhooks, for cloudevents and generic, signs both).
UNTIMED_SOURCES = ("github", "gitlab")


def _replay_guard(state: ApiState, source: str, body: bytes) -> ReplayGuard | None:
    window = state.settings.replay_window_s
    if source not in UNTIMED_SOURCES or window <= 0:
        return None
    return ReplayGuard(hashlib.sha256(body).hexdigest(), timedelta(seconds=window))


def _count_rejection(metrics, source: str, exc: SourceError) -> None:
    metrics.rejected.labels(source, next((r for t, r in _REJECT_REASONS.items() if isinstance(exc, t)), "bad_request")).inc()
    log.info("webhook_rejected", source=source, error=type(exc).__name__, detail=str(exc))


def _dispatch(state: ApiState, event_id: int) -> None:
    """Hand the committed event to the worker; a failure here is recovered by the sweeper."""
    with structlog.contextvars.bound_contextvars(event_id=event_id):
        try:
            state.dispatcher.event_stored(event_id)
        except Exception as exc:
            log.error("event_dispatch_failed", event_id=event_id, error=str(exc).splitlines()[0][:300])


def _raw_body(content: dict[str, Any], headers: list[tuple[str, str]]) -> dict[str, Any]:
    """OpenAPI for a route that reads its body itself (it must see the exact bytes the sender signed)."""
    return {
        "requestBody": {"required": True, "content": content},
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": doc} for name, doc in headers
        ],
    }


_SIGNED_JSON = {"application/json": {"schema": {"type": "object"}}}
_STANDARD_WEBHOOK_HEADERS = [
    ("webhook-id", "Standard Webhooks message id; the dedupe key"),
    ("webhook-timestamp", "Unix seconds; at most 5 minutes off the server's clock"),
    ("webhook-signature", "One or more space-separated v1,<base64 HMAC-SHA256> signatures"),
]
RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": WebhookAccepted, "description": "Stored (or already stored); processed after the response"},
    **error_responses(401, 408, 413, 422, 503),
}


router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[SingleValues])


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="An inbound event and what became of it (matched release, or why none)",
)
def event(event_id: Annotated[int, Path(ge=1, le=MAX_INT)], state: State, _: Viewer, _q: NoParams) -> EventOut:
    return EventOut.model_validate(get_event(state.conductor, event_id))


@router.post(
    "/github",
    status_code=202,
    responses=RESPONSES,
    response_model=None,
    summary="GitHub webhook",
    description="workflow_run, workflow_job, check_suite, check_run (completed), push, create, ping. "
    "X-Hub-Signature-256 is checked in constant time; X-GitHub-Delivery is the dedupe key.",
    openapi_extra=_raw_body(
        _SIGNED_JSON,
        [
            ("X-Hub-Signature-256", "sha256=<hex HMAC-SHA256 of the raw body>"),
            ("X-GitHub-Event", "Event name"),
            ("X-GitHub-Delivery", "Delivery id; the dedupe key"),
        ],
    ),
)
async def github(request: Request, state: State, _q: NoParams) -> JSONResponse:
    def verifier(body: bytes, headers: dict[str, str]) -> Verifier:
        return _any_of(lambda secret: verify_github(secret, body, headers))

    return await receive(request, state, "github", "github", verifier, parse_github)


@router.post(
    "/gitlab",
    status_code=202,
    responses=RESPONSES,
    response_model=None,
    summary="GitLab webhook",
    description="Pipeline Hook and Job Hook. X-Gitlab-Token is compared in constant time; "
    "Idempotency-Key (else X-Gitlab-Event-UUID) is the dedupe key. Serve over TLS: the token travels in clear.",
    openapi_extra=_raw_body(
        _SIGNED_JSON,
        [
            ("X-Gitlab-Token", "The shared secret token"),
            ("X-Gitlab-Event", "Pipeline Hook or Job Hook"),
            ("Idempotency-Key", "Dedupe key, stable across GitLab's retries"),
            ("X-Gitlab-Event-UUID", "Dedupe key when Idempotency-Key is absent"),
        ],
    ),
)
async def gitlab(request: Request, state: State, _q: NoParams) -> JSONResponse:
    def verifier(body: bytes, headers: dict[str, str]) -> Verifier:
        return _any_of(lambda token: verify_gitlab(token, headers))

    return await receive(request, state, "gitlab", "gitlab", verifier, parse_gitlab)


def standard(state: ApiState) -> Callable[[bytes, dict[str, str]], Verifier]:
    def verifier(body: bytes, headers: dict[str, str]) -> Verifier:
        return lambda secrets: verify_standard_webhook(secrets, body, headers, now=state.conductor.now())

    return verifier


@router.post(
    "/cloudevents",
    status_code=202,
    responses=RESPONSES,
    response_model=None,
    summary="CloudEvents 1.0 carrying CDEvents",
    description="Binary mode (ce-* headers, the CDEvent as body) or structured mode "
    "(Content-Type: application/cloudevents+json). Signed per Standard Webhooks; webhook-id is the dedupe key. "
    "Handled: pipelinerun.finished, build.finished, testsuiterun.finished, artifact.published, branch.created.",
    openapi_extra=_raw_body(
        {"application/cloudevents+json": {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}},
        [
            *_STANDARD_WEBHOOK_HEADERS,
            ("ce-specversion", "1.0 (binary mode)"),
            ("ce-id", "Event id (binary mode)"),
            ("ce-source", "Event source (binary mode)"),
            ("ce-type", "dev.cdevents.<subject>.<predicate>.<version> (binary mode)"),
        ],
    ),
)
async def cloudevents(request: Request, state: State, _q: NoParams) -> JSONResponse:
    parser = partial(parse_cloudevent, mappings=state.settings.cdevents_map)
    return await receive(request, state, "cloudevents", "standard_webhooks", standard(state), parser)


@router.post(
    "/generic",
    status_code=202,
    responses=RESPONSES,
    response_model=None,
    summary="Generic build, test and signal events",
    description="A GenericEvent (see its schema) signed per Standard Webhooks; webhook-id (else the body's id) is the dedupe key.",
    openapi_extra=_raw_body({"application/json": {"schema": {"$ref": "#/components/schemas/GenericEvent"}}}, _STANDARD_WEBHOOK_HEADERS),
)
async def generic(request: Request, state: State, _q: NoParams) -> JSONResponse:
    return await receive(request, state, "generic", "standard_webhooks", standard(state), parse_generic)


def build_router() -> APIRouter:
    return router
