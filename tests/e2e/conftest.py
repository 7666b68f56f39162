"""Fixtures for the HTTP API: the app over the parametrized database, tokens per role, signing
helpers for every webhook source, and a real uvicorn server on a free localhost port.

Events are processed inline (the inline dispatcher) before each response, so a test sees their
effect as soon as the request returns.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, IN_CI, MONDAY, inline

GITHUB_SECRET = "gh-e2e-secret"
GITLAB_TOKEN = "gl-e2e-token"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"e2e standard webhooks secret 32b").decode()
OLD_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"the secret before the rotation!!").decode()
BRANCH_DAY = MONDAY + timedelta(days=4, hours=1)  # Friday 10:00 Stockholm: the weekly branch cut

ROLE_NAMES = {"viewer": "vera", "release_manager": "rita", "admin": "ada"}


@pytest.fixture(scope="session")
def fixtures_root() -> Path:
    if not FIXTURES.is_dir():
        msg = f"shared fixtures not found at {FIXTURES} (set CONDUCTOR_FIXTURES_DIR)"
        if IN_CI:
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)
    return FIXTURES


@pytest.fixture
def api_settings(database):
    from conductor.config import Settings

    return Settings(
        database_url=database.url,
        broker_url=None,
        github_secret=GITHUB_SECRET,
        gitlab_token=GITLAB_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
    )


@pytest.fixture
def make_api(conductor, api_settings):
    """Build an app around the test's conductor; keyword arguments go to create_app."""
    from conductor.api import create_app

    def make(settings=None, **kwargs):
        settings = settings or api_settings
        return create_app(settings, kwargs.pop("app", None) or inline(conductor, settings), **kwargs)

    return make


@pytest.fixture
def api_app(make_api):
    return make_api()


@pytest.fixture
def client(api_app):
    from fastapi.testclient import TestClient

    with TestClient(api_app) as c:
        yield c


@pytest.fixture
def tokens(conductor) -> dict[str, str]:
    """One token per role: vera (viewer), rita (release_manager), ada (admin)."""
    from conductor.service.tokens import create_token

    return {role: create_token(conductor, name, role) for role, name in ROLE_NAMES.items()}


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def event_outcome(client, accepted: dict[str, Any], token: str) -> dict[str, Any]:
    """What became of an accepted webhook (GET its event_url): status, note, release_id."""
    r = client.get(accepted["event_url"], headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ signing


def github_headers(body: bytes, event: str, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    from conductor.sources import github_signature

    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(secret, body),
    }


def gitlab_headers(event: str, uuid: str, token: str = GITLAB_TOKEN) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Event-UUID": uuid, "X-Gitlab-Token": token}


def standard_headers(body: bytes, msg_id: str, at, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    from conductor.sources import standard_webhook_headers

    return standard_webhook_headers(secret, msg_id, body, at)


def cloudevent_request(cdevent: dict[str, Any], mode: str, msg_id: str, at, secret: str = WEBHOOK_SECRET) -> tuple[dict[str, str], bytes]:
    """Headers and body of a signed CloudEvent in binary or structured mode."""
    from conductor.sources import cloudevent_binary_headers, cloudevent_structured

    if mode == "binary":
        headers, body = cloudevent_binary_headers(cdevent)
    else:
        body = cloudevent_structured(cdevent)
        headers = {"Content-Type": "application/cloudevents+json"}
    return {**headers, **standard_headers(body, msg_id, at, secret)}, body


def generic_body(**fields: Any) -> bytes:
    return json.dumps({"type": "build.finished", "outcome": "success", **fields}).encode()


def inbox_rows(database) -> list[Any]:
    from sqlalchemy import select

    from conductor.store.models import InboxEvent

    with database.read() as s:
        rows = list(s.scalars(select(InboxEvent).order_by(InboxEvent.id)))
        s.expunge_all()
        return rows


# ------------------------------------------------------------------ a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-e2e", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ------------------------------------------------------------------ releases in a known state


def cut_branch(conductor, clock, version: str = "9.0.0") -> int:
    """A music-android release on its release branch (branch day passed)."""
    from conductor.service import Actor

    rid = conductor.start_release("music-android", version, Actor("rita"))
    clock.now = max(clock.now, BRANCH_DAY)
    conductor.tick()
    assert conductor.snapshot(rid).release.stage == "branch"
    return rid


def ask_for_approval(conductor, clock, version: str = "9.0.0") -> int:
    """A release whose branch -> nightly decision waits for a human: tests pass at 99 % (grey zone)."""
    rid = cut_branch(conductor, clock, version)
    conductor.record_signal(rid, "build_green", True, source="ci")
    conductor.record_signal(rid, "tests_pass_rate", 0.99, samples=900, source="junit")
    snap = conductor.snapshot(rid)
    assert snap.pending is not None, snap.waiting_for
    return rid
