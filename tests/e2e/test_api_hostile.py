"""Inputs found by hostile testing that gave 500, 503 or a silent pass; each is a clear answer now.

(Issue 11: long delivery ids, broken definition files beside good ones, an XML encoding Python
does not know, replayed GitHub bodies, aborted uploads.)"""

from __future__ import annotations

import shutil

import pytest
import structlog

from tests.conftest import DEFINITIONS
from tests.e2e.conftest import bearer, generic_body, github_headers, inbox_rows, standard_headers


def test_a_github_delivery_id_longer_than_the_column_is_stored_and_deduplicated(client, database):
    body = b'{"zen": "Design for failure.", "hook": {}}'
    delivery = "g" * 250
    first = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", delivery))
    again = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", delivery))
    assert (first.status_code, again.status_code) == (202, 202), first.text
    assert first.json()["delivery_id"] == delivery and again.json()["duplicate"] is True
    [row] = inbox_rows(database)
    assert row.delivery_id.startswith("sha256:") and row.payload["delivery_id"] == delivery


def test_a_generic_webhook_id_of_201_characters_is_stored(client, clock, database):
    msg_id = "w" * 201
    body = generic_body(id="run-201", repository="acme/music-android", branch="release/9.0.0", sha="3484a3f")
    r = client.post("/webhooks/generic", content=body, headers=standard_headers(body, msg_id, clock.now))
    assert r.status_code == 202, r.text
    assert client.post("/webhooks/generic", content=body, headers=standard_headers(body, msg_id, clock.now)).json()["duplicate"]
    assert len(inbox_rows(database)) == 1


def test_a_replayed_github_body_under_a_new_delivery_id_is_a_duplicate(client, database):
    body = b'{"zen": "Approachable is better than simple.", "hook": {}, "repository": {"full_name": "acme/music-android"}}'
    first = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "orig-1"))
    replay = client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "replay-2"))
    assert replay.status_code == 202 and replay.json()["duplicate"] is True
    assert replay.json()["event_id"] == first.json()["event_id"]
    assert [r.delivery_id for r in inbox_rows(database)] == ["orig-1"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_replay_guard_can_be_turned_off(make_api, api_settings, database):
    from fastapi.testclient import TestClient

    body = b'{"zen": "Speak like a human.", "hook": {}}'
    with TestClient(make_api(api_settings.model_copy(update={"replay_window_s": 0}))) as client:
        client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "a-1"))
        assert client.post("/webhooks/github", content=body, headers=github_headers(body, "ping", "a-2")).json()["duplicate"] is False


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_junit_upload_in_an_unknown_encoding_is_422(client, conductor, clock, tokens):
    from tests.e2e.conftest import cut_branch

    rid = cut_branch(conductor, clock)
    xml = b'<?xml version="1.0" encoding="x-bogus"?><testsuite name="s"><testcase name="a"/></testsuite>'
    r = client.post(f"/releases/{rid}/test-reports", content=xml,
                    headers={**bearer(tokens["release_manager"]), "Content-Type": "application/xml"})  # fmt: skip
    assert (r.status_code, r.json()["field"]) == (422, "xml.encoding") and "x-bogus" in r.json()["detail"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_broken_definition_beside_a_good_one_blocks_nothing_and_leaks_no_path(api_settings, conductor, catalog, tmp_path, tokens):
    """POST /tracks and POST /releases for a valid definition work while an unrelated file is
    broken; asking for the broken one says so by file name, never by the server's path."""
    from fastapi.testclient import TestClient

    from conductor.api import create_app
    from conductor.domain.loader import DefinitionCatalog
    from tests.conftest import inline

    defs = tmp_path / "server-secret-dir"
    defs.mkdir()
    shutil.copy(DEFINITIONS / "mobile_weekly.yaml", defs)
    (defs / "broken.yaml").write_text("name: broken\nstages: [\n")
    conductor.catalog = DefinitionCatalog(defs)
    admin, rm = bearer(tokens["admin"]), bearer(tokens["release_manager"])
    with TestClient(create_app(api_settings, inline(conductor, api_settings))) as client:
        r = client.post("/tracks", headers=admin, json={"id": "music-ios", "definition": "mobile_weekly"})
        assert r.status_code == 201, r.text
        r = client.post("/releases", headers=rm, json={"track": "music-ios", "release_version": "1.0"})
        assert r.status_code == 201, r.text
        r = client.post("/tracks", headers=admin, json={"id": "other", "definition": "broken"})
        assert r.status_code == 404 and "broken.yaml" in r.json()["detail"]
        assert str(defs) not in r.text and "server-secret-dir" not in r.text


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_an_upload_the_client_abandons_is_one_log_line_not_an_error(client, conductor, clock, tokens):
    """The client went away mid-body: logged once at info level, no traceback, no 'request_crashed'."""
    from starlette.requests import ClientDisconnect

    import conductor.api.releases as releases_api
    from tests.e2e.conftest import cut_branch

    rid = cut_branch(conductor, clock)

    async def gone(request, *args, **kwargs):
        raise ClientDisconnect()

    with structlog.testing.capture_logs() as logs, pytest.MonkeyPatch.context() as mp:
        mp.setattr(releases_api.Request, "body", gone)
        r = client.post(f"/releases/{rid}/test-reports", content=b"<testsuite/>",
                        headers={**bearer(tokens["release_manager"]), "Content-Type": "application/xml"})  # fmt: skip
    assert r.status_code == 400
    assert [e["event"] for e in logs if e["log_level"] in ("error", "critical")] == []
    aborted = [e for e in logs if e["event"] == "request_aborted"]
    assert len(aborted) == 1 and aborted[0]["log_level"] == "info" and "exc_info" not in aborted[0]
