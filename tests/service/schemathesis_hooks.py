"""Hooks of the schemathesis run in test_schemathesis.py (loaded by SCHEMATHESIS_HOOKS).

A long-poll (`GET /v1/experiments/{id}?wait=S`) of an experiment that does not change
answers after S seconds. Generated waits are cut to WAIT seconds, so the run checks
the answers and does not spend its time waiting.
"""

from __future__ import annotations

from typing import Any

import schemathesis

WAIT = 1


@schemathesis.hook
def map_query(_: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    wait = (query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > WAIT:
        assert query is not None
        query["wait"] = WAIT
    return query
