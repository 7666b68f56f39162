"""A real local HTTP server for contract fakes, with recorded requests and injected faults.

A vendor fake subclasses nothing: it registers routes on a `FakeServer` and checks each request
against the vendor's documented shape (a wrong request is answered 400 with what was wrong, and
recorded in `server.violations`, so a test fails with the reason). Faults are queued per route:

    server.fault("POST", r"/v3/.*/edits$", status=429, headers={"Retry-After": "7"})
    server.fault("GET", r"/api/0/.*", status=None, delay=3.0)   # late: past the client's timeout
    server.fault("GET", r"/api/0/.*", status=502, body="<html>Bad Gateway</html>",
                 content_type="text/html")

Standard library only (http.server in a thread): the fakes must not share code paths with the
httpx clients they test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    match: re.Match[str] | None = None

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        if self.body is None:
            return b"", self.content_type or "application/json"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


Handler = Callable[[Request], Reply]


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    reply: Reply | None
    delay: float
    times: int


class FakeServer:
    """Routes, recorded requests, queued faults; `url` is the base URL; use as a context manager."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ set-up

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method.upper(), re.compile(pattern), handler))

    def fault(
        self,
        method: str,
        pattern: str,
        *,
        status: int | None = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next `times` matching requests get this answer (after `delay` seconds); with
        status=None they are answered normally, `delay` seconds late."""
        reply = None if status is None else Reply(status, body, headers or {}, content_type)
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(pattern), reply, delay, times))

    def reject(self, request: Request, problem: str) -> Reply:
        """A request that breaks the vendor's contract: recorded, answered 400 naming the problem."""
        self.violations.append(f"{request.method} {request.path}: {problem}")
        return Reply(400, {"fake_contract_violation": problem})

    def calls(self, method: str | None = None, pattern: str | None = None) -> list[Request]:
        rx = re.compile(pattern) if pattern else None
        return [r for r in self.requests if (method is None or r.method == method.upper()) and (rx is None or rx.search(r.path))]

    # ------------------------------------------------------------ serving

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                              {k.lower(): v for k, v in self.headers.items()}, body)  # fmt: skip
                reply = server._answer(req)
                payload, ctype = reply.encode()
                self.send_response(reply.status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-server", daemon=True).start()  # quick shutdown
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, req: Request) -> Reply:
        with self._lock:
            self.requests.append(req)
            fault = next((f for f in self._faults if f.method == req.method and f.pattern.search(req.path) and f.times > 0), None)
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reply is not None:
                return fault.reply
        for method, pattern, handler in self.routes:
            m = pattern.fullmatch(req.path)
            if method == req.method and m:
                req.match = m
                return handler(req)
        return self.reject(req, "no such endpoint in the vendor's API")
