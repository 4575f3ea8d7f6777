"""Property-based requests over every operation of the OpenAPI document: never a 5xx.

CI runs SCHEMATHESIS_EXAMPLES (default 25) examples per operation; the acceptance
run uses 300: `SCHEMATHESIS_EXAMPLES=300 .venv/bin/pytest tests/service/test_schemathesis.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))


def test_no_server_errors_on_any_operation(live_server, tmp_path):
    base = live_server(QUOTA_ACTIVE_ITEMS="1000000")
    cli = Path(sys.executable).with_name("schemathesis")
    report = tmp_path / "schemathesis.txt"
    proc = subprocess.run(
        [
            str(cli),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES),
            "--generation-deterministic",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    report.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    print(proc.stdout[-3000:])
