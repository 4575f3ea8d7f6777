"""The deployment files: one image for every role, health checks that fit each role,
restart policies, no secret in the files, a gpu profile that reserves a GPU; compose
accepts them; `benignity healthcheck` tells a live role from a dead one.

deploy/smoke.sh runs the stack itself (it needs root and a Docker engine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP = ("migrate", "api", "worker-cpu")


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())["services"]


def test_one_image_for_every_role_built_once():
    services = load("docker-compose.yml")
    images = {services[name]["image"] for name in APP}
    assert images == {"${BENIGNITY_IMAGE:-benignity:latest}"}
    assert [name for name in APP if "build" in services[name]] == ["migrate"]
    gpu = services["worker-gpu"]
    assert gpu["image"] != services["api"]["image"] and gpu["build"]["args"]["TORCH_INDEX"]
    assert gpu["build"]["args"]["TORCH_FROM_CONTEXT"] == "no"


def test_health_checks_and_restart_policies_fit_each_role():
    services = load("docker-compose.yml")
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["healthcheck"]["test"][-2:] == ["healthcheck", "api"]
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name]["healthcheck"]["test"][-2:] == ["healthcheck", "worker"]
        assert services[name]["stop_grace_period"] == "30s"
    for name in ("postgres", "redis", "api", "worker-cpu", "worker-gpu"):
        assert services[name]["restart"] == "unless-stopped", name
    assert "HEALTHCHECK" not in (ROOT / "Dockerfile").read_text().replace("# ", "")


def test_no_secret_is_written_in_the_files():
    services = load("docker-compose.yml")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    for name in APP:
        env = services[name]["environment"]
        assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]
        assert env["API_TOKENS"].startswith("${API_TOKENS:?")
    workers = load("deploy/worker.compose.yml")
    assert workers["worker"]["environment"]["DATABASE_URL"].startswith("${DATABASE_URL:?")


def test_the_gpu_profile_reserves_a_gpu():
    for path, name in (
        ("docker-compose.yml", "worker-gpu"),
        ("deploy/worker.compose.yml", "worker-gpu"),
    ):
        service = load(path)[name]
        assert service["profiles"] == ["gpu"]
        assert service["command"][-4:] == ["--queues", "gpu", "--concurrency", "1"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def _compose() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


@pytest.mark.skipif(_compose() is None, reason="neither `docker compose` nor docker-compose")
@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]])
def test_compose_accepts_the_files(profile):
    compose = _compose()
    assert compose is not None
    env = {**os.environ, "POSTGRES_PASSWORD": "p", "API_TOKENS": "t:s"}
    for files in (["docker-compose.yml"], ["docker-compose.yml", "deploy/expose.compose.yml"]):
        argv = [*compose, *(a for f in files for a in ("-f", f)), *profile, "config", "--services"]
        out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        assert {"api", "worker-cpu", "migrate"} <= set(out.stdout.split())
        if profile:  # (docker-compose 1.x lists profiled services without --profile too)
            assert "worker-gpu" in out.stdout.split()
    workers = ["-f", "deploy/worker.compose.yml", *profile, "config", "-q"]
    env = {**os.environ, "DATABASE_URL": "postgresql+psycopg://x", "BROKER_URL": "redis://y"}
    subprocess.run([*compose, *workers], cwd=ROOT, env=env, check=True)
    missing = subprocess.run(
        [*compose, "config", "-q"], cwd=ROOT, env={"PATH": os.environ["PATH"]},
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stdout + missing.stderr


def healthcheck(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENIGNITY_HOME": str(home)}
    argv = [sys.executable, "-m", "service.cli", "healthcheck", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_healthcheck_tells_a_ticking_worker_from_a_stuck_one(tmp_path):
    missing = healthcheck("worker", home=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    alive = tmp_path / "worker.alive"
    alive.touch()
    assert healthcheck("worker", home=tmp_path).returncode == 0
    old = time.time() - 120
    os.utime(alive, (old, old))
    stuck = healthcheck("worker", "--max-age", "30", home=tmp_path)
    assert stuck.returncode == 1 and "s ago (over 30 s)" in stuck.stderr
    nobody = healthcheck("api", "--url", "http://127.0.0.1:9", home=tmp_path)
    assert nobody.returncode == 1 and "api:" in nobody.stderr
