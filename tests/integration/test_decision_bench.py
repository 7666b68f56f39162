"""The decision bench as a quality check: on its --quick run (300 weekly releases, seed 7) the
shipped weekly train meets the six targets it was tuned to. bench/decisions.py runs the real
decide() on the real definition in this process (one process: no pool); this is not a timing test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_decisions", ROOT / "bench" / "decisions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.mark.long
def test_the_shipped_train_meets_every_target_on_the_quick_bench():
    # One test, not one per target: under xdist each worker would run the simulation again.
    results = bench.simulate(releases=300, seed=7, definition=ROOT / "state_definitions" / "mobile_weekly.yaml", jobs=1)
    assert len(results) == 300 and any(r.bad for r in results)
    quick_run = bench.metrics(results)
    met = bench.meets_targets(quick_run)
    assert set(met) == set(bench.TARGETS)
    missed = [f"{t}={quick_run[t]:.3f}, wanted {op} {bound}" for t, (op, bound) in bench.TARGETS.items() if not met[t]]
    assert not missed, f"{'; '.join(missed)}: {bench.keyline(quick_run)}"


def test_a_run_is_the_same_for_the_same_seed():
    first, again = (bench.keyline(bench.metrics(bench.simulate(releases=12, seed=3, jobs=1))) for _ in range(2))
    assert first == again
