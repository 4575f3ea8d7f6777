"""A real stack for end-to-end tests: the session's own PostgreSQL database and Redis
(tests/conftest.py), and `benignity worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PG_URL, REDIS_URL, use_settings

FAST = {
    "HEARTBEAT_INTERVAL": "0.5",
    "HEARTBEAT_TIMEOUT": "5",
    "REQUEUE_AFTER": "3",
    "REAPER_INTERVAL": "0.5",
    "MAX_ATTEMPTS": "3",
    "CHECKPOINT_INTERVAL": "0.5",
    "WORKER_TTL": "3",
    "API_TOKENS": "",
}


class Worker:
    """A `benignity worker` subprocess in its own process group."""

    def __init__(self, env: dict[str, str], log: Path, queues: str = "cpu,gpu") -> None:
        self.log = log
        argv = [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            "1",
        ]
        self.proc = subprocess.Popen(
            argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while b" ready." not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """kill -9 the worker and its pool processes."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def stack(pg_engine, redis_client, monkeypatch, tmp_path) -> Iterator[dict[str, str]]:
    """Environment for the API and workers: the session's database and Redis, fast failure
    detection. The Redis database starts each test empty."""
    env = {
        "DATABASE_URL": PG_URL,
        "BROKER_URL": REDIS_URL,
        "BENIGNITY_HOME": str(tmp_path / "home"),
        **FAST,
    }
    use_settings(monkeypatch, **env)
    redis_client.flushdb()
    yield {**os.environ, **env}


@pytest.fixture
def api(stack) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def start_worker(stack, tmp_path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(queues: str = "cpu,gpu") -> Worker:
        worker = Worker(stack, tmp_path / f"worker-{len(workers)}.log", queues)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(
    client: TestClient,
    experiment_id: str,
    timeout: float = 120.0,
    until: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        exp = client.get(f"/v1/experiments/{experiment_id}").json()
        if exp["status"] in until or time.monotonic() > deadline:
            return exp
        time.sleep(0.2)
