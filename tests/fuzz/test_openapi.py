"""schemathesis against the running service's own OpenAPI document (a real uvicorn process): generated requests to
every operation never get a 5xx, and every answer matches the schema documented for its status code."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.e2e.servers import server

pytestmark = pytest.mark.slow
CHECKS = [schemathesis.checks.not_a_server_error, response_schema_conformance, content_type_conformance]


def test_no_server_errors_and_every_answer_as_documented(tiny_store):
    with server(tiny_store, max_batch_size="4", intra_op_threads="1") as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 6
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case) -> None:
                case.call_and_validate(base_url=url, checks=CHECKS)

            check()
