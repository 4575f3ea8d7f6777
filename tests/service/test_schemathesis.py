"""The OpenAPI document against the server it describes, on a real stack: the API over
the session's PostgreSQL and Redis, and a real `benignity worker` that computes one
experiment of each kind first (the examples the document shows), so that results,
runs, cones, curves, figures and exports are real.

Two passes, each with 0 failures allowed:

1. every operation on the computed experiments, each response checked against its
   declared status codes, content type, headers and schema;
2. schemathesis's generated requests over every operation (SCHEMATHESIS_EXAMPLES per
   operation, default 25; the acceptance run uses 300:
   `SCHEMATHESIS_EXAMPLES=300 .venv/bin/pytest tests/service/test_schemathesis.py`),
   with the same checks plus no 5xx.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.openapi import SPEC_EXAMPLES
from tests.conftest import eventually
from tests.e2e.conftest import FAST, Worker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Generated specs stay small: the worker keeps computing while the requests run.
SMALL = {"MAX_ITEM_SECONDS": "20", "MAX_RUNS": "64", "MAX_CENSUS_CONES": "2000"}


@pytest.fixture
def stack_url(live_server, redis_client, tmp_path) -> Iterator[str]:
    """The API and one worker on the session's database and Redis."""
    redis_client.flushdb()
    base = live_server(QUOTA_ACTIVE_ITEMS="1000000", **FAST, **SMALL)
    worker = Worker(dict(os.environ), tmp_path / "worker.log")
    try:
        yield base
    finally:
        worker.stop()


def computed(base: str) -> dict[str, dict[str, Any]]:
    """One succeeded experiment per kind, from the document's own examples."""
    with httpx.Client(base_url=base, timeout=30) as http:
        ids = {
            kind: http.post("/v1/experiments", json=example["value"]).json()["id"]
            for kind, example in SPEC_EXAMPLES.items()
        }
        done = {
            kind: eventually(
                lambda i=i: http.get(f"/v1/experiments/{i}").json(),
                timeout=240,
                until=lambda e: e["status"] in ("succeeded", "failed", "cancelled"),
                what=f"the {kind} example to finish",
                interval=0.3,
            )
            for kind, i in ids.items()
        }
    for kind, exp in done.items():
        assert exp["status"] == "succeeded", (kind, exp)
    return done


def calls(base: str, experiments: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict]]:
    """(method, path template, Case arguments) for every read of the computed experiments."""
    yield "GET", "/v1/experiments", {"query": {"limit": 10}}
    yield "GET", "/v1/experiments", {"query": {"fields": "summary"}}
    for kind, exp in experiments.items():
        ids = {"experiment_id": exp["id"]}
        yield "GET", "/v1/experiments/{experiment_id}", {"path_parameters": ids}
        yield "GET", "/v1/experiments/{experiment_id}/runs", {"path_parameters": ids}
        yield "POST", "/v1/experiments/{experiment_id}/cancel", {"path_parameters": ids}
        for fmt in ("csv", "parquet"):
            yield (
                "GET",
                "/v1/experiments/{experiment_id}/export.{fmt}",
                {"path_parameters": {**ids, "fmt": fmt}},
            )
        for fmt in ("png", "svg"):
            yield (
                "GET",
                "/v1/experiments/{experiment_id}/figure.{fmt}",
                {"path_parameters": {**ids, "fmt": fmt}},
            )
        if kind == "census":
            yield "GET", "/v1/experiments/{experiment_id}/cones", {"path_parameters": ids}
        if kind == "training":
            run = httpx.get(f"{base}/v1/experiments/{exp['id']}/runs").json()["items"][0]
            curve = {**ids, "run_id": run["id"]}
            for fmt in ("json", "csv"):
                yield (
                    "GET",
                    "/v1/experiments/{experiment_id}/runs/{run_id}/curve",
                    {
                        "path_parameters": curve,
                        "query": {"format": fmt, "max_points": 50},
                    },
                )


def test_the_document_describes_every_answer(stack_url, tmp_path):
    experiments = computed(stack_url)
    schema = schemathesis.openapi.from_url(f"{stack_url}/openapi.json")
    seen: dict[str, int] = {}
    for method, path, args in calls(stack_url, experiments):
        case = schema[path][method].Case(**args)
        response = case.call(base_url=stack_url)
        case.validate_response(response, checks=CHECKS)
        media = response.headers.get("content-type", [""])[0].split(";")[0]
        seen[media] = seen.get(media, 0) + 1
    for media in ("application/json", "application/problem+json", "image/png", "text/csv"):
        assert seen.get(media), (media, seen)  # each kind of answer was checked
    assert seen.get("application/vnd.apache.parquet") == 3 and seen.get("image/svg+xml") == 2

    report = tmp_path / "schemathesis.txt"
    cli = Path(sys.executable).with_name("schemathesis")
    proc = subprocess.run(
        [
            str(cli),
            "run",
            f"{stack_url}/openapi.json",
            "--checks",
            ",".join(check.__name__ for check in CHECKS),
            "--max-examples",
            str(EXAMPLES),
            "--generation-deterministic",
            # one worker: with two threads, hypothesis's ast.parse of filter lambdas hit
            # CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905) once
            "--workers",
            "1",
            # a figure of a generated sweep is drawn on a CPU shared with the worker
            "--request-timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env={
            **os.environ,
            "NO_COLOR": "1",
            "SCHEMATHESIS_TELEMETRY": "false",
            "SCHEMATHESIS_HOOKS": "tests.service.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
        },
    )
    report.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    print(proc.stdout[-3000:])
