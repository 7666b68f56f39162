"""Health, readiness against real and unreachable services, metrics from the database, logging context."""

from __future__ import annotations

from datetime import timedelta

import pytest
import structlog

from tests.conftest import inline, service_unavailable
from tests.e2e.conftest import ask_for_approval, bearer, github_headers

REDIS_URL = "redis://127.0.0.1:6379/15"


def test_healthz_and_embedded_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "broker": "embedded"}}


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_readiness_checks_the_broker(make_api, api_settings, conductor):
    from fastapi.testclient import TestClient

    from conductor.api.health import broker_reachable

    try:
        broker_reachable(REDIS_URL, timeout=1)
    except Exception as exc:
        service_unavailable("Redis", f"start it (see ../shared/SERVICES.md): {exc}")
    up = api_settings.model_copy(update={"broker_url": REDIS_URL})
    with TestClient(make_api(up)) as client:
        r = client.get("/readyz")
        assert (r.status_code, r.json()["checks"]) == (200, {"database": "ok", "broker": "ok"})
    down = api_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(make_api(down)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and r.json()["checks"]["broker"].startswith("error")


def test_readiness_and_writes_without_a_database(api_settings, catalog, clock):
    from fastapi.testclient import TestClient

    from conductor.api import create_app
    from conductor.facade import Conductor
    from conductor.store.db import Database

    dead = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1")
    c = Conductor(dead, catalog, clock)
    with TestClient(create_app(api_settings, inline(c, api_settings))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error")
        body = b'{"zen": "z", "hook": {}}'
        r = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "dead-1"))
        assert (r.status_code, r.json()["error"]) == (503, "ServiceUnavailable")  # never a 2xx without a durable write
        r = client.get("/releases", headers=bearer("cdt_whatever"))
        assert r.status_code == 503
        assert client.get("/metrics").status_code == 200  # the scrape shows the gap instead of failing
        assert "conductor_metrics_database_up 0.0" in client.get("/metrics").text
    dead.dispose()


def test_metrics_come_from_the_database(client, conductor, clock, tokens):
    rid = ask_for_approval(conductor, clock)
    clock.advance(timedelta(hours=3))
    text = client.get("/metrics").text
    assert 'conductor_pending_approvals{track="music-android"} 1.0' in text
    assert 'conductor_pending_approval_age_seconds{track="music-android"} 10800.0' in text
    assert 'conductor_decisions_total{outcome="ask"} 1.0' in text
    assert 'conductor_transitions_total{stage="branch"} 1.0' in text
    decision = conductor.snapshot(rid).pending.id
    r = client.post(f"/releases/{rid}/decisions/{decision}/approve", json={"reason": "fine"}, headers=bearer(tokens["release_manager"]))
    assert r.status_code == 200
    text = client.get("/metrics").text
    assert 'conductor_human_decisions_total{outcome="approve"} 1.0' in text
    assert 'conductor_transitions_total{stage="nightly"} 1.0' in text
    # asked three hours before the approval moved it
    assert 'conductor_gates_to_transition_seconds_sum{via="approval"} 10800.0' in text
    assert 'conductor_gates_to_transition_seconds_bucket{le="3600.0",via="approval"} 0.0' in text
    assert 'conductor_gates_to_transition_seconds_bucket{le="10800.0",via="approval"} 1.0' in text
    assert "conductor_pending_approvals{" not in text
    # the branch cut at branch day: the robot moved as soon as it could
    assert 'conductor_gates_to_transition_seconds_sum{via="robot"} 0.0' in text


def test_each_app_has_its_own_registry(make_api):
    from fastapi.testclient import TestClient

    body = b'{"zen": "z", "hook": {}}'
    with TestClient(make_api()) as one, TestClient(make_api()) as two:
        one.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "reg-1"))
        assert 'conductor_webhook_events_received_total{source="github"} 1.0' in one.get("/metrics").text
        assert 'conductor_webhook_events_received_total{source="github"}' not in two.get("/metrics").text


def test_request_and_event_ids_are_bound_to_the_logs(client, tokens):
    body = b'{"zen": "z", "hook": {}}'
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        r = client.post("/webhooks/github", content=body, headers={**github_headers(body, "ping", "log-1"), "X-Request-ID": "req-42"})
        client.get("/releases", headers={**bearer(tokens["viewer"]), "X-Request-ID": "req-43"})
    assert r.headers["X-Request-ID"] == "req-42"
    processed = next(e for e in logs if e["event"] == "event_processed")  # in the background task, after the 202
    assert (processed["request_id"], processed["event_id"], processed["delivery_id"]) == ("req-42", r.json()["event_id"], "log-1")
    second = [e for e in logs if e.get("request_id") == "req-43"]
    assert second and all("event_id" not in e and "delivery_id" not in e for e in second)  # cleared between requests
    assert second[-1]["event"] == "request_finished"


def test_conductor_api_command_serves_the_app(tmp_path):
    """`conductor api` as an operator runs it: its own process, configured by the environment."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.e2e.conftest import WEBHOOK_SECRET, free_port

    port = free_port()
    env = {
        **os.environ,
        "CONDUCTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
        "CONDUCTOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CONDUCTOR_LOG_FORMAT": "json",
        "CONDUCTOR_LOG_LEVEL": "WARNING",
    }
    env.pop("CONDUCTOR_BROKER_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conductor.cli", "api", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "conductor api did not come up"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "broker": "embedded"}
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["info"]["title"] == "Conductor"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
