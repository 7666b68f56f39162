"""The release manager dashboard: server-rendered pages (Jinja2) with htmx for live updates.

`build_router(get_conductor)` returns a FastAPI router to include in the API app. Pages:
`/` (overview), `/insights`, `/release/{id}`, `/login`, and the API's Swagger UI at `/docs`;
helpers live under `/dashboard/`, the favicon also at `/favicon.ico`. JavaScript (htmx, mermaid,
swagger-ui) is vendored under static/vendor: the pages need no internet.
"""

from conductor.api.dashboard.routes import build_router

__all__ = ["build_router"]
