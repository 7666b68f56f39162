from datetime import timedelta
from pathlib import Path

import pytest

from conductor.domain.definition import parse_duration
from conductor.domain.errors import DefinitionError
from conductor.domain.loader import load_pipeline, parse_pipeline, validate_paths

DEFS = Path(__file__).resolve().parents[2] / "state_definitions"

MINIMAL = """\
name: mini
signals:
  crash: {type: percent}
gates:
  crash_ok: {kind: threshold, signal: crash, better: higher, pass: 99.5, fail: 99}
stages:
  start: {}
  out: {kind: rollout}
  done: {kind: final}
  halted: {kind: halted}
  cancelled: {kind: cancelled}
transitions:
  - {from: start, to: out, gates: [crash_ok]}
  - {from: out, to: done, gates: [crash_ok], on_fail: halt, min_soak: 1h}
"""


def problems_of(text: str) -> list:
    with pytest.raises(DefinitionError) as exc:
        parse_pipeline(text, "p.yaml")
    return exc.value.problems


def test_shipped_definitions_are_valid_and_distinct():
    pipelines, problems = validate_paths([DEFS])
    assert problems == []
    by_name = {p.name: p for p in pipelines}
    assert set(by_name) == {"mobile_weekly", "desktop", "trial"}
    mobile = by_name["mobile_weekly"]
    assert mobile.stage_order() == ["trunk", "branch", "nightly", "alpha", "beta", "rollout_1", "rollout_100", "released"]
    assert mobile.halt_stage == "halted" and mobile.cancel_stage == "cancelled"
    assert mobile.advance_from("rollout_1").on_fail == "halt"
    assert mobile.advance_from("beta").on_fail == "hold"
    assert mobile.advance_from("trunk").schedule == "branch_cut"
    assert by_name["desktop"].stage_order() == ["main", "beta_channel", "general", "done"]
    trial = by_name["trial"]  # the README's tour: no schedule, no soak over a few minutes
    assert all(t.schedule is None and t.min_soak <= timedelta(minutes=2) for t in trial.transitions)


def test_rollout_percentages_increase_along_the_path():
    text = MINIMAL.replace("  out: {kind: rollout}", "  out: {kind: rollout, percent: 50}\n  more: {kind: rollout, percent: 20}")
    text = text.replace("{from: out, to: done,", "{from: out, to: more, on_fail: halt, gates: [crash_ok]}\n  - {from: more, to: done,")
    (hit,) = [p for p in problems_of(text) if p.field == "stages.more.percent"]
    assert "20% after out's 50%" in hit.message and hit.line == 9  # the line of stage more


def test_minimal_definition_parses():
    p = parse_pipeline(MINIMAL)
    assert p.initial_stage == "start"
    assert p.advance_from("out").min_soak == timedelta(hours=1)


def test_three_mistakes_are_all_reported_with_lines():
    text = MINIMAL.replace("pass: 99.5, fail: 99", "pass: 99, fail: 99.5").replace(
        "{from: start, to: out, gates: [crash_ok]}", "{from: start, to: outt, gates: [crash_okay]}"
    )
    problems = problems_of(text)
    found = {(p.line, p.field, p.message.split(":")[0].split(" ")[0]) for p in problems}
    assert (5, "gates.crash_ok", "bad") in found  # bad threshold band
    assert any(p.line == 13 and p.field == "transitions.0.to" and "unknown stage 'outt'" in p.message for p in problems)
    assert any(p.line == 13 and p.field == "transitions.0.gates.0" and "unknown gate 'crash_okay'" in p.message for p in problems)
    assert all(p.file == "p.yaml" for p in problems)


def test_yaml_syntax_error_names_the_line():
    problems = problems_of(MINIMAL.replace("  out: {kind: rollout}", "  out: {kind: rollout"))
    assert len(problems) == 1
    assert problems[0].field == "<yaml>" and problems[0].line in (8, 9)


@pytest.mark.parametrize(
    "old,new,field,words",
    [
        ("min_soak: 1h", "min_soak: soon", "transitions.1.min_soak", "not a duration"),
        ("  done: {kind: final}", "  done: {kind: final}\n  orphan: {kind: final}", "stages.orphan", "unreachable"),
        ("name: mini", "name: mini\nschedules: {cut: '61 * * * *'}", "schedules.cut", "cron"),
        ("name: mini", "name: mini\ntimezone: Mars/Olympus", "timezone", "time zone"),
        ("signal: crash,", "signal: crashes,", "gates.crash_ok.signal", "unknown signal"),
        ("{from: start, to: out, gates: [crash_ok]}", "{from: start, to: out, on_fail: halt}", "transitions.0.on_fail", "rollout"),
        ("on_fail: halt", "on_fail: explode", "transitions.1.on_fail", "hold"),
        ("crash: {type: percent}", "crash: {type: float}", "signals.crash.type", "number"),
        ("{from: out, to: done,", "{from: out, to: done, schedule: friday,", "transitions.1.schedule", "unknown schedule"),
        (
            "  - {from: start, to: out, gates: [crash_ok]}\n",
            "  - {from: start, to: out, gates: [crash_ok]}\n  - {from: start, to: done}\n",
            "transitions.1.from",
            "already has",
        ),
        # Names the runtime cannot hold: a state machine needs identifiers; releases.stage is 50 wide.
        ("  out: {kind: rollout}", "  out: {kind: rollout}\n  beta one: {}", "stages.beta one", "stage name 'beta one'"),
        ("  out: {kind: rollout}", "  out: {kind: rollout}\n  " + "s" * 51 + ": {}", "stages." + "s" * 51, "at most 50 characters"),
        ("  crash: {type: percent}", "  crash: {type: percent}\n  crash rate: {type: percent}", "signals.crash rate", "signal name"),
        # Actions: a known name with parameters that fit it; percentages that a store can take.
        ("gates: [crash_ok]}", "gates: [crash_ok], actions: [{action: launch_rocket}]}", "transitions.0.actions.0", "unknown action"),
        ("gates: [crash_ok]}", "gates: [crash_ok], actions: [{action: distribute}]}", "transitions.0.actions.0", "ring: Field required"),
        ("gates: [crash_ok]}", "gates: [crash_ok], actions: [{action: set_rollout, pct: 5}]}", "transitions.0.actions.0", "pct"),
        ("gates: [crash_ok]}", "gates: [crash_ok], actions: [{action: set_rollout}]}", "transitions.0.actions.0", "needs a percent"),
        ("  out: {kind: rollout}", "  out: {kind: rollout, percent: 0}", "stages.out.percent", "greater than 0"),
        ("  out: {kind: rollout}", "  out: {kind: rollout, percent: 120}", "stages.out.percent", "less than or equal to 100"),
        ("  start: {}", "  start: {percent: 5}", "stages.start", "percent is for rollout stages"),
    ],
)
def test_each_mistake_is_named(old, new, field, words):
    assert old in MINIMAL
    problems = problems_of(MINIMAL.replace(old, new, 1))
    hit = [p for p in problems if p.field == field]
    assert hit, [str(p) for p in problems]
    assert words in hit[0].message
    assert hit[0].line is not None


def test_unknown_keys_are_refused():
    problems = problems_of(MINIMAL.replace("better: higher,", "better: higher, pas: 3,"))
    assert any("pas" in p.field and "Extra inputs" in p.message for p in problems)


def test_not_a_mapping():
    assert problems_of("- just\n- a list\n")[0].field == "<root>"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("1d12h", timedelta(hours=36)),
        ("PT2H", timedelta(hours=2)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "soon", "-1h", -5, True, "12 parsecs"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_content_hash_changes_with_content_only():
    a, b = parse_pipeline(MINIMAL), parse_pipeline("# a comment\n" + MINIMAL)
    assert a.content_hash() == b.content_hash()
    assert parse_pipeline(MINIMAL.replace("99.5", "99.6")).content_hash() != a.content_hash()


def test_unreadable_file(tmp_path):
    with pytest.raises(DefinitionError) as exc:
        load_pipeline(tmp_path / "nope.yaml")
    assert "cannot read" in str(exc.value)


def test_duplicate_names_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL)
    pipelines, problems = validate_paths([tmp_path])
    assert len(pipelines) == 1 and "also used by" in problems[0].message
