"""Administration is audited: API tokens, track changes (old and new values, secrets by name only)
and a track's action and notification settings; a change that changes nothing writes nothing.
These rows name no release (track rows carry the track's id; token rows nothing) and are chained
like every other (conductor.service.audit)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from conductor.domain.errors import NotFound
from conductor.service import Actor, audit
from conductor.service.tokens import create_token, revoke_token, set_identities
from conductor.service.tracks import TrackChanges, configure_actions, update_track
from conductor.store.models import AuditEntry

ADA = Actor("ada", "admin")
WHSEC = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
SLACK = "https://hooks.slack.com/services/T000/B000/very-secret-part"


def audit_rows(db, since: int = 0):
    with db.read() as s:
        return s.scalars(select(AuditEntry).where(AuditEntry.id > since).order_by(AuditEntry.id)).all()


def last_id(db) -> int:
    rows = audit_rows(db)
    return rows[-1].id if rows else 0


def test_tokens_are_audited_as_global_rows_without_the_token(conductor, database):
    start = last_id(database)
    token = create_token(conductor, "rita", "release_manager", ["rita@acme.test"], actor=ADA)
    set_identities(conductor, "rita", ["rita", "rita@acme.test"], actor=ADA)
    set_identities(conductor, "rita", ["rita", "rita@acme.test"], actor=ADA)  # the same: nothing changes
    revoke_token(conductor, "rita", actor=ADA)
    revoke_token(conductor, "rita", actor=ADA)  # revoked already: nothing changes
    with pytest.raises(NotFound):
        revoke_token(conductor, "nobody", actor=ADA)
    rows = audit_rows(database, start)
    assert [(r.kind, r.actor, r.release_id, r.track_id) for r in rows] == [
        ("token_created", "ada", None, None),
        ("token_identities_set", "ada", None, None),
        ("token_revoked", "ada", None, None),
    ]
    assert rows[0].data == {"token": "rita", "role": "release_manager", "identities": ["rita@acme.test"]}
    assert rows[0].reason == "rita (release_manager)"
    assert rows[1].data == {"token": "rita", "identities": {"from": ["rita@acme.test"], "to": ["rita", "rita@acme.test"]}}
    assert rows[2].data == {"token": "rita", "role": "release_manager"}
    assert all(token not in json.dumps(r.data) + r.reason for r in rows)
    assert audit.verify(conductor).ok


def test_a_track_change_records_each_field_from_and_to_and_secrets_by_name(conductor, database):
    start = last_id(database)
    update_track(conductor, "music-android", ADA, TrackChanges(
        branch_pattern="rel/{version}", four_eyes=True, repository="acme/music-android",  # the repository is unchanged
        secrets={"github_secret": "gh-s3cret", "webhook_secret": WHSEC},
    ))  # fmt: skip
    update_track(conductor, "music-android", ADA, TrackChanges(clear_repository=True, secrets={"github_secret": None, "gitlab_token": ""}))
    first, second = audit_rows(database, start)
    assert (first.kind, first.actor, first.track_id, first.release_id) == ("track_updated", "ada", "music-android", None)
    assert first.reason == "branch_pattern, four_eyes, secrets"
    assert first.data == {
        "fields": ["branch_pattern", "four_eyes", "secrets"],
        "branch_pattern": {"from": "release/{version}", "to": "rel/{version}"},
        "four_eyes": {"from": False, "to": True},
        "secrets": {"set": ["github_secret", "webhook_secret"], "removed": []},
    }
    assert second.data == {
        "fields": ["repository", "secrets"],
        "repository": {"from": "acme/music-android", "to": None},
        "secrets": {"set": [], "removed": ["github_secret"]},  # gitlab_token was not there: not a change
    }
    assert "gh-s3cret" not in json.dumps(first.data) and "whsec_" not in json.dumps(first.data)


def test_a_track_change_that_changes_nothing_writes_nothing(conductor, database):
    start = last_id(database)
    update_track(conductor, "music-android", ADA, TrackChanges())  # PATCH {}
    update_track(conductor, "music-android", ADA, TrackChanges(branch_pattern="release/{version}", four_eyes=False, secrets={}))
    update_track(conductor, "music-android", ADA, TrackChanges(secrets={"github_secret": None}))  # removing what is not there
    assert audit_rows(database, start) == []


def test_action_and_notification_settings_are_audited_secrets_and_the_slack_url_by_name(conductor, database):
    start = last_id(database)
    configure_actions(conductor, "music-android", ADA, {
        "slack_url": SLACK, "webhook_url": "https://ops.test/hook", "webhook_secret": WHSEC, "events": ["halted"],
        "actions_url": "https://ci.test/actions", "actions_secret": WHSEC,
    })  # fmt: skip
    configure_actions(conductor, "music-android", ADA, {"events": ["halted"], "slack_url": SLACK})  # the same again
    configure_actions(conductor, "music-android", ADA, {})
    configure_actions(
        conductor, "music-android", ADA, {"events": ["halted", "released"], "slack_url": "", "actions_secret": WHSEC[:-4] + "MDA="}
    )
    first, second = audit_rows(database, start)
    assert (first.kind, first.actor, first.track_id, first.release_id) == ("track_updated", "ada", "music-android", None)
    assert first.data == {
        "fields": ["webhook_url", "events", "actions_url", "actions_secret", "slack_url", "webhook_secret"],
        "webhook_url": {"from": None, "to": "https://ops.test/hook"},
        "events": {"from": None, "to": ["halted"]},
        "actions_url": {"from": None, "to": "https://ci.test/actions"},
        "secrets": {"set": ["actions_secret", "slack_url", "webhook_secret"], "removed": []},
    }
    assert first.reason.startswith("actions: webhook_url, events")
    assert second.data == {
        "fields": ["events", "actions_secret", "slack_url"],
        "events": {"from": ["halted"], "to": ["halted", "released"]},
        "secrets": {"set": ["actions_secret"], "removed": ["slack_url"]},
    }
    written = json.dumps([r.data for r in (first, second)]) + first.reason + second.reason
    assert "whsec_" not in written and "very-secret-part" not in written and "hooks.slack.com" not in written


def test_the_incoming_webhook_secret_is_not_taken_for_the_outgoing_one(conductor, database):
    """Track.settings["webhook_secret"] checks incoming webhooks; notify.webhook_secret signs outgoing ones."""
    update_track(conductor, "music-android", ADA, TrackChanges(secrets={"webhook_secret": WHSEC}))
    start = last_id(database)
    configure_actions(conductor, "music-android", ADA, {"webhook_url": "https://ops.test/hook", "webhook_secret": WHSEC})
    (row,) = audit_rows(database, start)
    assert row.data["secrets"] == {"set": ["webhook_secret"], "removed": []}
