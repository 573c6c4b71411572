"""schemathesis, with every check it has, runs the gateway's own /openapi.json against a real
gateway with a real processor behind it (so the answers are real verdicts, 409 and 410 included).

It runs schemathesis as its users do, from its command line (its examples, coverage, fuzzing
and stateful phases; the coverage phase is the one that sends undeclared methods and missing
headers) with a valid bearer token. Any disagreement between the document and the server (an
undeclared status, header or body, a 405 whose Allow header leaves out a method, a 5xx) fails.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.gateway_harness import bearer, running_gateway

EXAMPLES = 8  # per operation and phase: a bounded run (about 200 calls, some 30 s here)
# positive_data_acceptance takes a schema-valid call answered outside its list (2xx, 3xx, 401,
# 403, 404, 409, 429, 5xx) for a defect. A heartbeat of a session without a lease is such a call
# (a generated sessionId never holds one) and its 410 is the contract's answer, declared for that
# operation: a refusal on purpose, as 409 is. So for heartbeat alone, 410 joins the list.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-name = "POST /v1/sessions/{sessionId}/heartbeat"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx",
]
"""


@pytest.mark.timeout(600)
async def test_schemathesis_with_all_checks_finds_the_document_and_the_gateway_in_agreement(flow, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    report = tmp_path / "run.json"
    # A generous verdict timeout: on a loaded machine a 504 would be a slow run, not a defect.
    async with running_gateway(flow, gateway_verdict_timeout_ms=20_000) as gw:
        token = bearer("u-schema")["Authorization"]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{gw.url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: {token}",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "28",  # the same cases each run
            "--workers",
            "1",  # one user's calls in flight at once stay under its 429 limit
            "--request-timeout",
            "30",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its report folder, if any, lands there
        )
        output, _ = await asyncio.wait_for(process.communicate(), 500)
    log = output.decode(errors="replace")  # names each failure, the call that shows it and its answer
    assert process.returncode == 0, log
    run = json.loads(report.read_text())
    # A run that tested nothing would pass too: every operation, every phase but the examples
    # (the document has none), and some hundreds of calls.
    assert run["operations"]["tested"] == run["operations"]["total"] == 7, log
    assert run["operations"]["errored"] == 0, log
    assert {name: phase["status"] for name, phase in run["phases"].items()} == {
        "examples": "skip",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, log
    assert run["test_cases"]["generated"] >= 100, log
