"""`benignity serve` on embedded defaults (SQLite and a filesystem broker), driven by the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SPEC = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 5, "d": 8, "seed": 3},
    "weight_decay": 0.01,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(tmp_path: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """`benignity serve` on a free port, in its own process group, once it is ready."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "BROKER_URL", "API_TOKENS", "ENVIRONMENT")
    }
    env["BENIGNITY_HOME"] = str(tmp_path / "home")
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (
            tmp_path / "serve.log"
        ).read_text()
        time.sleep(0.3)
    return proc, url, {**env, "BENIGNITY_URL": url}


def assert_group_ends(pgid: int) -> None:
    """Nothing of `serve`'s process group may outlive it (its worker included)."""
    deadline = time.monotonic() + 30
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = group_alive(pgid)
    if left:
        os.killpg(pgid, signal.SIGKILL)
    assert not left, "the worker outlived `benignity serve`"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    proc, url, env = start_serve(tmp_path)
    yield url, env
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert_group_ends(proc.pid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_serve_runs_an_optimum_on_sqlite(served, tmp_path):
    url, env = served
    assert (tmp_path / "home" / "benignity.db").exists()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = cli(env, "submit", str(spec), "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    exp = json.loads(out.stdout)
    assert exp["status"] == "succeeded" and exp["result"]["num_patterns"] == 32
    assert exp["result"]["certificate"]["max_dual_violation"] <= 1e-6
    status = cli(env, "status", exp["id"], cwd=tmp_path)
    assert status.stdout.split()[2:4] == ["succeeded", "1/1"]
    table = cli(env, "results", exp["id"], "--format", "csv", cwd=tmp_path)
    header, *rows = table.stdout.splitlines()
    assert header.startswith("neuron,a,w0") and len(rows) == len(exp["result"]["neurons"])
    listed = httpx.get(f"{url}/v1/experiments").json()["items"]
    assert [e["id"] for e in listed] == [exp["id"]]


def test_cli_reports_bad_input_with_field_and_reason(served, tmp_path):
    _, env = served
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({**SPEC, "weight_decay": 0}))
    out = cli(env, "submit", str(spec), cwd=tmp_path)
    assert out.returncode == 1
    assert "422" in out.stderr and "weight_decay" in out.stderr


def test_the_worker_stops_when_serve_is_killed(tmp_path):
    proc, _, _ = start_serve(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code of `serve` runs
    proc.wait(timeout=30)
    assert_group_ends(proc.pid)
