"""The CLI as a user runs it: a new process per command, exit codes, and what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_DEFINITIONS

QUICK = """\
name: quick
timezone: UTC
signals:
  build_green: {type: boolean}
  crash_free_sessions: {type: percent}
gates:
  build: {kind: threshold, signal: build_green, better: higher, pass: 1, fail: 0}
  crash: {kind: threshold, signal: crash_free_sessions, better: higher, pass: 99.5, fail: 99, min_samples: 100}
  qa: {kind: signoff, teams: [qa]}
stages:
  branch: {}
  beta: {}
  rollout: {kind: rollout}
  released: {kind: final}
  halted: {kind: halted}
  cancelled: {kind: cancelled}
transitions:
  - {from: branch, to: beta, gates: [build], actions: [{action: distribute, ring: beta}]}
  - {from: beta, to: rollout, gates: [build, qa, crash]}
  - {from: rollout, to: released, gates: [crash], on_fail: halt}
"""


@pytest.fixture
def env(tmp_path):
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "quick.yaml").write_text(QUICK)
    return {
        **os.environ,
        "CONDUCTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "CONDUCTOR_DEFINITIONS_DIR": str(defs),
        "CONDUCTOR_LOG_FORMAT": "json",
        "CONDUCTOR_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }


def run(env, *args, ok=True):
    p = subprocess.run([sys.executable, "-m", "conductor.cli", *args], env=env, capture_output=True, text=True, timeout=60)
    if ok and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}: {p.stderr}")
    return p


SCRIPT = [
    ("start", "app", "1.0", "--definition", "quick", "--as", "rita"),
    ("signal", "app/1.0", "build_green", "true", "--source", "ci"),
    ("signoff", "app/1.0", "qa", "--as", "quinn"),
    ("signal", "app/1.0", "crash_free_sessions", "99.2", "--samples", "500"),
    ("approve", "app/1.0", "--reason", "grey but known", "--as", "rita"),
    ("signal", "app/1.0", "crash_free_sessions", "98.0", "--samples", "900"),
    ("resume", "app/1.0", "--reason", "fixed server side", "--as", "rita"),
    ("signal", "app/1.0", "crash_free_sessions", "99.9", "--samples", "900"),
]


def drive_in_process(database_url: str, defs: Path) -> list[tuple]:
    """The same script, in one process, through one Conductor object."""
    from conductor.domain.loader import DefinitionCatalog
    from conductor.facade import Conductor
    from conductor.service import Actor
    from conductor.store.db import Database, upgrade

    upgrade(database_url)
    c = Conductor(Database(database_url), DefinitionCatalog(defs))
    c.ensure_track("app", "quick")
    rid = c.start_release("app", "1.0", Actor("rita"))
    c.record_signal(rid, "build_green", "true", source="ci")
    c.sign_off(rid, "qa", Actor("quinn"))
    c.record_signal(rid, "crash_free_sessions", "99.2", samples=500, source="cli")
    c.approve(rid, Actor("rita"), "grey but known")
    c.record_signal(rid, "crash_free_sessions", "98.0", samples=900, source="cli")
    c.resume(rid, Actor("rita"), "fixed server side")
    c.record_signal(rid, "crash_free_sessions", "99.9", samples=900, source="cli")
    snap = c.snapshot(rid)
    return snap.release.stage, [(a.kind, a.from_stage, a.to_stage, a.actor, a.reason) for a in snap.audit]


def test_a_release_rebuilt_in_a_new_process_each_step_ends_like_one_process(env, tmp_path):
    for step in SCRIPT:
        run(env, *step)
    shown = json.loads(run(env, "show", "app/1.0", "--json").stdout)
    audit = [(a["kind"], a["from"], a["to"], a["actor"], a["reason"]) for a in shown["audit"]]
    stage, expected = drive_in_process(f"sqlite:///{tmp_path / 'inproc.db'}", Path(env["CONDUCTOR_DEFINITIONS_DIR"]))
    assert shown["stage"] == stage == "released"
    assert audit == expected
    kinds = [a[0] for a in audit]
    assert kinds == [
        "release_started",
        "transitioned",
        "signed_off",
        "approval_requested",
        "approved",
        "transitioned",
        # still grey at the rollout stage: asked again, then the bad value withdraws the question and halts
        "approval_requested",
        "decision_withdrawn",
        "halted",
        "resumed",
        "transitioned",
    ]


def test_validate_reports_every_problem_and_exits_1(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        QUICK.replace("pass: 99.5, fail: 99,", "pass: 99, fail: 99.5,").replace("to: beta, gates: [build]", "to: betta, gates: [bild]")
    )
    p = run(env, "validate", str(bad), ok=False)
    assert p.returncode == 1
    lines = [line for line in p.stderr.splitlines() if line.startswith("error")]
    assert any(f"{bad}:8: gates.crash: bad threshold band" in line for line in lines)
    assert any(f"{bad}:18: transitions.0.to: unknown stage 'betta'" in line for line in lines)
    assert any(f"{bad}:18: transitions.0.gates.0: unknown gate 'bild'" in line for line in lines)
    ok = run(env, "validate", str(SHIPPED_DEFINITIONS))
    assert "ok mobile_weekly" in ok.stdout and "ok desktop" in ok.stdout


def test_diagram_prints_mermaid(env):
    out = run(env, "diagram", str(SHIPPED_DEFINITIONS / "mobile_weekly.yaml")).stdout
    assert out.startswith("stateDiagram-v2") and "beta --> rollout_1 : Advance" in out


@pytest.mark.parametrize(
    "args,words",
    [
        (("show", "app/9.9"), "unknown release 'app/9.9'"),
        (("approve", "app/1.0", "--reason", "x"), "not waiting for approval"),
        (("signal", "app/1.0", "build_green", "maybe"), "'build_green' is a boolean"),
        (("signal", "app/1.0", "nope", "1"), "unknown signal 'nope'"),
        (("start", "app", "1.0"), "already exists"),
        (("start", "web", "1.0", "--definition", "nonexistent"), "no pipeline definition named 'nonexistent'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(env, args, words):
    run(env, "start", "app", "1.0", "--definition", "quick")
    p = run(env, *args, ok=False)
    assert p.returncode == 1, p.stdout
    assert words in p.stderr and "Traceback" not in p.stderr


def test_status_and_show_render(env):
    run(env, "start", "app", "1.0", "--definition", "quick")
    run(env, "signal", "app/1.0", "build_green", "1")
    status = run(env, "status").stdout
    assert "app/1.0" in status and "beta" in status and "waiting for" in status
    shown = run(env, "show", "app/1.0").stdout
    assert "Timeline of app/1.0" in shown and "distribute" in shown


def test_user_text_that_looks_like_markup_is_printed_as_written(env):
    """A pause reason with a closing tag made `status` and `show` exit 1 with a rich MarkupError."""
    reason = "closing tag [/bold] here [red]and[/] <b>"
    run(env, "start", "app", "2.0", "--definition", "quick", "--as", "[/]rita")
    run(env, "pause", "app/2.0", "--reason", reason, "--as", "olga")
    status = run(env, "status")
    assert "closing tag [/bold] here" in status.stdout
    show = run(env, "show", "app/2.0")
    assert reason in show.stdout and "[/]rita" in show.stdout
    assert "MarkupError" not in status.stderr + show.stderr
