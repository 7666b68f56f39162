"""Request body limits, enforced while the body is read (never after it sat in memory).

A declared Content-Length over the limit is answered 413 before a byte is read; a chunked body is
counted as it streams and cut off at the limit. The 413 is the API's JSON error like every other.
(FastAPI's own max_body_size answers in plain text when Content-Length is declared, hence this.)
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conductor.api.errors import error_response


class BodyTooLarge(HTTPException):
    """Raised from `receive` past the limit; an HTTPException so FastAPI's body parsing passes it through."""

    def __init__(self, size: int, limit: int):
        super().__init__(413, f"body exceeds the limit of {limit} bytes (read {size} so far)")
        self.size, self.limit = size, limit


class BodyLimit:
    """`limit_for(path)` gives each route's limit; `on_refused(path)` is told of every 413 (metrics)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], on_refused: Callable[[str], None] | None = None):
        self.app = app
        self.limit_for = limit_for
        self.on_refused = on_refused or (lambda path: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            self.on_refused(scope["path"])
            await error_response(413, "PayloadTooLarge", f"body is {int(declared)} bytes, the limit is {limit} bytes")(scope, receive, send)
            return
        received = 0
        tripped = False

        async def limited() -> Message:
            nonlocal received, tripped
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    tripped = True
                    raise BodyTooLarge(received, limit)
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            if tripped:
                self.on_refused(scope["path"])
