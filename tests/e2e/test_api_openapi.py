"""/openapi.json documents every endpoint: request bodies, responses, and the error model per status."""

from __future__ import annotations

import pytest

ERROR = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_every_operation_documents_its_requests_and_errors(client):
    doc = client.get("/openapi.json").json()
    operations = {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}
    assert len(operations) >= 20
    for (method, path), op in operations.items():
        responses = op["responses"]
        ok = [code for code in responses if code.startswith("2")]
        assert ok, (method, path)
        if path in ("/healthz", "/readyz", "/metrics"):
            continue
        expected = {"401", "422", "503"} if path.startswith("/webhooks/") else {"401", "403", "422", "503"}
        if method in ("POST", "PATCH"):
            writes = not path.startswith("/webhooks/") and path not in ("/tracks/{track_id}", "/replays")  # a replay writes nothing
            expected |= {"413"} | ({"409"} if writes else set())
            assert op["requestBody"]["required"] is True, (method, path)
            assert op["requestBody"]["content"], (method, path)
        if "{" in path:
            expected.add("404")
        assert expected <= set(responses), (method, path, expected - set(responses))
        for code in expected:
            assert responses[code]["content"]["application/json"]["schema"] == ERROR, (method, path, code)
        if not path.startswith("/webhooks/"):
            assert op["security"] == [{"ApiToken": []}], (method, path)
    generic = doc["paths"]["/webhooks/generic"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert generic == {"$ref": "#/components/schemas/GenericEvent"}
    assert set(doc["components"]["schemas"]["GenericEvent"]["properties"]) >= {"type", "repository", "branch", "sha", "outcome", "signals"}
    assert doc["components"]["securitySchemes"]["ApiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["ApiToken"]["description"],
    }
    # request models refuse what the server owns
    for model in ("ReleaseCreate", "SignalsIn", "SignalPoint", "ReasonIn", "ApproveIn", "SignoffIn", "TrackCreate", "TrackUpdate"):
        assert doc["components"]["schemas"][model]["additionalProperties"] is False, model
