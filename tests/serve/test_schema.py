"""Property-based API testing with schemathesis against the service's own OpenAPI schema, in
process (ASGI): generated requests, schema-valid and invalid, never get a server error, and every
response matches the documented status codes, content types and schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode, checks  # noqa: E402

from cfrec.serve import create_app  # noqa: E402

#: Checks that hold for this API: no 5xx, documented status codes, content types, headers and
#: body schemas, invalid input refused. (Schema-valid input can still be refused on purpose --
#: a k above the catalogue size, an unknown item id -- so "positive data acceptance" is not one.)
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance,
          checks.negative_data_rejection]
OPERATIONS = ["GET /healthz", "GET /readyz", "GET /v1/model", "GET /v1/recommend/{user_id}",
              "POST /v1/recommend", "GET /v1/similar/{item_id}", "GET /v1/predict", "GET /v1/items",
              "POST /v1/admin/reload", "POST /v1/items"]
NO_INPUT = {"GET /healthz", "GET /readyz", "GET /v1/model"}


@pytest.fixture(scope="module")
def api_schema(mf_dir: Path):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(mf_dir))


def test_every_endpoint_is_in_the_schema(api_schema) -> None:
    labels = sorted(op.ok().label for op in api_schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_its_schema(api_schema, label: str, mode: GenerationMode) -> None:
    operation = next(op.ok() for op in api_schema.get_all_operations() if op.ok().label == label)
    if mode is GenerationMode.NEGATIVE and label in NO_INPUT:
        pytest.skip(f"{label} takes no input to make invalid")
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=5 if "reload" in label else 20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        calls.append(response.status_code)

    run()
    assert calls and max(calls) < 500
