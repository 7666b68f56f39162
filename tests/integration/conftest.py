"""Fixtures shared by the integration tests (the database, clock and conductor come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.integration.test_service import BRANCH_DAY, RM, stage_of


@pytest.fixture
def release(conductor, clock):
    """Release 9.0.0 of music-android, started and on its release branch (branch day has come)."""
    rid = conductor.start_release("music-android", "9.0.0", RM)
    clock.now = BRANCH_DAY
    conductor.tick()
    assert stage_of(conductor, rid) == "branch"
    return rid
