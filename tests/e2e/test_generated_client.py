"""A client generated from the served OpenAPI document by openapi-python-client submits,
waits for, reads and exports each kind, over HTTP, against the API (a uvicorn process
with a bearer token), PostgreSQL, Redis and a real worker.

The generator runs in a virtual environment of its own, built once per session from the
`codegen` extra of pyproject.toml (its typer pin clashes with the CLI's). It must
generate without a warning: a clean document is the point.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from service.openapi import SPEC_EXAMPLES
from service.specs import spec_adapter
from tests.conftest import REQUIRED, eventually
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "generated-client-token"
#: Media types the generator does not know are bytes to it (the document keeps the real ones).
CONFIG = """\
project_name_override: benignity-generated
package_name_override: benignity_generated
post_hooks: []
content_type_overrides:
  image/png: application/octet-stream
  image/svg+xml: application/octet-stream
  application/vnd.apache.parquet: application/octet-stream
"""


def generator_pin() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = extras["optional-dependencies"]["codegen"]
    return str(pin)


@pytest.fixture(scope="session")
def generator(tmp_path_factory) -> Path:
    """openapi-python-client, installed at its pinned version into a fresh venv."""
    venv = tmp_path_factory.mktemp("codegen") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", generator_pin()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if pip.returncode != 0:  # PyPI out of reach: a failure where services are required
        msg = f"could not install {generator_pin()}:\n{pip.stdout[-3000:]}{pip.stderr[-3000:]}"
        if REQUIRED:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return venv / "bin" / "openapi-python-client"


@pytest.fixture
def server(stack, tmp_path) -> Iterator[str]:
    """The API in a uvicorn process that demands a bearer token."""
    port = free_port()
    env = {**stack, "API_TOKENS": f"lab:{TOKEN}", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
    log = tmp_path / "api.log"
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    eventually(up, 60, what="the API to start", interval=0.2)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def generate(generator: Path, url: str, where: Path) -> ModuleType:
    """Generate the client from the server's /openapi.json and import it."""
    document = where / "openapi.json"
    document.write_bytes(httpx.get(f"{url}/openapi.json").raise_for_status().content)
    config = where / "config.yml"
    config.write_text(CONFIG)
    out = where / "benignity_generated"
    proc = subprocess.run(
        [str(generator), "generate", "--path", str(document), "--config", str(config)]
        + ["--meta", "none", "--output-path", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert not re.search(r"warning|error|unable|skipping|unsupported", said, re.I), said
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("benignity_generated")
    finally:
        sys.path.remove(str(where))


def submodules(package: ModuleType, *names: str) -> list[Any]:
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


def test_a_generated_client_submits_waits_reads_and_exports_each_kind(
    generator, server, start_worker, tmp_path
):
    gen = generate(generator, server, tmp_path)
    models, submit, get_experiment, list_runs, list_cones = submodules(
        gen,
        "models",
        "api.experiments.submit",
        "api.experiments.get_experiment",
        "api.experiments.list_runs",
        "api.experiments.list_cones",
    )
    get_curve, get_figure, export = submodules(
        gen, "api.reports.get_curve", "api.reports.get_figure", "api.reports.export"
    )
    client = gen.AuthenticatedClient(base_url=server, token=TOKEN, timeout=httpx.Timeout(60.0))
    stranger = gen.AuthenticatedClient(base_url=server, token="not-a-token")
    start_worker()

    results = {
        "optimum": models.OptimumResult,
        "census": models.CensusResult,
        "training": models.TrainingResult,
    }
    specs = bodies(models)
    for kind, body in specs.items():  # the document's examples, built from typed models
        example = spec_adapter.validate_python(SPEC_EXAMPLES[kind]["value"])
        assert spec_adapter.validate_python(body.to_dict()) == example, kind
    # refused as problem+json, typed: the generated client does not crash on an error
    denied = submit.sync(client=stranger, body=specs["optimum"])
    assert isinstance(denied, models.Problem) and denied.status == 401, denied
    submitted = {kind: submit.sync(client=client, body=body) for kind, body in specs.items()}
    for kind, exp in submitted.items():
        assert isinstance(exp, models.Experiment), (kind, exp)
        assert exp.kind == models.Kind(kind) and exp.status == models.Status.QUEUED

        exp = wait(get_experiment, client, exp.id, models)
        assert exp.status == models.Status.SUCCEEDED, (kind, exp)
        assert isinstance(exp.result, results[kind]), (kind, exp.result)
        assert exp.progress.done == exp.progress.total

        runs = list_runs.sync(exp.id, client=client)
        assert isinstance(runs, models.RunPage), runs
        parquet = export.sync(exp.id, models.ExportFmt.PARQUET, client=client)
        assert isinstance(parquet, gen.types.File), parquet
        table = pq.read_table(io.BytesIO(parquet.payload.read()))
        assert table.num_columns > 0, kind
        csv = export.sync(exp.id, models.ExportFmt.CSV, client=client)
        assert isinstance(csv, gen.types.File) and csv.payload.read(), csv

        if kind == "optimum":
            res = exp.result
            assert res.optimum > 0 and res.neurons and len(res.neurons[0].w) == 10
            assert res.certificate.max_dual_violation <= 1e-6
            assert runs.items == []
            continue
        figure = get_figure.sync(exp.id, models.GetFigureFmt.PNG, client=client)
        assert figure.payload.read().startswith(b"\x89PNG"), figure
        if kind == "census":
            rows = exp.result.rows
            assert [r.width for r in rows] == [2, 8, 160]
            assert all(0 <= r.p_global <= 1 and r.samples == 12 for r in rows)
            assert all(isinstance(r.final, models.CensusRow) for r in runs.items)
            cones = list_cones.sync(exp.id, client=client, limit=1000)
            assert isinstance(cones, models.ConePage) and len(cones.items) == 36, cones
            assert {c.verdict for c in cones.items} <= set(models.ConeVerdict)
        else:
            groups = exp.result.groups
            assert len(groups) == 4 and sum(g.runs for g in groups) == 8
            run = runs.items[0]
            assert run.status == models.RunStatus.DONE
            assert isinstance(run.verdict, models.RunVerdict)
            assert isinstance(run.params, models.RunParams) and run.params.width == 3
            assert isinstance(run.final, models.TrainingFinal) and run.final.epoch > 0
            curve = get_curve.sync(exp.id, run.id, client=client, max_points=20)
            assert isinstance(curve, models.Curve) and 2 <= len(curve.epoch) <= 20, curve


def bodies(models: Any) -> dict[str, Any]:
    """SPEC_EXAMPLES as the generated models. (Built, not parsed: the generator's
    `from_dict` names its dict `d`, which a dataset's field `d` overwrites.)"""
    teacher = {"generator": "teacher", "n": 6, "d": 10, "seed": 1}
    return {
        "optimum": models.OptimumSpec(
            kind="optimum", dataset=models.TeacherDataset(**teacher), weight_decay=0.01
        ),
        "census": models.CensusSpec(
            kind="census",
            dataset=models.TeacherDataset(**{**teacher, "n": 4, "d": 8, "seed": 0}),
            weight_decay=0.01,
            widths=[2, 8, 160],
            samples_per_width=12,
        ),
        "training": models.TrainingSpec(
            kind="training",
            dataset=models.CustomDataset(generator="custom", x=[[0.6, 0.8, 0.0]], y=[1.5]),
            weight_decay=0.1,
            widths=[3, 10],
            init_scales=[0.01, 1.0],
            seeds=2,
            optimizer=models.Optimizer(name=models.OptimizerName.GD, lr=0.05),
            max_epochs=20000,
            device=models.TrainingSpecDevice.CPU,
        ),
    }


def wait(get_experiment: Any, client: Any, experiment_id: str, models: Any) -> Any:
    """Poll with the generated client until the experiment is finished (3 min at most)."""
    deadline = time.monotonic() + 180
    terminal = {models.Status.SUCCEEDED, models.Status.FAILED, models.Status.CANCELLED}
    while True:
        exp = get_experiment.sync(experiment_id, client=client)
        assert isinstance(exp, models.Experiment), exp
        if exp.status in terminal or time.monotonic() > deadline:
            return exp
        time.sleep(0.3)
