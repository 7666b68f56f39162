"""Routes of the dashboard. Each page reads the one read model (conductor.read) and each action is
one use case (conductor.service), the same the REST API and the CLI call; nothing here writes on
its own.

`Dashboard` holds what every handler shares (templates, sessions, the page helpers); the routes
are registered by concern: static files, sign-in, pages, live updates, actions. Handlers are plain
`def`: FastAPI runs them in its thread pool, so the blocking database calls never stall the event
loop. (No `from __future__ import annotations` here: FastAPI must resolve the Annotated
dependency aliases built inside build_router at runtime.)
"""

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markupsafe import escape

from conductor.api.dashboard.auth import (
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    DashboardSession,
    Sessions,
    csrf_matches,
    login_csrf_token,
    session_secret,
    set_login_csrf,
)
from conductor.api.dashboard.render import STATIC, make_environment, static_versions, status_ping
from conductor.context import Context
from conductor.domain.errors import ConductorError, Forbidden, NotFound
from conductor.read.board import board as read_board
from conductor.read.board import change_marks
from conductor.read.insights import insights as read_insights
from conductor.read.page import release_view
from conductor.read.release import snapshot
from conductor.service import approvals, freezes, releases
from conductor.service.tokens import record_sign_in, session_for

log = structlog.get_logger("conductor.dashboard")

DEFAULT_POLL_SECONDS = 3.0
PARTS = ("header", "decision", "timeline", "signals", "diagram", "actions")
ACTING_ROLE = "release_manager"
MAX_REASON = 2000  # as the REST API
ID = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() takes '²', which int() refuses
# A region refreshes when one of its marks changed (see conductor.read.board.change_marks).
PART_EVENTS = {
    "stage": "cd-stage",
    "release": "cd-release",
    "timeline": "cd-timeline",
    "decision": "cd-decision",
    "signals": "cd-signals",
    "board": "cd-board",
}
DONE = {
    "approved": "Approved.",
    "rejected": "Rejected.",
    "paused": "Paused: the robot will not move this release until it is resumed.",
    "resumed": "Resumed.",
    "cancelled": "Cancelled.",
}
SAME_SITE_BOUNCE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={url}">'
    '<title>Conductor</title></head><body><p><a href="{url}">Continue to Conductor</a></p></body></html>'
)
SECURITY_HEADERS = {
    # style-src allows inline styles because mermaid writes a <style> into each diagram it draws.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _safe_next(target: str | None) -> str | None:
    # Only local paths: never an open redirect to another site.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def need_reason(reason: str, what: str) -> str:
    """The reason, trimmed; ConductorError when it is empty or longer than the REST API allows."""
    text = reason.strip()
    if not text:
        raise ConductorError(f"{what} needs a reason")
    if len(text) > MAX_REASON or "\x00" in text:
        raise ConductorError(f"the reason for {what} must be at most {MAX_REASON} characters of text")
    return text


class Dashboard:
    """What every dashboard handler shares: templates, sessions, URLs, and the page and action helpers."""

    def __init__(self, secret_key: str | None, poll_seconds: float, session_max_age: timedelta):
        self.env = make_environment()
        self.sessions = Sessions(session_secret(secret_key), session_max_age)
        self.static_files = StaticFiles(directory=STATIC)
        self.versions = static_versions()
        self.poll_ms = max(200, int(poll_seconds * 1000))

    def url(self, request: Request, name: str, **params: Any) -> str:
        return request.scope.get("root_path", "") + str(request.app.url_path_for(name, **params))

    def harden(self, resp: Response, started: tuple[float, float] | None = None) -> Response:
        resp.headers.update(SECURITY_HEADERS)
        resp.headers.setdefault("Cache-Control", "no-store")
        if started is not None:
            wall, cpu = (a - b for a, b in zip(_clock(), started, strict=True))
            # app: the handler's wall time; cpu: this thread's CPU time (what load on the host does not inflate).
            resp.headers["Server-Timing"] = f"app;dur={wall * 1000:.1f}, cpu;dur={cpu * 1000:.1f}"
        return resp

    def render(
        self,
        request: Request,
        template: str,
        sess: DashboardSession | None,
        *,
        status: int = 200,
        started: tuple[float, float] | None = None,
        **ctx: Any,
    ) -> Response:
        release_base = self.url(request, "dashboard_release", release_id=0)[:-1]
        html = self.env.get_template(template).render(
            request=request,
            user=sess.principal if sess else None,
            csrf=sess.csrf if sess else "",
            can_act=bool(sess and sess.principal.allows(ACTING_ROLE)),
            url=lambda name, **p: self.url(request, name, **p),
            static=lambda path: self.url(request, "dashboard_static", path=path) + f"?v={self.versions.get(path, '0')}",
            release_url=lambda rid: f"{release_base}{rid}",
            poll_ms=self.poll_ms,
            **ctx,
        )
        return self.harden(HTMLResponse(html, status_code=status), started)

    @staticmethod
    def is_htmx(request: Request) -> bool:
        return request.headers.get("hx-request") == "true"

    def to_login(self, request: Request) -> Response:
        """Unauthenticated: pages redirect to the login form; htmx calls are told to go there."""
        login = self.url(request, "dashboard_login")
        if self.is_htmx(request):
            return self.harden(Response(status_code=401, headers={"HX-Redirect": login}))
        if request.method != "GET":
            return self.harden(PlainTextResponse("sign in first", status_code=401))
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("sec-fetch-site") == "cross-site" and SESSION_COOKIE not in request.cookies:
            # A link followed from another site (the status ping in chat): the browser withholds the
            # SameSite=Strict cookie on this one request. Reload from our own origin, which sends it.
            return self.harden(HTMLResponse(SAME_SITE_BOUNCE.format(url=escape(target)), status_code=200))
        return self.harden(RedirectResponse(f"{login}?{urlencode({'next': target})}", status_code=303))

    def problem(self, request: Request, sess: DashboardSession | None, status: int, message: str) -> Response:
        return self.render(request, "error.html", sess, status=status, message=message)

    def marks(self, ctx: Context, release_id: int | None = None) -> dict[str, str]:
        marks = change_marks(ctx, release_id)
        # Once a minute anyway, so "time in stage" and ages move on an idle page.
        marks["board" if release_id is None else "release"] += f":{int(ctx.now().timestamp() // 60)}"
        return marks

    def release_page(
        self,
        request: Request,
        ctx: Context,
        sess: DashboardSession,
        release_id: int,
        *,
        status: int = 200,
        flash: str | None = None,
        error: str | None = None,
        started: tuple[float, float] | None = None,
        template: str = "release.html",
    ) -> Response:
        # Marks first: a change landing while the view is read shows up at the next poll.
        marks = self.marks(ctx, release_id) if template == "release.html" else {}
        try:
            view = release_view(ctx, release_id)
        except NotFound as e:
            return self.problem(request, sess, 404, str(e))
        ping = status_ping(view, str(request.url_for("dashboard_release", release_id=release_id)))
        return self.render(
            request,
            template,
            sess,
            status=status,
            started=started,
            view=view,
            ping=ping,
            flash=flash,
            error=error,
            scope=str(release_id),
            marks=marks,
        )

    def act(
        self, request: Request, ctx: Context, release_id: int, csrf_token: str, action: Callable[[DashboardSession], str], done: str
    ) -> Response:
        """Check session, CSRF and role, run one use case, answer with the page (htmx) or a redirect."""
        sess = self.sessions.read(request, ctx)
        if sess is None:
            return self.to_login(request)
        if not csrf_matches(sess.csrf, csrf_token or request.headers.get(CSRF_HEADER)):
            log.warning("dashboard_refused", why="csrf", actor=sess.principal.name, release_id=release_id, path=request.url.path)
            return self.problem(request, sess, 403, "Missing or wrong CSRF token: reload the page and try again.")
        if not sess.principal.allows(ACTING_ROLE):
            log.warning("dashboard_refused", why="role", actor=sess.principal.name, role=sess.principal.role, release_id=release_id)
            return self.problem(
                request, sess, 403, str(Forbidden(f"{sess.principal.name} is a {sess.principal.role}; this needs {ACTING_ROLE}"))
            )
        try:
            stage = action(sess)
        except ConductorError as e:
            log.info("dashboard_action_refused", actor=sess.principal.name, release_id=release_id, error=str(e))
            return self.release_page(request, ctx, sess, release_id, status=e.http_status, error=str(e))
        log.info("dashboard_action", action=done, actor=sess.principal.name, release_id=release_id, stage=stage)
        if self.is_htmx(request):
            return self.release_page(request, ctx, sess, release_id, flash=f"{DONE[done]} Stage: {stage}.")
        return self.harden(
            RedirectResponse(self.url(request, "dashboard_release", release_id=release_id) + f"?done={done}", status_code=303)
        )


def build_router(
    get_context: Callable[..., Context],
    *,
    secret_key: str | None = None,
    poll_seconds: float | None = None,
    session_max_age: timedelta = timedelta(hours=12),
) -> APIRouter:
    """The dashboard's routes; `get_context` is a FastAPI dependency returning the app's Context.

    secret_key signs session cookies (create_app passes Settings.session_secret; without one, a
    random key per process); poll_seconds is how often open pages ask whether anything changed."""
    dash = Dashboard(secret_key, DEFAULT_POLL_SECONDS if poll_seconds is None else poll_seconds, session_max_age)
    router = APIRouter(include_in_schema=False)
    ctx_dep = Annotated[Context, Depends(get_context)]
    for register in (
        _static_routes,
        _docs_routes,
        _login_routes,
        _page_routes,
        _live_routes,
        _decision_route,
        _action_routes,
        _freeze_routes,
    ):
        register(router, dash, ctx_dep)
    return router


def _static_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    @router.get("/dashboard/static/{path:path}", name="dashboard_static")
    async def static_file(request: Request, path: str) -> Response:
        resp = await dash.static_files.get_response(path, request.scope)
        if resp.status_code == 200:
            # URLs carry the content hash (?v=...), so a file never changes under its URL.
            resp.headers["Cache-Control"] = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @router.get("/favicon.ico", name="dashboard_favicon")
    async def favicon(request: Request) -> Response:
        # Browsers ask for it on every page they have no <link rel="icon"> for (the API's JSON, /docs).
        resp = await dash.static_files.get_response("favicon.ico", request.scope)
        resp.headers["Cache-Control"] = "public, max-age=86400"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


def _docs_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    @router.get("/docs", name="api_docs", response_class=HTMLResponse)
    def docs(request: Request) -> Response:
        """The API's Swagger UI from the vendored bundle, under the dashboard's CSP (create_app turns
        FastAPI's own /docs off: it loads Swagger UI from a CDN and starts it with an inline script)."""
        openapi_url = request.app.openapi_url
        if not openapi_url:
            return dash.harden(PlainTextResponse("this app publishes no OpenAPI schema", status_code=404))
        root = request.scope.get("root_path", "")
        return dash.render(request, "docs.html", None, title=request.app.title, openapi_url=root + openapi_url)


def _login_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    def login_page(request: Request, next: str | None, error: str | None, status: int = 200) -> Response:
        token = login_csrf_token(request)
        resp = dash.render(request, "login.html", None, status=status, next=_safe_next(next) or "", login_csrf=token, error=error)
        set_login_csrf(request, resp, token)
        return resp

    @router.get("/login", name="dashboard_login", response_class=HTMLResponse)
    def login_form(request: Request, ctx: ctx_dep, next: str | None = None) -> Response:
        if dash.sessions.read(request, ctx) is not None:
            return dash.harden(RedirectResponse(_safe_next(next) or dash.url(request, "dashboard_overview"), status_code=303))
        return login_page(request, next, None)

    @router.post("/login", name="dashboard_login_submit")
    def login_submit(
        request: Request,
        ctx: ctx_dep,
        token: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "",
    ) -> Response:
        if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
            log.warning("dashboard_refused", why="login_csrf", path=request.url.path)
            return login_page(request, next, "The sign-in form expired; please try again.", status=403)
        found = session_for(ctx, token.strip())
        if found is None:
            log.warning("dashboard_login_failed")
            return login_page(request, next, "That token is unknown or revoked.", status=401)
        record_sign_in(ctx, found, via="dashboard", client=request.client.host if request.client else None)
        resp = RedirectResponse(_safe_next(next) or dash.url(request, "dashboard_overview"), status_code=303)
        dash.sessions.start(request, resp, found.token_id)
        log.info("dashboard_logged_in", actor=found.principal.name, role=found.principal.role)
        return dash.harden(resp)

    @router.post("/logout", name="dashboard_logout")
    def logout(request: Request, ctx: ctx_dep, csrf_token: Annotated[str, Form()] = "") -> Response:
        sess = dash.sessions.read(request, ctx)
        if sess is not None and not csrf_matches(sess.csrf, csrf_token):
            return dash.problem(request, sess, 403, "Missing or wrong CSRF token: reload the page and try again.")
        resp = RedirectResponse(dash.url(request, "dashboard_login"), status_code=303)
        dash.sessions.end(resp)
        return dash.harden(resp)


def _page_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    @router.get("/", name="dashboard_overview", response_class=HTMLResponse)
    def overview(request: Request, ctx: ctx_dep) -> Response:
        started = _clock()
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        marks = dash.marks(ctx)
        return dash.render(request, "overview.html", sess, started=started, board=read_board(ctx), scope="board", marks=marks)

    @router.get("/dashboard/board", name="dashboard_board", response_class=HTMLResponse)
    def board_part(request: Request, ctx: ctx_dep) -> Response:
        started = _clock()
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        return dash.render(request, "_board.html", sess, started=started, board=read_board(ctx))

    @router.get("/insights", name="dashboard_insights", response_class=HTMLResponse)
    def insights(request: Request, ctx: ctx_dep) -> Response:
        started = _clock()
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        return dash.render(request, "insights.html", sess, started=started, tracks=read_insights(ctx), now=ctx.now())

    @router.get("/release/{release_id}", name="dashboard_release", response_class=HTMLResponse)
    def release(request: Request, ctx: ctx_dep, release_id: int, done: str | None = None) -> Response:
        started = _clock()
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        return dash.release_page(request, ctx, sess, release_id, flash=DONE.get(done or ""), started=started)

    @router.get("/release/{release_id}/part/{part}", name="dashboard_release_part", response_class=HTMLResponse)
    def release_part(request: Request, ctx: ctx_dep, release_id: int, part: str) -> Response:
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        if part not in PARTS:
            return dash.problem(request, sess, 404, f"no part {part!r}")
        return dash.release_page(request, ctx, sess, release_id, template=f"_{part}.html")

    @router.get("/release/{release_id}/ping.txt", name="dashboard_ping")
    def ping(request: Request, ctx: ctx_dep, release_id: int) -> Response:
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        try:
            view = release_view(ctx, release_id)
        except NotFound as e:
            return dash.harden(PlainTextResponse(str(e), status_code=404))
        return dash.harden(PlainTextResponse(status_ping(view, str(request.url_for("dashboard_release", release_id=release_id)))))


def _live_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    @router.get("/dashboard/pulse", name="dashboard_pulse")
    def pulse(request: Request, ctx: ctx_dep, scope: str = "board", m: str = "") -> Response:
        """204 while nothing changed; else the new pulse element and an HX-Trigger naming what changed."""
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        if scope == "board":
            marks = dash.marks(ctx)
        elif ID.fullmatch(scope):
            marks = dash.marks(ctx, int(scope))
        else:
            return dash.harden(PlainTextResponse("scope is 'board' or a release id", status_code=400))
        seen = dict(part.split("=", 1) for part in m.split(";") if "=" in part)
        changed = [k for k, v in marks.items() if seen.get(k) != v]
        if not changed:
            return dash.harden(Response(status_code=204))
        resp = dash.render(request, "_pulse.html", sess, scope=scope, marks=marks)
        resp.headers["HX-Trigger"] = json.dumps({PART_EVENTS[k]: True for k in changed})
        return resp


def _decision_route(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    @router.post("/release/{release_id}/decision", name="dashboard_decide")
    def decide(
        request: Request,
        ctx: ctx_dep,
        release_id: int,
        csrf_token: Annotated[str, Form()] = "",
        decision: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
        evaluation_id: Annotated[str, Form()] = "",
        fingerprint: Annotated[str, Form()] = "",
    ) -> Response:
        ev_id = int(evaluation_id) if ID.fullmatch(evaluation_id) else None

        def run(sess: DashboardSession) -> str:
            if decision == "approve":
                return approvals.approve(
                    ctx,
                    release_id,
                    sess.principal.actor,
                    need_reason(reason, "an approval"),
                    evaluation_id=ev_id,
                    fingerprint=fingerprint or None,
                )
            if decision == "reject":
                return approvals.reject(ctx, release_id, sess.principal.actor, need_reason(reason, "a rejection"), evaluation_id=ev_id)
            raise ConductorError("decision must be approve or reject")

        return dash.act(request, ctx, release_id, csrf_token, run, "approved" if decision == "approve" else "rejected")


def _freeze_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    def track_act(request: Request, ctx: Context, track_id: str, csrf_token: str, action: Callable[[DashboardSession], object]) -> Response:
        sess = dash.sessions.read(request, ctx)
        if sess is None:
            return dash.to_login(request)
        if not csrf_matches(sess.csrf, csrf_token or request.headers.get(CSRF_HEADER)):
            return dash.problem(request, sess, 403, "Missing or wrong CSRF token: reload the page and try again.")
        if not sess.principal.allows(ACTING_ROLE):
            return dash.problem(
                request, sess, 403, str(Forbidden(f"{sess.principal.name} is a {sess.principal.role}; this needs {ACTING_ROLE}"))
            )
        try:
            action(sess)
        except ConductorError as e:
            return dash.problem(request, sess, e.http_status, str(e))
        log.info("dashboard_track_action", actor=sess.principal.name, track=track_id, path=request.url.path)
        return dash.harden(RedirectResponse(dash.url(request, "dashboard_overview"), status_code=303))

    @router.post("/track/{track_id}/freeze", name="dashboard_freeze")
    def freeze_(request: Request, ctx: ctx_dep, track_id: str, csrf_token: Annotated[str, Form()] = "",
                reason: Annotated[str, Form()] = "") -> Response:  # fmt: skip
        def run(sess: DashboardSession) -> object:
            return freezes.freeze(ctx, sess.principal.actor, need_reason(reason, "a freeze"), track=track_id)

        return track_act(request, ctx, track_id, csrf_token, run)

    @router.post("/track/{track_id}/unfreeze", name="dashboard_unfreeze")
    def unfreeze_(request: Request, ctx: ctx_dep, track_id: str, csrf_token: Annotated[str, Form()] = "",
                  reason: Annotated[str, Form()] = "") -> Response:  # fmt: skip
        def run(sess: DashboardSession) -> object:
            return freezes.unfreeze(ctx, sess.principal.actor, need_reason(reason, "lifting a freeze"), track=track_id)

        return track_act(request, ctx, track_id, csrf_token, run)


def _action_routes(router: APIRouter, dash: Dashboard, ctx_dep: Any) -> None:
    @router.post("/release/{release_id}/pause", name="dashboard_pause")
    def pause(
        request: Request, ctx: ctx_dep, release_id: int, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = ""
    ) -> Response:
        def run(sess: DashboardSession) -> str:
            releases.pause(ctx, release_id, sess.principal.actor, need_reason(reason, "pausing"))
            return snapshot(ctx, release_id).stage

        return dash.act(request, ctx, release_id, csrf_token, run, "paused")

    @router.post("/release/{release_id}/resume", name="dashboard_resume")
    def resume(
        request: Request, ctx: ctx_dep, release_id: int, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = ""
    ) -> Response:
        return dash.act(
            request,
            ctx,
            release_id,
            csrf_token,
            lambda sess: releases.resume(ctx, release_id, sess.principal.actor, need_reason(reason, "resuming")),
            "resumed",
        )

    @router.post("/release/{release_id}/cancel", name="dashboard_cancel")
    def cancel(
        request: Request, ctx: ctx_dep, release_id: int, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = ""
    ) -> Response:
        return dash.act(
            request,
            ctx,
            release_id,
            csrf_token,
            lambda sess: releases.cancel(ctx, release_id, sess.principal.actor, need_reason(reason, "cancelling")),
            "cancelled",
        )
