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


@pytest.mark.long
def test_a_release_rebuilt_in_a_new_process_each_step_ends_like_one_process(env, tmp_path):
    for step in SCRIPT:
        run(env, *step)
    shown = json.loads(run(env, "show", "app/1.0", "--json").stdout)
    audit = [(a["kind"], a["from"], a["to"], a["actor"], a["reason"]) for a in shown["audit"]]
    stage, expected = drive_in_process(f"sqlite:///{tmp_path / 'inproc.db'}", Path(env["CONDUCTOR_DEFINITIONS_DIR"]))
    assert shown["stage"] == stage == "released"
    assert audit == expected
    kinds = [a[0] for a in audit]
    # Each `conductor signal` is one intake on the timeline (signals_recorded), before what it caused.
    assert kinds == [
        "release_started",
        "signals_recorded",
        "transitioned",
        "signed_off",
        "signals_recorded",
        "approval_requested",
        "approved",
        "transitioned",
        # still grey at the rollout stage: asked again, then the bad value withdraws the question and halts
        "approval_requested",
        "signals_recorded",
        "decision_withdrawn",
        "halted",
        "resumed",
        "signals_recorded",
        "transitioned",
    ]
    assert audit[1][3:] == ("conductor", "signal from ci: build_green")


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
    by_name = run(env, "diagram", "quick").stdout  # a name in CONDUCTOR_DEFINITIONS_DIR
    assert by_name.startswith("stateDiagram-v2") and "beta --> rollout : Advance" in by_name


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


@pytest.mark.parametrize(
    "args,words",
    [
        ((), "Usage: conductor [OPTIONS] COMMAND"),
        (("staus",), "No such command 'staus'. Did you mean 'status'"),
        (("start",), "Missing argument"),
        (("demo", "--speed", "fast"), "Invalid value for '--speed'"),
        (("token", "create", "--role", "admin"), "give the token's NAME"),
        (("replay", "--definition", "x.yaml", "--since", "a while"), "Invalid value for --since"),
    ],
)
def test_usage_errors_are_a_usage_line_and_exit_2_never_a_traceback(env, args, words):
    p = run(env, *args, ok=False)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert words in p.stdout + p.stderr and "Traceback" not in p.stderr


def test_bad_settings_are_one_line_naming_each_variable_never_a_traceback(env):
    bad = {**env, "CONDUCTOR_TICK_INTERVAL_S": "-1", "CONDUCTOR_CDEVENTS_MAP": '[{"path": "subject.id", "pattern": "("}]'}
    p = run(bad, "track", "list", ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "CONDUCTOR_TICK_INTERVAL_S: Input should be greater than 0" in p.stderr
    assert "CONDUCTOR_CDEVENTS_MAP (cdevents_map.0.pattern)" in p.stderr


def test_skip_cut_names_a_pipeline_without_a_scheduled_cut(env):
    run(env, "start", "app", "1.0", "--definition", "quick")
    p = run(env, "skip-cut", "--track", "app", "--reason", "hack week", ok=False)
    assert p.returncode == 1 and "track 'app' (quick) has no scheduled branch cut to skip" in p.stderr


def test_help_does_not_tag_flags_with_types(env):
    shown = run(env, "start", "--help").stdout
    assert "--help" in shown and "<bool>" not in shown and "--install-completion" not in shown


def test_track_settings_from_the_cli_without_showing_secrets(env):
    run(env, "start", "app", "1.0", "--definition", "quick")
    run(env, "track", "update", "app", "--four-eyes", "--github-secret", "s3cr3t-value", "--repository", "acme/app")
    shown = json.loads(run(env, "track", "show", "app", "--json").stdout)
    assert (shown["four_eyes"], shown["repository"], shown["secrets"]) == (True, "acme/app", ["github_secret"])
    run(env, "track", "update", "app", "--no-four-eyes", "--repository", "", "--github-secret", "")
    again = run(env, "track", "show", "app")
    assert "s3cr3t" not in again.stdout and "False" in again.stdout
    assert json.loads(run(env, "track", "show", "app", "--json").stdout)["repository"] is None
    bad = run(env, "track", "update", "app", "--branch-pattern", "release/latest", ok=False)
    assert bad.returncode == 1 and "{version}" in bad.stderr


def test_the_login_pages_token_hint_works_as_written(env):
    token = run(env, "token", "create", "rita", "--role", "release_manager").stdout.strip()
    assert token.startswith("cdt_")
    assert "rita" in run(env, "token", "list").stdout


def test_status_and_show_render(env):
    run(env, "start", "app", "1.0", "--definition", "quick")
    run(env, "signal", "app/1.0", "build_green", "1")
    status = run(env, "status").stdout
    assert "app/1.0" in status and "beta" in status and "waiting for" in status
    assert "✓ build" in status  # a symbol per outcome, readable without colour (piped here)
    assert '"event"' not in status  # no log lines in the output
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


def test_audit_verify_names_a_changed_or_deleted_row_and_export_writes_the_evidence(env, tmp_path):
    import sqlite3

    url = env["CONDUCTOR_DATABASE_URL"]
    drive_in_process(url, Path(env["CONDUCTOR_DEFINITIONS_DIR"]))  # a release with an approval, a halt and a resume
    ok = run(env, "audit", "verify").stdout
    assert "audit chain ok: 16 sealed row(s); head seq 16 " in ok  # the track's row and the release's 15

    evidence = tmp_path / "evidence.jsonl"
    p = run(env, "audit", "export", "--release", "app/1.0", "--output", str(evidence))
    assert f"15 audit row(s) of app/1.0 written to {evidence}" in " ".join(p.stderr.split())
    lines = [json.loads(line) for line in evidence.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(2, 17)) and all(len(line["row_hash"]) == 64 for line in lines)
    approved = next(line for line in lines if line["kind"] == "approved")
    assert (approved["actor"], approved["reason"], approved["decision"]["verdict"]) == ("rita", "grey but known", "ask")
    assert {g["gate"] for g in approved["decision"]["gates"]} == {"build", "qa", "crash"}
    assert [json.loads(line) for line in run(env, "audit", "export", "--release", "1").stdout.splitlines()] == lines
    assert "unknown release 'app/9.9'" in run(env, "audit", "export", "--release", "app/9.9", ok=False).stderr

    db = sqlite3.connect(url.split("///", 1)[1])
    with db:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = ?", (approved["id"],))
    bad = run(env, "audit", "verify", ok=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    said = " ".join(bad.stderr.split())
    assert f"audit chain broken: audit row {approved['id']} (seq {approved['seq']}, approved, release app/1.0 (id 1))" in said
    assert "content does not match its row_hash" in said

    with db:
        db.execute("UPDATE audit_log SET actor = 'rita' WHERE id = ?", (approved["id"],))  # put back: the hash matches again
    run(env, "audit", "verify")
    gone, after = lines[3], lines[4]
    with db:
        db.execute("DELETE FROM audit_log WHERE id = ?", (gone["id"],))
    db.close()
    said = " ".join(run(env, "audit", "verify", ok=False).stderr.split())
    assert f"audit row {after['id']} (seq {after['seq']}, {after['kind']}, release app/1.0 (id 1))" in said
    assert f"at seq {gone['seq']}, are missing (deleted)" in said
