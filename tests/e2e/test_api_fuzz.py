"""Schemathesis against /openapi.json, inside the suite and bounded: no 500s, no answer outside the schema.

For each database (SQLite, PostgreSQL) one app holding a release that waits for approval is
fuzzed, operation by operation, with schema-valid and schema-invalid cases (MAX_EXAMPLES of each
per operation) sent with an admin token so they reach the service; schemathesis's checks also
replay cases without the token (ignored_auth: they must get 401). One app for all operations keeps
this to seconds (schemathesis's pytest `from_fixture` would build one per operation, and it
breaks on pytest 9). Every failure of every operation is collected, then reported together.

All default checks run except positive_data_acceptance: validity that depends on the data (a
signal the release's pipeline declares, a team that signs off, XML that is a JUnit report) cannot
be written into the schema, so such requests get a documented 4xx, which that check counts as a
failure. Everything it would still catch (a 500, an undocumented status) the other checks catch.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation import GenerationMode

from tests.e2e.conftest import ask_for_approval, bearer

# Per operation and generation mode. The suite's run is small and repeatable; for a long random
# one: CONDUCTOR_FUZZ_EXAMPLES=200 pytest tests/e2e/test_api_fuzz.py -s
MAX_EXAMPLES = int(os.environ.get("CONDUCTOR_FUZZ_EXAMPLES", "8"))
DERANDOMIZE = "CONDUCTOR_FUZZ_EXAMPLES" not in os.environ


def _fuzzer(operation, mode: GenerationMode, auth: dict[str, str], ran: dict[str, int]):
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        ran[operation.label] = ran.get(operation.label, 0) + 1
        case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

    return fuzz


@pytest.mark.long
def test_api_conforms_to_its_schema(api_app, conductor, clock, tokens, database):
    ask_for_approval(conductor, clock)  # release 1 with decision pending: small ids hit real rows
    auth = bearer(tokens["admin"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    ran: dict[str, int] = {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzzer(operation, mode, auth, ran)()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong in a request without parameters
            except Exception as exc:  # collect them all, report once
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    print(f"\nschemathesis on {database.engine.dialect.name}: {sum(ran.values())} cases over {len(ran)} operations")
    assert not failures, "\n\n".join(failures)
