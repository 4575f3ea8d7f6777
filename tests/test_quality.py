"""The house tooling (shared/STYLE.md): ruff lint and format, mypy on service/ and workers/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_and_format():
    lint = run("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout
    fmt = run("ruff", "format", "--check", "service", "workers", "bench", "tests", "migrations")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy():
    out = run("mypy", "service", "workers")
    assert out.returncode == 0, out.stdout
