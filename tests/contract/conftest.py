"""Contract tests of the pulled sources against the vendor fakes: a real local server per test and
an httpx client with a short timeout (so a late answer is a timeout)."""

from __future__ import annotations

import httpx
import pytest

from tests.contract.support import TIMEOUT_S
from tests.fakes.server import FakeServer


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture
def client():
    with httpx.Client(timeout=httpx.Timeout(TIMEOUT_S)) as c:
        yield c
