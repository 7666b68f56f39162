"""REST for freezes: a release manager stops the line and lifts it; an admin sets a calendar."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import bearer


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_freeze_list_and_lift_over_rest(client, tokens):
    rm, viewer, admin = (bearer(tokens[r]) for r in ("release_manager", "viewer", "admin"))
    r = client.post("/freezes", json={"track": "music-android", "reason": "payments incident"}, headers=rm)
    assert r.status_code == 201, r.text
    assert (r.json()["track"], r.json()["source"], r.json()["actor"]) == ("music-android", "manual", "rita")
    assert [f["reason"] for f in client.get("/freezes", headers=viewer).json()] == ["payments incident"]
    assert client.post("/freezes", json={"reason": "x"}, headers=viewer).status_code == 403
    assert client.post("/freezes/lift", json={"track": "music-android", "reason": "resolved"}, headers=rm).json() == {"lifted": 1}
    assert client.get("/freezes", headers=viewer).json() == []
    bad = client.post("/freezes/calendar", json={"track": "music-android", "calendar": {"holidays": [{"date": "someday"}]}}, headers=admin)
    assert bad.status_code == 422 and "holidays.0.date" in bad.json()["detail"]
    ok = client.post("/freezes/calendar", json={"calendar": {"holidays": [{"date": "2026-12-25"}]}}, headers=admin)
    assert ok.json() == {"freezes": 0, "holidays": 1, "blackouts": 0}
    assert client.post("/freezes", json={"track": "nope", "reason": "x"}, headers=rm).status_code == 404


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_skip_the_next_branch_cut_over_rest(client, tokens, clock):
    rm, viewer = (bearer(tokens[r]) for r in ("release_manager", "viewer"))
    body = {"track": "music-android", "reason": "hack week"}
    r = client.post("/freezes/skip-cut", json=body, headers=rm)
    assert r.status_code == 201, r.text
    skipped = r.json()["skipped"]
    assert [(f["source"], f["reason"]) for f in client.get("/freezes", headers=viewer).json()] == [("skip", "hack week")]
    assert client.post("/freezes/skip-cut", json=body, headers=viewer).status_code == 403
    assert client.post("/freezes/skip-cut", json=body | {"track": "web"}, headers=rm).status_code == 404
    assert client.post("/freezes/skip-cut", json={"track": "music-android"}, headers=rm).status_code == 422
    assert client.post("/freezes/skip-cut/undo", json=body, headers=rm).json() == {"restored": 1}
    assert client.post("/freezes/skip-cut", json=body, headers=rm).json()["skipped"] == skipped
