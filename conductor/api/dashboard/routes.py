"""Routes of the dashboard. Each handler reads through conductor.service.views or acts through the
Conductor service methods (the same ones the REST API and the CLI call); none writes on its own.

Handlers are plain `def`: FastAPI runs them in its thread pool, so the blocking database calls of
the service layer never stall the event loop. (No `from __future__ import annotations` here:
FastAPI must resolve the Annotated dependency aliases built inside build_router at runtime.)
"""

import json
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
from conductor.errors import ConductorError, Forbidden, NotFound
from conductor.service import views
from conductor.service.engine import Conductor
from conductor.service.tokens import authenticate

log = structlog.get_logger("conductor.dashboard")

DEFAULT_POLL_SECONDS = 3.0
PARTS = ("header", "decision", "timeline", "signals", "diagram", "actions")
ACTING_ROLE = "release_manager"
# A region refreshes when one of its marks changed (see views.change_marks).
PART_EVENTS = {"stage": "cd-stage", "release": "cd-release", "timeline": "cd-timeline", "decision": "cd-decision", "signals": "cd-signals", "board": "cd-board"}
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


def build_router(
    get_conductor: Callable[..., Conductor],
    *,
    secret_key: str | None = None,
    poll_seconds: float | None = None,
    session_max_age: timedelta = timedelta(hours=12),
) -> APIRouter:
    """The dashboard's routes; `get_conductor` is a FastAPI dependency returning the app's Conductor.

    secret_key signs session cookies (create_app passes Settings.session_secret; without one, a
    random key per process); poll_seconds is how often open pages ask whether anything changed
    (create_app passes Settings.dashboard_poll_seconds; default 3).
    """
    if poll_seconds is None:
        poll_seconds = DEFAULT_POLL_SECONDS
    router = APIRouter(include_in_schema=False)
    env = make_environment()
    sessions = Sessions(session_secret(secret_key), session_max_age)
    static_files = StaticFiles(directory=STATIC)
    versions = static_versions()
    poll_ms = max(200, int(poll_seconds * 1000))
    ConductorDep = Annotated[Conductor, Depends(get_conductor)]

    # ------------------------------------------------------------------ helpers

    def url(request: Request, name: str, **params: Any) -> str:
        return request.scope.get("root_path", "") + str(request.app.url_path_for(name, **params))

    def static(request: Request, path: str) -> str:
        return url(request, "dashboard_static", path=path) + f"?v={versions.get(path, '0')}"

    def harden(resp: Response, started: tuple[float, float] | None = None) -> Response:
        resp.headers.update(SECURITY_HEADERS)
        resp.headers.setdefault("Cache-Control", "no-store")
        if started is not None:
            wall, cpu = (a - b for a, b in zip(_clock(), started))
            # app: the handler's wall time; cpu: this thread's CPU time (what load on the host does not inflate).
            resp.headers["Server-Timing"] = f"app;dur={wall * 1000:.1f}, cpu;dur={cpu * 1000:.1f}"
        return resp

    def render(
        request: Request, template: str, sess: DashboardSession | None, *, status: int = 200, started: tuple[float, float] | None = None, **ctx: Any
    ) -> HTMLResponse:
        release_base = url(request, "dashboard_release", release_id=0)[:-1]
        html = env.get_template(template).render(
            request=request,
            user=sess.principal if sess else None,
            csrf=sess.csrf if sess else "",
            can_act=bool(sess and sess.principal.allows(ACTING_ROLE)),
            url=lambda name, **p: url(request, name, **p),
            static=lambda path: static(request, path),
            release_url=lambda rid: f"{release_base}{rid}",
            poll_ms=poll_ms,
            **ctx,
        )
        return harden(HTMLResponse(html, status_code=status), started)  # type: ignore[return-value]

    def is_htmx(request: Request) -> bool:
        return request.headers.get("hx-request") == "true"

    def to_login(request: Request) -> Response:
        """Unauthenticated: pages redirect to the login form; htmx calls are told to go there."""
        login = url(request, "dashboard_login")
        if is_htmx(request):
            return harden(Response(status_code=401, headers={"HX-Redirect": login}))
        if request.method != "GET":
            return harden(PlainTextResponse("sign in first", status_code=401))
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("sec-fetch-site") == "cross-site" and SESSION_COOKIE not in request.cookies:
            # A link followed from another site (the status ping in chat): the browser withholds the
            # SameSite=Strict cookie on this one request. Reload from our own origin, which sends it.
            return harden(HTMLResponse(SAME_SITE_BOUNCE.format(url=escape(target)), status_code=200))
        return harden(RedirectResponse(f"{login}?{urlencode({'next': target})}", status_code=303))

    def problem(request: Request, sess: DashboardSession | None, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", sess, status=status, message=message)

    def release_page(
        request: Request, c: Conductor, sess: DashboardSession, release_id: int, *, status: int = 200,
        flash: str | None = None, error: str | None = None, started: tuple[float, float] | None = None, template: str = "release.html",
    ) -> HTMLResponse:
        # Marks first: a change landing while the view is read shows up at the next poll.
        marks = _release_marks(c, release_id) if template == "release.html" else {}
        try:
            view = views.release_view(c, release_id)
        except NotFound as e:
            return problem(request, sess, 404, str(e))
        ping = status_ping(view, str(request.url_for("dashboard_release", release_id=release_id)))
        return render(
            request, template, sess, status=status, started=started, view=view, ping=ping, flash=flash, error=error,
            scope=str(release_id), marks=marks,
        )

    # ------------------------------------------------------------------ static files

    @router.get("/dashboard/static/{path:path}", name="dashboard_static")
    async def static_file(request: Request, path: str) -> Response:
        resp = await static_files.get_response(path, request.scope)
        if resp.status_code == 200:
            # URLs carry the content hash (?v=...), so a file never changes under its URL.
            resp.headers["Cache-Control"] = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    # ------------------------------------------------------------------ login

    @router.get("/login", name="dashboard_login", response_class=HTMLResponse)
    def login_form(request: Request, c: ConductorDep, next: str | None = None) -> Response:
        sess = sessions.read(request, c)
        if sess is not None:
            return harden(RedirectResponse(_safe_next(next) or url(request, "dashboard_overview"), status_code=303))
        return login_page(request, next, None)

    def login_page(request: Request, next: str | None, error: str | None, status: int = 200) -> Response:
        token = login_csrf_token(request)
        resp = render(request, "login.html", None, status=status, next=_safe_next(next) or "", login_csrf=token, error=error)
        set_login_csrf(request, resp, token)
        return resp

    @router.post("/login", name="dashboard_login_submit")
    def login_submit(
        request: Request,
        c: ConductorDep,
        token: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "",
    ) -> Response:
        if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
            log.warning("dashboard_refused", why="login_csrf", path=request.url.path)
            return login_page(request, next, "The sign-in form expired; please try again.", status=403)
        principal = authenticate(c, token.strip())
        token_id = views.token_id_for(c, principal.name) if principal else None
        if principal is None or token_id is None:
            log.warning("dashboard_login_failed")
            return login_page(request, next, "That token is unknown or revoked.", status=401)
        resp = RedirectResponse(_safe_next(next) or url(request, "dashboard_overview"), status_code=303)
        sessions.start(request, resp, token_id)
        log.info("dashboard_logged_in", actor=principal.name, role=principal.role)
        return harden(resp)

    @router.post("/logout", name="dashboard_logout")
    def logout(request: Request, c: ConductorDep, csrf_token: Annotated[str, Form()] = "") -> Response:
        sess = sessions.read(request, c)
        if sess is not None and not csrf_matches(sess.csrf, csrf_token):
            return problem(request, sess, 403, "Missing or wrong CSRF token: reload the page and try again.")
        resp = RedirectResponse(url(request, "dashboard_login"), status_code=303)
        sessions.end(resp)
        return harden(resp)

    # ------------------------------------------------------------------ pages

    @router.get("/", name="dashboard_overview", response_class=HTMLResponse)
    def overview(request: Request, c: ConductorDep) -> Response:
        started = _clock()
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        marks = _board_marks(c)
        board = views.board(c)
        return render(request, "overview.html", sess, started=started, board=board, scope="board", marks=marks)

    @router.get("/dashboard/board", name="dashboard_board", response_class=HTMLResponse)
    def board_part(request: Request, c: ConductorDep) -> Response:
        started = _clock()
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        return render(request, "_board.html", sess, started=started, board=views.board(c))

    @router.get("/insights", name="dashboard_insights", response_class=HTMLResponse)
    def insights(request: Request, c: ConductorDep) -> Response:
        started = _clock()
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        return render(request, "insights.html", sess, started=started, tracks=views.insights(c), now=c.now())

    @router.get("/release/{release_id}", name="dashboard_release", response_class=HTMLResponse)
    def release(request: Request, c: ConductorDep, release_id: int, done: str | None = None) -> Response:
        started = _clock()
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        return release_page(request, c, sess, release_id, flash=DONE.get(done or ""), started=started)

    @router.get("/release/{release_id}/part/{part}", name="dashboard_release_part", response_class=HTMLResponse)
    def release_part(request: Request, c: ConductorDep, release_id: int, part: str) -> Response:
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        if part not in PARTS:
            return problem(request, sess, 404, f"no part {part!r}")
        return release_page(request, c, sess, release_id, template=f"_{part}.html")

    @router.get("/release/{release_id}/ping.txt", name="dashboard_ping")
    def ping(request: Request, c: ConductorDep, release_id: int) -> Response:
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        try:
            view = views.release_view(c, release_id)
        except NotFound as e:
            return harden(PlainTextResponse(str(e), status_code=404))
        return harden(PlainTextResponse(status_ping(view, str(request.url_for("dashboard_release", release_id=release_id)))))

    # ------------------------------------------------------------------ live updates

    def _board_marks(c: Conductor) -> dict[str, str]:
        marks = views.change_marks(c)
        # Once a minute anyway, so "time in stage" and ages move on an idle board.
        marks["board"] += f":{int(c.now().timestamp() // 60)}"
        return marks

    def _release_marks(c: Conductor, release_id: int) -> dict[str, str]:
        marks = views.change_marks(c, release_id)
        marks["release"] += f":{int(c.now().timestamp() // 60)}"
        return marks

    @router.get("/dashboard/pulse", name="dashboard_pulse")
    def pulse(request: Request, c: ConductorDep, scope: str = "board", m: str = "") -> Response:
        """204 while nothing changed; else the new pulse element and an HX-Trigger naming what changed."""
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        if scope == "board":
            marks = _board_marks(c)
        elif scope.isdigit():
            marks = _release_marks(c, int(scope))
        else:
            return harden(PlainTextResponse("scope is 'board' or a release id", status_code=400))
        seen = dict(part.split("=", 1) for part in m.split(";") if "=" in part)
        changed = [k for k, v in marks.items() if seen.get(k) != v]
        if not changed:
            return harden(Response(status_code=204))
        resp = render(request, "_pulse.html", sess, scope=scope, marks=marks)
        resp.headers["HX-Trigger"] = json.dumps({PART_EVENTS[k]: True for k in changed})
        return resp

    # ------------------------------------------------------------------ actions

    def act(request: Request, c: Conductor, release_id: int, csrf_token: str, action: Callable[[DashboardSession], str], done: str) -> Response:
        """Check session, CSRF and role, run one service call, answer with the page (htmx) or a redirect."""
        sess = sessions.read(request, c)
        if sess is None:
            return to_login(request)
        if not csrf_matches(sess.csrf, csrf_token or request.headers.get(CSRF_HEADER)):
            log.warning("dashboard_refused", why="csrf", actor=sess.principal.name, release_id=release_id, path=request.url.path)
            return problem(request, sess, 403, "Missing or wrong CSRF token: reload the page and try again.")
        if not sess.principal.allows(ACTING_ROLE):
            log.warning("dashboard_refused", why="role", actor=sess.principal.name, role=sess.principal.role, release_id=release_id)
            return problem(request, sess, 403, str(Forbidden(f"{sess.principal.name} is a {sess.principal.role}; this needs {ACTING_ROLE}")))
        try:
            stage = action(sess)
        except ConductorError as e:
            log.info("dashboard_action_refused", actor=sess.principal.name, release_id=release_id, error=str(e))
            return release_page(request, c, sess, release_id, status=e.http_status, error=str(e))
        log.info("dashboard_action", action=done, actor=sess.principal.name, release_id=release_id, stage=stage)
        if is_htmx(request):
            return release_page(request, c, sess, release_id, flash=f"{DONE[done]} Stage: {stage}.")
        return harden(RedirectResponse(url(request, "dashboard_release", release_id=release_id) + f"?done={done}", status_code=303))

    def need_reason(reason: str, what: str) -> str:
        if not reason.strip():
            raise ConductorError(f"{what} needs a reason")
        return reason.strip()

    @router.post("/release/{release_id}/decision", name="dashboard_decide")
    def decide(
        request: Request,
        c: ConductorDep,
        release_id: int,
        csrf_token: Annotated[str, Form()] = "",
        decision: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
        evaluation_id: Annotated[str, Form()] = "",
        fingerprint: Annotated[str, Form()] = "",
    ) -> Response:
        ev_id = int(evaluation_id) if evaluation_id.isdigit() else None

        def run(sess: DashboardSession) -> str:
            if decision == "approve":
                return c.approve(release_id, sess.principal.actor, need_reason(reason, "an approval"), evaluation_id=ev_id, fingerprint=fingerprint or None)
            if decision == "reject":
                return c.reject(release_id, sess.principal.actor, need_reason(reason, "a rejection"), evaluation_id=ev_id)
            raise ConductorError("decision must be approve or reject")

        return act(request, c, release_id, csrf_token, run, "approved" if decision == "approve" else "rejected")

    @router.post("/release/{release_id}/pause", name="dashboard_pause")
    def pause(request: Request, c: ConductorDep, release_id: int, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "") -> Response:
        def run(sess: DashboardSession) -> str:
            c.pause(release_id, sess.principal.actor, need_reason(reason, "pausing"))
            return c.snapshot(release_id).release.stage

        return act(request, c, release_id, csrf_token, run, "paused")

    @router.post("/release/{release_id}/resume", name="dashboard_resume")
    def resume(request: Request, c: ConductorDep, release_id: int, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "") -> Response:
        return act(request, c, release_id, csrf_token, lambda sess: c.resume(release_id, sess.principal.actor, need_reason(reason, "resuming")), "resumed")

    @router.post("/release/{release_id}/cancel", name="dashboard_cancel")
    def cancel(request: Request, c: ConductorDep, release_id: int, csrf_token: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "") -> Response:
        return act(request, c, release_id, csrf_token, lambda sess: c.cancel(release_id, sess.principal.actor, need_reason(reason, "cancelling")), "cancelled")

    return router
