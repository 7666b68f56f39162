"""Fixtures for the inbound-layer tests: where the shared real payloads live and how to read them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _fixtures_root() -> Path:
    env = os.environ.get("CONDUCTOR_FIXTURES_DIR")
    if env:
        return Path(env)
    # tests/unit/sources/conftest.py -> parents[3] is the repo; fixtures sit beside it in shared/
    return Path(__file__).resolve().parents[3].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    root = _fixtures_root()
    if not root.is_dir():
        msg = f"shared fixtures not found at {root} (set CONDUCTOR_FIXTURES_DIR)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def fixture_bytes(fixtures_dir: Path) -> Callable[[str], bytes]:
    def read(relative: str) -> bytes:
        return (fixtures_dir / relative).read_bytes()

    return read


@pytest.fixture(scope="session")
def fixture_json(fixture_bytes: Callable[[str], bytes]) -> Callable[[str], Any]:
    def read(relative: str) -> Any:
        return json.loads(fixture_bytes(relative))

    return read
