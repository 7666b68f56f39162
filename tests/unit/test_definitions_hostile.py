"""Hostile or malformed definition files: each is refused with a DefinitionError naming file, line
and field, quickly, instead of exhausting memory, recursing or leaking another exception type."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conductor.domain.loader import parse_pipeline
from conductor.errors import DefinitionError

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
from conductor.errors import DefinitionError
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
