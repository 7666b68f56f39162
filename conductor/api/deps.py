"""Dependencies shared by the routers: the app's state, the caller's token and role, the expected version."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conductor.api.errors import InvalidRequest, Unauthorized
from conductor.service.engine import expected_version
from conductor.service.tokens import Principal, authenticate

if TYPE_CHECKING:
    from conductor.api.metrics import ApiMetrics
    from conductor.config import Settings
    from conductor.service.dispatch import Dispatcher
    from conductor.service.engine import Conductor


@dataclass
class ApiState:
    """Everything a request handler needs, built once by create_app (never at import)."""

    settings: "Settings"
    conductor: "Conductor"
    dispatcher: "Dispatcher"
    metrics: "ApiMetrics"
    webhook_max_bytes: int
    report_max_bytes: int


async def get_state(request: Request) -> ApiState:
    # async: no I/O here, so FastAPI runs it on the event loop instead of a threadpool hop
    return request.app.state.conductor_api


State = Annotated[ApiState, Depends(get_state)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiToken",
    description="An API token from `conductor token create --role ROLE --name NAME`, sent as `Authorization: Bearer cdt_...`",
)


def current_principal(state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The token's principal; Unauthorized (401) when the token is missing, unknown or revoked."""
    if credentials is None:
        raise Unauthorized("send an API token: Authorization: Bearer <token>")
    principal = authenticate(state.conductor, credentials.credentials)
    if principal is None:
        raise Unauthorized("the API token is unknown or revoked")
    return principal


def require(role: str) -> Callable[..., Principal]:
    """A dependency that admits the roles at or above `role` (viewer < release_manager < admin); else 403."""

    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        principal.require(role)
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
ReleaseManager = Annotated[Principal, Depends(require("release_manager"))]
Admin = Annotated[Principal, Depends(require("admin"))]

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,10})"?\s*$')

IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=20, pattern=r'^(\*|(W/)?"?[0-9]{1,10}"?)$',
           description='The release `version` you last read (e.g. "7", as in the ETag); 409 if it changed since'),
]


def _query_names(dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def no_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not declare (a typo, `?stgae=beta`, must not widen a list
    silently) or one given twice."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}" + (f"; known: {', '.join(sorted(known))}" if known else ""), field=unknown[0])
    repeated = sorted(name for name in set(request.query_params) if len(request.query_params.getlist(name)) > 1)
    if repeated:  # every parameter here takes one value; which of several was meant is anyone's guess
        raise InvalidRequest(f"query parameter {repeated[0]!r} is given more than once", field=repeated[0])


def wanted_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version the client expects: the body's expected_version, else If-Match ("*" = any)."""
    if body_version is not None:
        return body_version
    if if_match is None or if_match.strip() in ("", "*"):
        return None
    m = _ETAG.match(if_match)
    if m is None:
        raise InvalidRequest(f"If-Match must be a release version such as \"7\", got {if_match[:40]!r}", field="If-Match")
    return int(m[1])


@contextmanager
def expecting(version: int | None) -> Iterator[None]:
    """Make the service refuse (409) a write on a release whose version is not `version`."""
    token = expected_version.set(version)
    try:
        yield
    finally:
        expected_version.reset(token)
