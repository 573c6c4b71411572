"""A property-based run of the gateway's own /openapi.json (schemathesis) against the real services.

Every operation gets generated valid and invalid calls with a valid token; no answer may be a
500, nor have a status, content type, header or body the document does not declare.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway_harness import bearer, running_gateway

EXAMPLES = 15  # per operation and mode: a bounded run (150 calls, a few seconds)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def run_operations(doc: dict, base_url: str, auth: dict) -> dict[str, int]:
    """Drive every operation of `doc` (blocking: runs in a thread); return the calls per operation."""
    schema = schemathesis.openapi.from_dict(doc)
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            extra = [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
            _exercise(
                operation, mode, f"{operation.label} {mode.value}", CHECKS + extra, base_url, auth, calls
            )
    return calls


def _exercise(operation, mode, label: str, checks: list, base_url: str, auth: dict, calls: dict) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
    def exercise(case) -> None:
        calls[label] = calls.get(label, 0) + 1
        case.call_and_validate(base_url=base_url, checks=checks, timeout=30)

    try:
        exercise()
    except Unsatisfiable:
        # Only in negative mode, for an operation with nothing to make invalid (GET /health).
        assert mode is GenerationMode.NEGATIVE and label not in calls, label


# schemathesis's own strategies use `random` (a deprecation hypothesis reports about them, not us).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_generated_calls_of_every_operation_get_no_500_and_only_answers_the_document_declares(flow):
    # A generous verdict timeout: on a loaded machine a 504 would be a slow run, not a defect
    # (not_a_server_error counts every 5xx).
    async with running_gateway(flow, gateway_verdict_timeout_ms=20_000) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            doc = (await http.get("/openapi.json")).json()
        calls = await asyncio.to_thread(run_operations, doc, gw.url, bearer("u-schema"))
    operations = {label.rsplit(" ", 1)[0] for label in calls}
    assert operations == {
        "POST /v1/sessions",
        "GET /v1/sessions",
        "POST /v1/sessions/{sessionId}/heartbeat",
        "DELETE /v1/sessions/{sessionId}",
        "POST /v1/sessions/{sessionId}/terminate",
        "GET /health",
        "GET /metrics",
    }
    assert sum(calls.values()) >= 7 * 5
