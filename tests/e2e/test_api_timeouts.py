"""A database that stops answering costs seconds, never a hung request (issue: a frozen PostgreSQL
held a webhook for 15 s): the webhook is a 503 within its store timeout, and connecting gives up
after the connect timeout. The frozen server is a real socket that accepts and never answers."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.e2e.conftest import WEBHOOK_SECRET, generic_body, standard_headers


@pytest.fixture
def frozen_server():
    """A TCP server that accepts connections and never says a word (a SIGSTOPped PostgreSQL)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(1)
    for c in held:
        c.close()
    srv.close()


def test_a_webhook_is_a_503_within_seconds_when_the_database_is_frozen(frozen_server, catalog, clock):
    from conductor.api import create_app
    from conductor.bootstrap import build
    from conductor.config import Settings
    from conductor.facade import Conductor
    from conductor.store.db import Database, Timeouts

    url = f"postgresql+psycopg://postgres@127.0.0.1:{frozen_server}/frozen"
    settings = Settings(database_url=url, broker_url=None, webhook_secret=WEBHOOK_SECRET, webhook_store_timeout_s=1.5)
    frozen = Conductor(Database(url, timeouts=Timeouts(connect_s=5)), catalog, clock)  # connecting alone would wait 5 s
    app = create_app(settings, build(settings, mode="inline", context=frozen))
    body = generic_body(id="frozen-1", repository="acme/music-android", branch="release/9.0.0")
    with TestClient(app) as client:
        started = time.monotonic()
        r = client.post("/webhooks/generic", content=body, headers=standard_headers(body, "msg-frozen-1", datetime.now(UTC)))
        took = time.monotonic() - started
    assert r.status_code == 503 and r.json()["error"] == "ServiceUnavailable" and "did not answer within 1.5 s" in r.json()["detail"]
    assert took < 4, took


def test_connecting_to_a_frozen_database_gives_up_after_the_connect_timeout(frozen_server):
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from conductor.store.db import Database, Timeouts

    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{frozen_server}/frozen", timeouts=Timeouts(connect_s=1))
    started = time.monotonic()
    with pytest.raises(OperationalError), db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert time.monotonic() - started < 5
    db.dispose()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_statement_and_lock_timeouts_are_set_on_postgresql(database):
    from sqlalchemy import text

    from conductor.store.db import Database, Timeouts

    db = Database(database.url, timeouts=Timeouts(statement_s=7, lock_s=3))
    with db.engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "7s"
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "3s"
    db.dispose()
