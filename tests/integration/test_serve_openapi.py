"""Property-based tests generated from the service's own OpenAPI document (schemathesis):
whatever a client sends, the reply is documented, conforms to its schema and is never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from greentune.serve.app import build_service, create_app
from greentune.serve.keys import KeyStore
from greentune.serve.settings import ServeSettings
from tests.conftest import tiny_classify_run

TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-o")
    run = tiny_classify_run(tmp, 120, 3, "energy.enabled=false")
    TOKEN["key"], _ = KeyStore(tmp / "keys.json").add("all", ["forecast", "classify", "admin"])
    s = ServeSettings(
        run=str(run.path), keys_file=str(tmp / "keys.json"), rate_per_s=1e6, burst=1_000_000
    )
    app = create_app(build_service(s))
    with TestClient(app):  # runs the lifespan: batcher and meter up
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_every_route_keeps_its_contract(api_schema, mode):
    """Valid (positive) and invalid (negative) requests to every route in the document."""
    # schemathesis' pytest plugin does not load under pytest 9 here: drive hypothesis directly
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 7
    seen: list[tuple[str, int]] = []
    for operation in operations:
        if mode.value == "negative" and operation.method.upper() == "GET":
            continue  # no parameters and no body: nothing to make invalid

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers={"X-API-Key": TOKEN["key"]})
            seen.append((case.operation.path, response.status_code))

        check()
    codes = {code for _, code in seen}
    # the calls reached the model, and bad input was refused as such, never with a 5xx
    assert (200 in codes) if mode.value == "positive" else (422 in codes), sorted(set(seen))
    assert not any(code >= 500 for code in codes), sorted(set(seen))
