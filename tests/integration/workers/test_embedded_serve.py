"""`conductor serve`: the API with the in-process worker and scheduler on SQLite, no broker.

A signed generic webhook goes in; the release moves; its actions come out signed at the track's
actions_url (a local receiver here), which verifies them with the standardwebhooks library.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from conductor.actions.http import standard_webhook_headers
from conductor.domain.loader import DefinitionCatalog
from conductor.facade import Conductor
from conductor.service.tracks import configure_actions
from conductor.store.db import Database, upgrade

ROOT = Path(__file__).resolve().parents[3]
DEFINITIONS = ROOT / "state_definitions"

pytestmark = [pytest.mark.slow]

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver(ThreadingHTTPServer):
    """The track's automation endpoint: records what it is sent."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def actions(self) -> list[dict]:
        return [Webhook(SECRET).verify(body, headers) for headers, body in self.received]


@pytest.fixture
def served(tmp_path):
    url = f"sqlite:///{tmp_path / 'conductor.db'}"
    upgrade(url)
    c = Conductor(Database(url), DefinitionCatalog(DEFINITIONS))
    c.ensure_track("music-android", "mobile_weekly", repository="acme/music-android")
    receiver = Receiver()
    configure_actions(
        c, "music-android", None, {"actions_url": f"http://127.0.0.1:{receiver.server_port}/actions", "actions_secret": SECRET}
    )
    c.start_release("music-android", "1.0.0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env.update(
        CONDUCTOR_DATABASE_URL=url,
        CONDUCTOR_WEBHOOK_SECRET=SECRET,
        CONDUCTOR_DEFINITIONS_DIR=str(DEFINITIONS),
        CONDUCTOR_LOG_FORMAT="json",
        CONDUCTOR_LOG_LEVEL="WARNING",
        CONDUCTOR_TICK_INTERVAL_S="1",
        CONDUCTOR_SWEEP_INTERVAL_S="1",
    )
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from conductor.cli import main; main()", "serve", "--port", str(port)],
        env=env,
        cwd=str(ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.1)
        yield base, c, receiver, tmp_path / "serve.log"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        receiver.shutdown()
        c.db.dispose()


def post_generic(base: str, body: dict) -> httpx.Response:
    raw = json.dumps(body)
    headers = {"content-type": "application/json", **standard_webhook_headers(SECRET, body["id"], raw, datetime.now(UTC))}
    return httpx.post(f"{base}/webhooks/generic", content=raw, headers=headers, timeout=10)


def wait_for(predicate, timeout, log_path):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.1)


def test_serve_runs_events_and_actions_in_one_process(served):
    base, c, receiver, log_path = served
    common = {"repository": "acme/music-android", "branch": "release/1.0.0", "sha": "abc1234"}
    r = post_generic(base, {"type": "build.finished", "id": "run-1", "outcome": "success", "labels": ["branch_created"], **common})
    assert r.status_code == 202, r.text
    wait_for(lambda: c.snapshot("music-android/1.0.0").release.stage == "branch", 20, log_path)
    r = post_generic(
        base, {"type": "tests.finished", "id": "run-2", "signals": [{"name": "tests_pass_rate", "value": 1.0, "samples": 900}], **common}
    )
    assert r.status_code == 202, r.text
    wait_for(lambda: c.snapshot("music-android/1.0.0").release.stage == "nightly", 20, log_path)
    wait_for(lambda: len(receiver.received) >= 2, 20, log_path)
    sent = receiver.actions()
    assert [a["type"] for a in sent] == ["action.cut_branch", "action.distribute"]
    assert sent[1]["data"]["params"] == {"stage": "nightly", "ring": "employees"}
    snap = c.snapshot("music-android/1.0.0")
    assert [(o.action, o.status) for o in snap.outbox] == [("cut_branch", "done"), ("distribute", "done")]
