"""POST /replays: past releases through a definition sent as YAML; nothing is written."""

from __future__ import annotations

import pytest

from tests.conftest import DEFINITIONS
from tests.e2e.conftest import bearer, cut_branch

SHIPPED = (DEFINITIONS / "mobile_weekly.yaml").read_text()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_replay_over_rest(client, tokens, conductor, clock):
    rm = bearer(tokens["release_manager"])
    rid = cut_branch(conductor, clock)
    before = conductor.snapshot(rid)
    r = client.post("/replays", json={"definition": SHIPPED, "since": "30d"}, headers=rm)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["definition"], body["tracks"], body["differing"]) == ("mobile_weekly", ["music-android"], 0)
    (release,) = body["releases"]
    assert release["release"] == "music-android/9.0.0" and release["recorded"][0] == {
        "stage": "trunk", "verdict": "advance", "at": release["recorded"][0]["at"], "detail": "",
    }  # fmt: skip
    after = conductor.snapshot(rid)
    assert (after.release.version_id, len(after.audit)) == (before.release.version_id, len(before.audit))


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"definition": "name: x\nstages: [\n"}, 422, "definition:"),
        ({"definition": "name: x\n"}, 422, "stages"),
        ({"definition": SHIPPED, "track": "web"}, 404, "no track 'web'"),
        ({"definition": SHIPPED, "since": "a while"}, 422, "since"),
        ({"definition": SHIPPED, "write": True}, 422, "write"),
    ],
)
def test_a_bad_replay_request_names_the_problem(client, tokens, body, status, says):
    r = client.post("/replays", json=body, headers=bearer(tokens["release_manager"]))
    assert r.status_code == status, r.text
    assert says in r.text


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_viewer_cannot_replay(client, tokens):
    r = client.post("/replays", json={"definition": SHIPPED}, headers=bearer(tokens["viewer"]))
    assert r.status_code == 403
