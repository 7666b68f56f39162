"""Who may do what: (no token, viewer, release_manager, admin) x every write, each asserted, plus reads.

A refused write changes nothing; an allowed one is in the audit log under the token's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import ROLE_NAMES, ask_for_approval, bearer, cut_branch

ROLES = ["none", "viewer", "release_manager", "admin"]
RANK = {"none": -1, "viewer": 0, "release_manager": 1, "admin": 2}
XML = b'<testsuite name="s">' + b"".join(b'<testcase classname="c" name="t%d"/>' % i for i in range(60)) + b"</testsuite>"


@dataclass
class Write:
    needs: str  # the lowest role allowed
    ok: int  # the status when allowed
    request: Callable[[Any, Any], tuple[str, str, dict[str, Any], int | None]]  # -> method, path, kwargs, release id
    audit_kind: str | None = None


def _on_release(path: str, kind: str, body: dict | None = None, setup=cut_branch, **kwargs) -> Write:
    def request(conductor, clock):
        rid = setup(conductor, clock)
        if path.endswith("/resume"):
            from conductor.service import Actor

            conductor.pause(rid, Actor("olle"), "for the test")
        decision = conductor.snapshot(rid).pending
        url = path.format(rid=rid, decision=decision.id if decision else 0)
        return "POST", url, ({"json": body} if body is not None else kwargs), rid

    return Write("release_manager", 200, request, kind)


WRITES: dict[str, Write] = {
    "create_track": Write("admin", 201, lambda c, clock: ("POST", "/tracks", {"json": {"id": "web", "definition": "desktop"}}, None)),
    "update_track": Write("admin", 200, lambda c, clock: ("PATCH", "/tracks/music-android", {"json": {"four_eyes": True}}, None)),
    "create_release": Write(
        "release_manager",
        201,
        lambda c, clock: ("POST", "/releases", {"json": {"track": "music-android", "release_version": "9.9.0"}}, None),
        "release_started",
    ),
    "push_signals": _on_release("/releases/{rid}/signals", "signals_recorded", {"signals": [{"name": "build_green", "value": True}]}),
    "test_report": _on_release(
        "/releases/{rid}/test-reports", "signals_recorded", content=XML, headers={"Content-Type": "application/xml"}
    ),
    "sign_off": _on_release("/releases/{rid}/signoffs", "signed_off", {"team": "playback"}),
    "approve": _on_release("/releases/{rid}/decisions/{decision}/approve", "approved", {"reason": "seen it"}, setup=ask_for_approval),
    "reject": _on_release("/releases/{rid}/decisions/{decision}/reject", "rejected", {"reason": "not yet"}, setup=ask_for_approval),
    "pause": _on_release("/releases/{rid}/pause", "paused", {"reason": "wait"}),
    "resume": _on_release("/releases/{rid}/resume", "resumed", {"reason": "go"}),
    "cancel": _on_release("/releases/{rid}/cancel", "cancelled", {"reason": "scrap"}),
}


def _state(conductor) -> tuple:
    """Everything a write could change: tracks, releases (with versions) and the audit log."""
    from sqlalchemy import select

    from conductor.store.models import AuditEntry, Release, SignalRow, Track

    with conductor.db.read() as s:
        return (
            [(t.id, t.four_eyes, t.repository) for t in s.scalars(select(Track).order_by(Track.id))],
            [(r.id, r.stage, r.version_id, r.paused) for r in s.scalars(select(Release).order_by(Release.id))],
            [(a.id, a.kind, a.actor) for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))],
            s.scalars(select(SignalRow.id)).all(),
        )


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("write", sorted(WRITES))
def test_authorization_matrix(client, conductor, clock, tokens, write, role):
    spec = WRITES[write]
    method, path, kwargs, rid = spec.request(conductor, clock)
    headers = {**kwargs.pop("headers", {}), **bearer(tokens.get(role))}
    before = _state(conductor)
    r = client.request(method, path, headers=headers, **kwargs)
    if role == "none":
        assert (r.status_code, r.json()["error"]) == (401, "Unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"
    elif RANK[role] < RANK[spec.needs]:
        assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
        assert spec.needs in r.json()["detail"]
    else:
        assert r.status_code == spec.ok, r.text
        if spec.audit_kind:
            rid = rid or r.json()["id"]
            mine = [a for a in conductor.snapshot(rid).audit if a.kind == spec.audit_kind]
            assert mine and mine[-1].actor == ROLE_NAMES[role]
        return
    assert _state(conductor) == before  # refused: nothing changed


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_reads_need_a_valid_token(client, conductor, clock, tokens):
    from conductor.service.tokens import create_token, revoke_token

    rid = ask_for_approval(conductor, clock)
    decision = conductor.snapshot(rid).pending.id
    reads = ["/tracks", "/tracks/music-android", "/releases", f"/releases/{rid}", f"/releases/{rid}/decisions/{decision}"]
    gone = create_token(conductor, "gone", "admin")
    revoke_token(conductor, "gone")
    for path in reads:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer("cdt_not-a-real-token")).status_code == 401, path
        assert client.get(path, headers=bearer(gone)).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Basic dml2YTpwdw=="}).status_code == 401, path
        for role in ("viewer", "release_manager", "admin"):
            assert client.get(path, headers=bearer(tokens[role])).status_code == 200, (path, role)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path
