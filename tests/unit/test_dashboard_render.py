"""The dashboard's formatters (conductor.api.dashboard.render): pure functions, no server."""

from __future__ import annotations

from datetime import timedelta

from conductor.api.dashboard.render import duration


def test_durations_are_never_negative():
    assert duration(timedelta(days=2, hours=3, minutes=5)) == "2d 3h"
    assert duration(timedelta(minutes=45)) == "45m"
    assert duration(timedelta(hours=-15, minutes=-51)) == "0s"
    assert duration(None) == "–"


def _row(i, kind, reason="", **data):
    from datetime import UTC, datetime

    from conductor.read.records import AuditInfo

    return AuditInfo(i, 1, "app", datetime(2026, 11, 23, 8, i, tzinfo=UTC), "conductor", kind, None, None, reason, None, None, data)


def test_the_timeline_folds_runs_of_skipped_actions_and_signal_reports():
    from conductor.read.page import timeline

    audit = (
        _row(1, "release_started"),
        _row(2, "action_skipped", "cut_branch skipped: no vcs"),
        _row(3, "action_skipped", "distribute skipped: no store"),
        _row(4, "action_skipped", "notify skipped: no channel"),
        _row(5, "signals_recorded", "signal from jira: open_blockers"),
        _row(6, "action_skipped", "notify skipped: no channel"),
    )
    items = timeline(audit)
    assert [(i.kind, [a.id for a in i.entries]) for i in items] == [
        ("action_skipped", [6]),
        ("signals_recorded", [5]),
        ("action_skipped", [4, 3, 2]),
        ("release_started", [1]),
    ]
    assert items[2].folded and not items[0].folded and items[2].latest.id == 4


def test_a_signal_intake_lists_its_values_on_the_timeline():
    from conductor.api.dashboard.render import audit_reason

    row = _row(1, "signals_recorded", "signals from github: build_green, crash", values={"build_green": True, "crash": None})
    assert audit_reason(row) == "signals from github: build_green true, crash error"
    assert audit_reason(_row(2, "paused", "store outage")) == "store outage"
