"""Dependencies shared by the routers: the app's state, the caller's token and role, the expected version,
and the query-parameter models (unknown parameters are refused with 422 naming them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from conductor.api.errors import InvalidRequest, Unauthorized
from conductor.service.tokens import Principal, authenticate

if TYPE_CHECKING:
    from conductor.actions.registry import ActionAdapters
    from conductor.api.metrics import ApiMetrics
    from conductor.bootstrap import App
    from conductor.config import Settings
    from conductor.facade import Conductor
    from conductor.service.ports import Dispatcher


@dataclass
class ApiState:
    """Everything a request handler needs, built once by create_app (never at import)."""

    app: App
    metrics: ApiMetrics
    webhook_max_bytes: int
    report_max_bytes: int

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def conductor(self) -> Conductor:
        return self.app.conductor

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app.dispatcher

    @property
    def adapters(self) -> ActionAdapters:
        return self.app.runtime.adapters


async def get_state(request: Request) -> ApiState:
    # async: no I/O here, so FastAPI runs it on the event loop instead of a threadpool hop
    return request.app.state.conductor_api


State = Annotated[ApiState, Depends(get_state)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiToken",
    description="An API token from `conductor token create NAME --role ROLE`, sent as `Authorization: Bearer cdt_...`",
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


class QueryModel(BaseModel):
    """Query parameters of a route: a parameter it does not declare (a typo such as `?stgae=beta`,
    which must not silently widen a list) is refused with 422 naming it."""

    model_config = ConfigDict(extra="forbid")


class NoQuery(QueryModel):
    """A route that takes no query parameters."""


NoParams = Annotated[NoQuery, Query()]


async def one_value_each(request: Request) -> None:
    """422 for a query parameter given more than once: every parameter here takes one value, and
    which of several was meant is anyone's guess (a query model silently keeps the last)."""
    params = request.query_params
    repeated = sorted(name for name in set(params) if len(params.getlist(name)) > 1)
    if repeated:
        raise InvalidRequest(f"query parameter {repeated[0]!r} is given more than once", field=repeated[0])


SingleValues = Depends(one_value_each)

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]{1,10})"?\s*$')

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=20,
        pattern=r'^(\*|(W/)?"?[0-9]{1,10}"?)$',
        description='The release `version` you last read (e.g. "7", as in the ETag); 409 if it changed since',
    ),
]


def wanted_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version the client expects: the body's expected_version, else If-Match ("*" = any)."""
    if body_version is not None:
        return body_version
    if if_match is None or if_match.strip() in ("", "*"):
        return None
    m = _ETAG.match(if_match)
    if m is None:
        raise InvalidRequest(f'If-Match must be a release version such as "7", got {if_match[:40]!r}', field="If-Match")
    return int(m[1])
