"""Hostile or malformed definition files: each is refused with a DefinitionError naming file, line
and field, quickly, instead of exhausting memory, recursing or leaking another exception type."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conductor.domain.errors import DefinitionError
from conductor.domain.loader import parse_pipeline

ROOT = Path(__file__).resolve().parents[2]
ALIAS_REFUSAL = "YAML anchors/aliases are not allowed in definitions"


def billion_laughs(levels: int, width: int = 9) -> str:
    """The classic alias bomb as nested lists: level n holds `width` aliases of level n-1.

    It expands to width**levels leaves; 9 levels is about 400 bytes and 387 million strings.
    """
    lines = ["name: bomb", "l0: &l0 [" + ",".join(["lol"] * width) + "]"]
    for n in range(1, levels + 1):
        lines.append(f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def problems_of(text: str, filename: str = "p.yaml") -> list:
    with pytest.raises(DefinitionError) as exc:
        parse_pipeline(text, filename)
    return exc.value.problems


def run_isolated(code: str, stdin: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with 1 GiB of address space and a timeout.

    For inputs that would hang or exhaust memory if a fix regressed: the test then fails (with
    MemoryError or a timeout) instead of taking the whole test run down with it.
    """
    preexec = None
    if sys.platform.startswith("linux"):
        import resource

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        preexec_fn=preexec,
    )


PARSE_STDIN = """\
import sys
from conductor.domain.loader import parse_pipeline
from conductor.domain.errors import DefinitionError
try:
    parse_pipeline(sys.stdin.read(), "bomb.yaml")
except DefinitionError as exc:
    print(exc)
"""


def test_small_alias_bomb_is_refused_at_its_first_anchor():
    # 9**5 leaves: the old loader expanded it (finite) and then reported unknown keys instead.
    problems = problems_of(billion_laughs(5), "bomb.yaml")
    assert len(problems) == 1
    assert problems[0].file == "bomb.yaml" and problems[0].line == 2 and problems[0].field == "l0"
    assert ALIAS_REFUSAL in problems[0].message


def test_alias_without_anchor_on_the_same_line_names_the_alias_field():
    # An alias is refused where it is used, even far from the anchor (here an undefined one).
    problems = problems_of("name: x\nstages:\n  a: {}\n  b: *nowhere\n")
    assert [(p.line, p.field) for p in problems] == [(4, "stages.b")]
    assert ALIAS_REFUSAL in problems[0].message


def test_anchor_inside_a_list_names_the_key_path():
    problems = problems_of("name: x\ntransitions:\n  - {from: a, to: b}\n  - &t {from: b, to: c}\n")
    assert [(p.line, p.field) for p in problems] == [(4, "transitions.1")]


def test_real_billion_laughs_is_refused_in_bounded_memory():
    # ~400 bytes; the old loader needed minutes and gigabytes (MemoryError under the 1 GiB cap).
    bomb = billion_laughs(9)
    assert len(bomb) < 550
    done = run_isolated(PARSE_STDIN, bomb)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("bomb.yaml:2: l0: ") and ALIAS_REFUSAL in done.stdout


# --- anything else a file can hold comes back as a DefinitionProblem, never another exception ---

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
schedules: {cut: '0 10 * * FRI'}
transitions:
  - {from: start, to: out, gates: [crash_ok]}
  - {from: out, to: done, gates: [crash_ok], on_fail: halt, min_soak: 1h}
"""


def edited(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


def test_minimal_is_valid():
    assert parse_pipeline(MINIMAL).name == "mini"


@pytest.mark.parametrize(
    "text,line,field",
    [
        ("name: " + "[" * 2000 + "]" * 2000 + "\n", 1, "name." + ".".join(["0"] * 31)),
        ("a: " + "{b: " * 2000 + "1" + "}" * 2000 + "\n", 1, "a" + ".b" * 30),
        (
            edited("min_soak: 1h}", "min_soak: 1h, actions: [{action: x, p: " + "[" * 40 + "]" * 40 + "}]}"),
            15,
            "transitions.1.actions.0.p." + ".".join(["0"] * 27),
        ),
    ],
    ids=["lists", "mappings", "action-parameter"],
)
def test_deep_nesting_is_refused_with_its_path(text, line, field):
    # Was a RecursionError from PyYAML's composer (and, below it, from the line index).
    problems = problems_of(text)
    assert [(p.line, p.field) for p in problems] == [(line, field)]
    assert "nested deeper than 32 levels" in problems[0].message


@pytest.mark.parametrize(
    "old,new,line,field",
    [
        ("name: mini", "? [a, b]\n: 1\nname: mini", 1, "<yaml>"),
        ("  start: {}", "  ? {x: 1}\n  : {}\n  start: {}", 7, "stages"),
        ("  start: {}", "  ? !!set {a}\n  : {}\n  start: {}", 7, "stages"),
    ],
)
def test_keys_that_are_lists_or_mappings_are_refused_with_their_path(old, new, line, field):
    problems = problems_of(edited(old, new))
    assert [(p.line, p.field) for p in problems] == [(line, field)]
    assert "a key must be a plain value" in problems[0].message


@pytest.mark.parametrize(
    "old,new,line,field,words",
    [
        ("name: mini", "name: 2020-13-45", 1, "name", "month must be in 1..12"),
        ("name: mini", "name: mini\ndescription: 2020-02-30", 2, "description", "day is out of range"),
        ("name: mini", "name: 2001-12-14t21:59:43.10-25:00", 1, "name", "offset must be"),
        ("name: mini", "name: !!int abc", 1, "name", "invalid literal"),
        ("pass: 99.5", "pass: !!float abc", 5, "gates.crash_ok.pass", "could not convert"),
        ("min_soak: 1h", "min_soak: " + "9" * 5000, 15, "transitions.1.min_soak", "64 bits"),
        ("better: higher,", "better: higher, min_samples: 0x" + "f" * 400 + ",", 5, "gates.crash_ok.min_samples", "64 bits"),
        ("min_soak: 1h", "min_soak: " + ":".join(["59"] * 100), 15, "transitions.1.min_soak", "64 bits"),
        ("min_soak: 1h", "min_soak: 9223372036854775808", 15, "transitions.1.min_soak", "64 bits"),
    ],
)
def test_scalars_that_cannot_be_built_are_refused_on_their_line(old, new, line, field, words):
    # Were ValueErrors from PyYAML's constructor (bad dates, bad tagged scalars, int() limits).
    problems = problems_of(edited(old, new))
    assert [(p.line, p.field) for p in problems] == [(line, field)]
    assert words in problems[0].message and len(problems[0].message) < 300


@pytest.mark.parametrize("soak", ["99999999999999", "99999999999d", "999999999999999h", ".inf", "1.0e+300", ".nan"])
def test_durations_beyond_timedelta_are_problems(soak):
    # Were OverflowErrors out of pydantic's validator, which only turns ValueErrors into problems.
    problems = problems_of(edited("min_soak: 1h", f"min_soak: {soak}"))
    hit = [p for p in problems if p.field == "transitions.1.min_soak"]
    assert hit and hit[0].line == 15, [str(p) for p in problems]


def test_time_zone_that_is_a_directory_is_unknown():
    # ZoneInfo('Europe') raises IsADirectoryError, an OSError the validator did not catch.
    problems = problems_of(edited("name: mini", "name: mini\ntimezone: Europe"))
    assert [(p.line, p.field) for p in problems] == [(2, "timezone")]
    assert "unknown time zone 'Europe'" in problems[0].message


@pytest.mark.parametrize(
    "old,new,field",
    [
        ("{from: start, to: out,", "{from: [start], to: out,", "transitions.0.from"),
        ("{from: start, to: out,", "{from: start, to: {a: 1},", "transitions.0.to"),
        ("signal: crash,", "signal: [crash],", "gates.crash_ok.signal"),
        ("to: out, gates: [crash_ok]}", "to: out, gates: 5}", "transitions.0.gates"),
        ("{from: out, to: done,", "{from: out, to: done, schedule: [cut],", "transitions.1.schedule"),
    ],
)
def test_references_that_are_not_strings_are_type_problems(old, new, field):
    # cross_check looked them up in dicts (TypeError: unhashable) or iterated them (not iterable).
    problems = problems_of(edited(old, new))
    hit = [p for p in problems if p.field == field]
    assert hit and hit[0].line is not None, [str(p) for p in problems]
    assert "valid" in hit[0].message


def test_file_that_is_not_utf8_names_its_line(tmp_path):
    from conductor.domain.errors import NotFound
    from conductor.domain.loader import DefinitionCatalog, load_pipeline

    f = tmp_path / "latin1.yaml"
    f.write_bytes(edited("name: mini", "name: mini\ndescription: caf\xe9").encode("latin-1"))
    with pytest.raises(DefinitionError) as exc:
        load_pipeline(f)
    assert [(p.file, p.line, p.field) for p in exc.value.problems] == [(str(f), 2, "<file>")]
    assert "not UTF-8" in str(exc.value) and "0xe9" in str(exc.value)
    with pytest.raises(NotFound) as miss:
        DefinitionCatalog(tmp_path).get("mini")
    assert "could not be read: latin1.yaml" in str(miss.value)


PARSE_DURATION = """\
import sys
from conductor.domain.definition import parse_duration
try:
    parse_duration(sys.stdin.read())
except ValueError as exc:
    print("refused:", exc)
"""


def test_long_blank_run_in_a_duration_does_not_backtrack():
    # The old pattern tried every split of the blanks among five `\\s*`: 200 took 30 s, 1000 ~forever.
    done = run_isolated(PARSE_DURATION, "1d" + " " * 1000 + "x", timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused:") and "is not a duration" in done.stdout


@pytest.mark.parametrize("value", ["!!binary //79", "!!set {a, b}", "!!omap [{a: 1}]", "!!pairs [{a: 1}]"])
def test_yaml_types_json_cannot_hold_are_refused(value):
    # A definition is pinned to releases as JSON by its content hash; !!binary made content_hash()
    # raise UnicodeDecodeError at release start, and a set hashes in a different order per process.
    problems = problems_of(edited("min_soak: 1h}", f"min_soak: 1h, actions: [{{action: notify, p: {value}}}]}}"))
    assert [(p.line, p.field) for p in problems] == [(15, "transitions.1.actions.0.p")]
    assert f"the {value.split()[0]} tag is not allowed in definitions" in problems[0].message
