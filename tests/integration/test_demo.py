"""`make demo`: the story it tells, and `conductor replay` on the database it leaves (one demo run
for both: it is the slowest thing the tests set up)."""

import hashlib
import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from rich.console import Console


@pytest.mark.long
def test_demo_walks_a_to_released_and_halts_b_and_replay_reads_its_database(tmp_path):
    from conductor.demo import run_demo

    buf = StringIO()
    code = run_demo(Console(file=buf, width=160), speed=0, workdir=tmp_path)
    text = buf.getvalue()
    assert code == 0, text[-3000:]
    assert "music-android/8.8.0 paused for approval" in text and "fingerprint" in text
    # B's halt is the statistical gate's, and its card says by how much and how sure.
    assert (
        "music-android/8.9.0 halted by the robot" in text and "regressed +0." in text and "99% sure it is worse by more than 0.25pp" in text
    )
    assert "A: released, B: halted (halted from rollout_1)" in text
    # The robot's other hands, against the repository's contract fakes of GitHub and Unleash.
    assert "cut_branch done    github: branch release/8.8.0 created" in text and "github: branch release/8.9.0 created" in text
    assert "kill_switch done   unleash: new_player, lyrics_v2 off in production" in text
    assert "at Unleash: new_player off, lyrics_v2 off" in text
    assert "Morning digest for music-android" in text and "1. music-android/8.9.0 halted: halted at rollout_1" in text
    replay_runs_on_the_demo_database_and_changes_nothing(tmp_path)


def _dump(path) -> str:
    """Every row of an SQLite database, as SQL (the file's bytes move with WAL checkpoints)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def replay_runs_on_the_demo_database_and_changes_nothing(tmp_path):
    db = tmp_path / "demo.db"
    digest = _dump(db)
    tighter = tmp_path / "tighter.yaml"
    from tests.conftest import SHIPPED_DEFINITIONS as DEFINITIONS

    text = (DEFINITIONS / "mobile_weekly.yaml").read_text()
    assert "min_soak: 1d\n" in text
    tighter.write_text(text.replace("min_soak: 1d\n", "min_soak: 3d\n"))  # soak three days wherever it was one
    env = {**os.environ, "CONDUCTOR_DATABASE_URL": f"sqlite:///{db}", "COLUMNS": "200", "CONDUCTOR_LOG_LEVEL": "WARNING"}

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "conductor.cli", *args], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    same = json.loads(cli("replay", "--definition", str(DEFINITIONS / "mobile_weekly.yaml"), "--json"))
    assert same["differing"] == 0 and same["recorded"] == same["replayed"]
    assert [r["release"] for r in same["releases"]] == ["music-android/8.8.0", "music-android/8.9.0"]
    printed = cli("replay", "--definition", str(tighter))
    assert "would have still been waiting at alpha instead of advancing at" in printed
    assert "Totals" in printed and "recorded" in printed and "replayed" in printed
    longer = json.loads(cli("replay", "--definition", str(tighter), "--json"))
    assert longer["differing"] >= 1
    assert _dump(db) == digest  # nothing written
