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


def test_numbers_are_never_in_exponent_form():
    from conductor.api.dashboard.render import number

    assert [number(v) for v in (52063.0, 156189, 99.22, 0.21, 1234.56, 0.0123, None)] == [
        "52,063",
        "156,189",
        "99.22",
        "0.21",
        "1,234.6",
        "0.0123",
        "–",
    ]


def test_machine_times_in_stored_texts_read_as_local_times():
    from conductor.api.dashboard.render import human_text, local_time

    tz = "Europe/Stockholm"
    assert human_text("soak until 2026-11-30T06:39:28.376136+00:00", tz) == "soak until Mon 30 Nov 07:39 CET"
    assert human_text("schedule until 2026-07-03T08:00:00Z", tz) == "schedule until Fri 03 Jul 10:00 CEST"
    assert human_text("failed: crash (98 ≤ 99)", tz) == "failed: crash (98 ≤ 99)"
    from datetime import UTC, datetime

    assert local_time(datetime(2026, 11, 30, 6, 39, tzinfo=UTC), tz) == "Mon 30 Nov 07:39 CET"


def test_gate_bands_in_words():
    from conductor.domain.definition import CountGate, ThresholdGate
    from conductor.read.page import thresholds_text

    assert thresholds_text(CountGate(kind="count", signal="open_blockers", max=0)) == "fails > 0"
    assert thresholds_text(CountGate(kind="count", signal="active_users", min=5000)) == "needs ≥ 5000"
    crash = ThresholdGate(kind="threshold", signal="crash_free_sessions", better="higher", **{"pass": 99.5, "fail": 99})
    assert thresholds_text(crash) == "passes ≥ 99.5, fails ≤ 99"


def test_what_a_release_waits_for_reads_as_one_sentence():
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from conductor.api.dashboard.render import waiting_text
    from conductor.read.status import Waiting

    now = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    until = now + timedelta(hours=1, minutes=39)
    soak = SimpleNamespace(waiting=Waiting("soak", "the soak to end", until=until), timezone="Europe/Stockholm")
    assert waiting_text(soak, now) == "the soak to end at Mon 30 Nov 07:39 CET"
    since = now - timedelta(hours=2)
    human = SimpleNamespace(waiting=Waiting("human", "a release manager to resume or cancel", since=since), timezone="UTC")
    assert waiting_text(human, now) == "a release manager to resume or cancel (for 2h)"


def test_the_state_diagram_has_one_cancel_edge_no_guards_and_stage_names_as_written():
    from conductor.api.dashboard.render import mermaid_source
    from conductor.domain.loader import DefinitionCatalog
    from tests.conftest import DEFINITIONS

    text = mermaid_source(DefinitionCatalog(DEFINITIONS).get("mobile_weekly"), "rollout_1")
    edges = [line.strip() for line in text.splitlines() if "-->" in line]
    assert [e for e in edges if "cancelled" in e] == ["any_live_stage --> cancelled : cancel"]
    assert "halted --> rollout_1 : resume" in edges and "beta --> rollout_1" in edges  # advances unlabelled
    assert "halted_from" not in text and "Advance" not in text and "rollout 1" not in text
    assert text.splitlines()[-1] == "    class rollout_1 active"
