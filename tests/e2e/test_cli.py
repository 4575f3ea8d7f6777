"""The `benignity` client commands as a user runs them: a subprocess against a live API
(uvicorn on the session's PostgreSQL and Redis) and a real worker, judged by exit code,
stdout and stderr. Exit codes: 0 succeeded, 1 failed, 2 usage, 3 cancelled,
4 unreachable, 5 timed out."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from service.client import Client
from tests.service import conftest as service_fixtures
from tests.services import free_port

live_server = service_fixtures.live_server  # the fixture, for `server` below

OPTIMUM = {
    "kind": "optimum",
    "dataset": {"generator": "teacher", "n": 5, "d": 3, "seed": 3},
    "weight_decay": 0.01,
}
# accepted, but the interior-point solve fails on it (tests/e2e/test_failures.py)
FAILING = {**OPTIMUM, "weight_decay": 1e100}
SWEEP = {
    "kind": "training",
    "dataset": {"generator": "teacher", "n": 6, "d": 3, "teacher_width": 3, "seed": 1},
    "weight_decay": 0.05,
    "widths": [4],
    "init_scales": [0.01, 1.0],
    "seeds": 2,
    "optimizer": {"name": "gd", "lr": 0.05},
    "max_epochs": 20000,
    "device": "cpu",
}
CENSUS = {
    "kind": "census",
    "dataset": {"generator": "teacher", "n": 4, "d": 2, "seed": 0},
    "weight_decay": 0.01,
    "widths": [3, 6],
    "samples_per_width": 10,
}
Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(url: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENIGNITY_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


@pytest.fixture
def server(stack, live_server) -> str:
    return live_server(QUOTA_ACTIVE_ITEMS="100000")


@pytest.fixture
def cli(server, tmp_path) -> Iterator[Cli]:
    yield lambda *args: run_cli(server, *args, cwd=tmp_path)


def spec_file(tmp_path: Path, spec: dict, name: str) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def submitted(out: subprocess.CompletedProcess) -> dict:
    assert "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout)


def test_an_optimum_succeeds_and_a_failing_one_exits_1(cli, start_worker, tmp_path):
    start_worker()
    out = cli("submit", spec_file(tmp_path, OPTIMUM, "opt"), "--wait")
    assert out.returncode == 0, out.stderr
    exp = submitted(out)
    eid = exp["id"]
    assert exp["status"] == "succeeded" and len(eid) == 32
    status = cli("status", eid[:8])
    assert status.returncode == 0 and status.stdout.split() == [
        eid,
        "optimum",
        "succeeded",
        "1/1",
    ]
    show = cli("show", eid[:6])
    assert show.returncode == 0, show.stderr
    assert eid in show.stdout and "succeeded" in show.stdout and "optimum" in show.stdout
    assert json.loads(cli("show", eid[:6], "--format", "json").stdout)["id"] == eid
    assert cli("wait", eid[:8]).returncode == 0

    bad = cli("submit", spec_file(tmp_path, FAILING, "bad"), "--wait")
    assert bad.returncode == 1, bad.stderr
    failed = submitted(bad)
    assert failed["status"] == "failed" and failed["error"]["type"] == "SolverError"
    status = cli("status", failed["id"][:8])
    assert status.returncode == 1 and "error: SolverError" in status.stdout
    assert cli("wait", failed["id"]).returncode == 1
    results = cli("results", failed["id"])
    assert results.returncode == 1 and "no result" in results.stderr

    listed = json.loads(cli("list", "--format", "json", "--limit", "1000").stdout)
    ours = {row["id"]: row for row in listed if row["id"] in (eid, failed["id"])}
    assert ours[eid]["status"] == "succeeded" and ours[failed["id"]]["status"] == "failed"
    only_failed = json.loads(cli("list", "--status", "failed", "--format", "json").stdout)
    assert failed["id"] in [r["id"] for r in only_failed] and eid not in str(only_failed)
    rows = list(csv.DictReader(io.StringIO(cli("list", "--format", "csv").stdout)))
    assert {eid, failed["id"]} <= {r["id"] for r in rows}
    assert {"id", "kind", "status", "done", "total"} <= set(rows[0])
    table = cli("list").stdout
    assert eid in table and failed["id"] in table  # full ids, never truncated


def test_a_sweep_and_a_census_export_and_load_into_pandas(cli, server, start_worker, tmp_path):
    start_worker()
    census = submitted(cli("submit", spec_file(tmp_path, CENSUS, "census")))["id"]
    spec = spec_file(tmp_path, SWEEP, "sweep")
    out = cli("submit", spec, "--wait", "--idempotency-key", "sweep-1")
    assert out.returncode == 0, out.stderr
    eid = submitted(out)["id"]
    again = cli("submit", spec, "--idempotency-key", "sweep-1")
    assert submitted(again)["id"] == eid, "the same key, the same experiment"

    with Client(server) as client:
        frame = client.runs_frame(eid)
    assert len(frame) == 4 and set(frame["init_scale"]) == {0.01, 1.0}
    assert frame["verdict"].notna().all() and "final_gap" in frame

    assert cli("export", eid[:8], "-o", tmp_path / "runs.parquet").returncode == 0
    table = pq.read_table(tmp_path / "runs.parquet")
    assert table.num_rows == 4 and "verdict" in table.column_names
    assert cli("export", eid, "-o", tmp_path / "runs.csv").returncode == 0
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 5

    runs = json.loads(cli("runs", eid, "--format", "json").stdout)
    assert len(runs) == 4 and all(len(r["run_id"]) == 32 for r in runs)
    curve = cli("curve", eid[:10], runs[0]["run_id"][:8], "-o", tmp_path / "c.csv")
    assert curve.returncode == 0, curve.stderr
    assert (tmp_path / "c.csv").read_text().startswith("epoch,mse,")
    points = json.loads(cli("curve", eid, runs[1]["run_id"], "--format", "json").stdout)
    assert len(points["epoch"]) == len(points["gap"]) >= 2

    assert cli("figure", eid, "-o", tmp_path / "f.png").returncode == 0
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    show = cli("show", eid).stdout
    assert "P_GLOBAL" in show and "INIT_SCALE" in show  # the verdict shares per cell

    assert cli("wait", census[:8], "--timeout", "120").returncode == 0
    with Client(server) as client:
        cones = client.cones_frame(census)
    assert len(cones) == 20 and cones.groupby("width").size().to_dict() == {3: 10, 6: 10}
    assert set(cones["verdict"]) <= {"global", "spurious", "no_local_min"}


def test_a_cancelled_experiment_exits_3(cli, tmp_path):
    # no worker: the experiment stays queued until cancelled
    spec = spec_file(tmp_path, OPTIMUM, "opt")
    timed_out = cli("submit", spec, "--wait", "--timeout", "1")
    assert timed_out.returncode == 5, timed_out.stderr
    eid = submitted(timed_out)["id"] if timed_out.stdout else None
    assert eid is None and "still" in timed_out.stderr and "Traceback" not in timed_out.stderr

    eid = submitted(cli("submit", spec))["id"]
    cancel = cli("cancel", eid[:10])
    assert cancel.returncode == 0 and cancel.stdout.split()[:3] == [eid, "optimum", "cancelled"]
    assert cli("wait", eid).returncode == 3
    assert cli("status", eid[:8]).returncode == 3
    again = cli("cancel", eid)
    assert again.returncode == 1
    lines = again.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("benignity: 409 Conflict: ")


def test_the_server_down_is_one_line_and_exit_4(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    spec = spec_file(tmp_path, OPTIMUM, "opt")
    for args in (["status", "abc"], ["list"], ["submit", spec], ["wait", "abc123"]):
        out = run_cli(url, *args, cwd=tmp_path)
        assert out.returncode == 4, (args, out.stderr)
        assert out.stderr.splitlines() == [
            f"benignity: cannot reach {url} (connection refused); is `benignity serve` running?"
        ]
        assert out.stdout == ""


def test_usage_errors_exit_2(cli, server, tmp_path):
    with Client(server) as client:  # 17 ids in 16 hex digits: a first digit is shared
        ids = [client.submit(OPTIMUM).id for _ in range(17)]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    out = cli("status", shared)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert all(i in out.stderr for i in ids if i.startswith(shared))
    assert cli("status", ids[0][:12]).returncode == 0  # a unique prefix is fine

    assert cli("list", "--format", "xml").returncode == 2
    assert cli("figure", ids[0], "-o", tmp_path / "f.gif").returncode == 2
    assert cli("export", "-o", tmp_path / "x.parquet").returncode == 2
    refused = cli("rm", ids[0])  # stdin is not a terminal: no prompt, no deletion
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli("status", ids[0]).returncode == 0
    unknown = cli("show", "f" * 32)
    assert unknown.returncode == 1 and unknown.stderr.startswith("benignity: 404")


def test_tags_filters_many_experiment_exports_and_rm(cli, server, start_worker, tmp_path):
    start_worker()
    mark = f"t{uuid.uuid4().hex[:8]}"
    spec = spec_file(tmp_path, {**SWEEP, "tags": [mark], "name": f"cli {mark}"}, "sweep")
    first = submitted(cli("submit", spec, "--wait"))["id"]
    second = submitted(cli("submit", spec, "--wait"))["id"]
    listed = json.loads(cli("list", "--tag", mark, "--format", "json").stdout)
    assert [e["id"] for e in listed] == [second, first]
    assert all(e["tags"] == [mark] and e["result"] is None for e in listed)
    named = list(
        csv.DictReader(io.StringIO(cli("list", "--name", f"CLI {mark}", "--format", "csv").stdout))
    )
    assert {r["id"] for r in named} == {first, second} and named[0]["tags"] == mark

    out = cli("tag", first[:10], "--add", "keep", "--add", "best", "--remove", mark)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{first} tags: best, keep"
    assert [e["id"] for e in json.loads(cli("list", "--tag", mark, "--format", "json").stdout)] == [
        second
    ]
    shown = cli("show", first).stdout
    assert "best, keep" in shown and f"cli {mark}" in shown

    both = tmp_path / "both.parquet"
    assert cli("export", first, second[:12], "-o", both).returncode == 0
    table = pq.read_table(both)
    assert table.num_rows == 8 and set(table.column("experiment_id").to_pylist()) == {first, second}
    assert cli("export", "--tag", mark, "-o", tmp_path / "tagged.parquet").returncode == 0
    assert pq.read_table(tmp_path / "tagged.parquet").num_rows == 4
    curves_file = tmp_path / "curves.parquet"
    assert cli("export", first, "--table", "curves", "-o", curves_file).returncode == 0
    curves = pq.read_table(curves_file)
    assert curves.num_rows > 4 and "epoch" in curves.column_names

    gone = cli("rm", first[:10], second, "--yes")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.splitlines() == [f"deleted {first}", f"deleted {second}"]
    assert cli("status", first).returncode == 1
