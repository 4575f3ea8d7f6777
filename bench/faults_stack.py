"""A private stack for bench/faults.py: PostgreSQL, redis-server, the API and workers.

Everything here is owned by one Stack and removed by Stack.close(): a database created on
the machine's PostgreSQL (dropped WITH (FORCE)) or a whole private cluster (initdb as the
`postgres` user, stopped and deleted), a redis-server on a free port that keeps nothing on
disk, and `benignity api` / `benignity worker` processes, each in its own process group.
The machine's shared Redis (6379) and the shared PostgreSQL server are never restarted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
SHARED_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BENIGNITY = [sys.executable, "-m", "service.cli"]  # what `benignity` runs
# tests/e2e/conftest.py's FAST settings: failures are noticed in seconds, not minutes.
FAST = {
    "HEARTBEAT_INTERVAL": "0.5",
    "HEARTBEAT_TIMEOUT": "5",
    "REQUEUE_AFTER": "3",
    "REAPER_INTERVAL": "0.5",
    "MAX_ATTEMPTS": "3",
    "CHECKPOINT_INTERVAL": "0.5",
}
PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A part of the stack did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen:
    """A child in its own process group, killed if this script dies, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> float:
    """Signal the process group; SIGKILL it after `grace` s. Returns seconds until it exited."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    return wait_exit(proc, grace)


def wait_exits(procs: list[subprocess.Popen], grace: float) -> list[float]:
    """Seconds from now until each process exits (inf: SIGKILLed after `grace` s), watched
    together; each one's group is SIGKILLed after, so no pool child outlives it."""
    t0, took = time.monotonic(), [float("inf")] * len(procs)
    while time.monotonic() - t0 < grace and float("inf") in took:
        for i, proc in enumerate(procs):
            if took[i] == float("inf") and proc.poll() is not None:
                took[i] = time.monotonic() - t0
        time.sleep(0.05)
    for proc in procs:
        wait_exit(proc, 0)
    return took


def wait_exit(proc: subprocess.Popen, grace: float) -> float:
    """Seconds until `proc` exits (inf if it had to be SIGKILLed after `grace` s); its group
    is SIGKILLed after, so no pool child outlives it."""
    t0 = time.monotonic()
    try:
        proc.wait(timeout=grace)
        took = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        took = float("inf")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return took


def wait_until(what: str, check, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def db_engine(url: str) -> Engine:
    """An engine that never hangs: 3 s connect timeout, 15 s statement timeout."""
    args = {"connect_timeout": 3, "options": "-c statement_timeout=15000"}
    return create_engine(url, pool_pre_ping=True, connect_args=args, pool_size=2)


class Redis:
    """redis-server on a free port that keeps nothing: a restart starts empty."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.home)]
        self.proc = spawn(argv, self.home / "redis.log")
        wait_until("redis-server", self._pings, 20)

    def _pings(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", self.port))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=10)
            self.proc = None


class SharedDatabase:
    """A database faults_<random> on the machine's PostgreSQL, dropped WITH (FORCE)."""

    def __init__(self) -> None:
        self.name = f"faults_{secrets.token_hex(4)}"
        self.url = f"{SHARED_PG}/{self.name}"
        self._admin(f'CREATE DATABASE "{self.name}"')

    def _admin(self, sql: str) -> None:
        engine = create_engine(
            f"{SHARED_PG}/postgres",
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5},
        )
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def close(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Cluster:
    """A private PostgreSQL 15 cluster, run as the `postgres` user, on a free port."""

    def __init__(self, home: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data, self.port = self.dir / "data", free_port()
        self.log = home / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/faults"
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres")
        self.ctl("start")
        admin = create_engine(
            self.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE faults"))
        admin.dispose()

    def _as_postgres(self, *argv: object, timeout: float = 120) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *map(str, argv)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise StackError(f"{' '.join(cmd)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def ctl(self, action: str, *extra: str) -> None:
        """pg_ctl start | stop | restart (fast shutdown), waiting for it to finish."""
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        argv = [PG_BIN / "pg_ctl", "-D", self.data, "-w", "-t", "60", "-l", self.dir / "log"]
        if action != "stop":
            argv += ["-o", opts]
        if action != "start":
            argv += ["-m", "fast"]
        self._as_postgres(*argv, action, *extra)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if (self.data / "postmaster.pid").exists():
                self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: end the postmaster ourselves
            with contextlib.suppress(Exception):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        with contextlib.suppress(OSError):
            shutil.copy(self.dir / "log", self.log)
        shutil.rmtree(self.dir, ignore_errors=True)


class Stack:
    """Database, Redis, API and workers; close() removes all of it, whatever state it is in."""

    def __init__(
        self, name: str, *, cluster: bool = False, logs: Path | None = None, root: Path = ROOT
    ) -> None:
        self.name, self.logs, self.root = name, logs, root
        self.home = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
        self.token = f"faults-{secrets.token_hex(8)}"
        self.api_proc: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.db: SharedDatabase | Cluster | None = None
        self.redis: Redis | None = None
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        try:
            self.db = Cluster(self.home) if cluster else SharedDatabase()
            self.redis = Redis(self.home)
            self.engine = db_engine(self.db.url)
            self.env = self._env()
            self._migrate()
        except BaseException:
            self.close()
            raise

    def _env(self) -> dict[str, str]:
        assert self.db is not None and self.redis is not None
        keep = {k: v for k, v in os.environ.items() if k not in ("ENVIRONMENT", "ADMIN_TENANT")}
        single = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        return {
            **keep,
            **single,
            **FAST,
            "DATABASE_URL": self.db.url,
            "BROKER_URL": self.redis.url,
            "BENIGNITY_HOME": str(self.home / "home"),
            "API_TOKENS": self.token,
            "RATE_LIMIT": "",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(self.root),
        }

    def _migrate(self) -> None:
        done = subprocess.run(
            [*BENIGNITY, "migrate"], env=self.env, cwd=self.root, capture_output=True, timeout=180
        )
        if done.returncode != 0:
            raise StackError(f"migrate failed: {done.stderr.decode()[-3000:]}")

    def start_api(self) -> None:
        argv = [*BENIGNITY, "api", "--host", "127.0.0.1", "--port", str(self.api_port)]
        self.api_proc = spawn(argv, self.home / "api.log", self.env, self.root)
        proc = self.api_proc

        def up() -> bool:
            if proc.poll() is not None:
                raise StackError(f"api exited: {self.tail('api.log')}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until("api", up, 90)

    def start_worker(self) -> subprocess.Popen:
        log = self.home / f"worker-{len(self.workers)}.log"
        argv = [*BENIGNITY, "worker", "--queues", "cpu,gpu", "--concurrency", "1"]
        proc = spawn(argv, log, self.env, self.root)
        self.workers.append(proc)

        def ready() -> bool:
            if proc.poll() is not None:
                raise StackError(f"worker exited: {self.tail(log.name)}")
            return b" ready." in log.read_bytes()

        wait_until("worker", ready, 120)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """kill -9 of the worker's whole process group (Celery's main and pool processes)."""
        stop_group(proc, signal.SIGKILL, grace=10)

    def tail(self, log: str, chars: int = 2000) -> str:
        path = self.home / log
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def log_text(self, pattern: str = "*.log") -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.home.glob(pattern)))

    def close(self) -> None:
        for proc in self.workers:
            stop_group(proc, grace=15)
        if self.api_proc is not None:
            stop_group(self.api_proc, grace=10)
        if self.redis is not None:
            self.redis.stop()
        if hasattr(self, "engine"):
            self.engine.dispose()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
        if self.logs is not None:
            dest = self.logs / self.name
            dest.mkdir(parents=True, exist_ok=True)
            for path in self.home.glob("*.log"):
                shutil.copy(path, dest / path.name)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
