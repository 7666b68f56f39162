"""The short game day: `bench/gameday.py --quick` keeps every promise under faults.

Six releases on four tracks (two on the Play fake, two pulling from Sentry fakes) through a real
API, two Celery workers and beat, while a worker is killed -9, Redis and PostgreSQL restart, Play
answers 503 and webhooks come twice and out of order (the bench's docstring tells the world and
the faults). Nothing accepted is lost, nothing is done twice, nothing moves past a failing gate,
and every bad release halts at its first bad value.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench"


def unavailable(config, what: str, how: str) -> None:
    """tests/conftest.py's service_unavailable (skip on a laptop, fail under CI=true)."""
    root = str(ROOT / "tests" / "conftest.py")
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == root:
            plugin.service_unavailable(what, how)
    pytest.skip(f"{what} not found; {how}")


@pytest.mark.long
def test_the_quick_game_day_loses_nothing_doubles_nothing_and_halts_every_bad_release_at_once(pytestconfig):
    sys.path.insert(0, str(BENCH))
    try:
        from gameday import missing_tools
    finally:
        sys.path.remove(str(BENCH))
    missing = missing_tools()
    if missing:
        unavailable(pytestconfig, ", ".join(missing), "the game day starts and restarts servers of its own")
    run = subprocess.run([sys.executable, str(BENCH / "gameday.py"), "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=420)
    out = run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    if last.startswith("logs and data kept in"):
        last = run.stdout.strip().splitlines()[-2]
    figures = dict(re.findall(r"(\w+)=(\S+)", last))
    assert {"lost", "doubled", "wrong_advances", "halted_on_first_bad"} <= set(figures), out
    assert (figures["lost"], figures["doubled"], figures["wrong_advances"]) == ("0", "0", "0"), out
    halted, bad = figures["halted_on_first_bad"].split("/")
    assert int(bad) >= 1 and halted == bad, out
    assert figures["good_released"].split("/")[0] == figures["good_released"].split("/")[1], out
    assert int(figures["faults"]) >= 4 and "FAILED" not in out, out
    assert run.returncode == 0, out
