"""The test session's own services: a redis-server on a free port, and a look at the host.

Used by tests/conftest.py; nothing here is a fixture.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

HOST_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    """A free port below the ephemeral range, so no outgoing connection takes it meanwhile."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = 20000 + secrets.randbelow(max(low - 20000, 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedAPI:
    """The service's API (uvicorn) in a daemon thread of this process, on a free port."""

    def __init__(self) -> None:
        import threading

        import uvicorn

        from service.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the API did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RedisServer:
    """A private `redis-server` on 127.0.0.1:`port` that keeps nothing on disk."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="benignity-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        argv += ["--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start: {exc}\n{self.log()}") from exc
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port, empty: every message and connection is gone."""
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def host_keyspace() -> dict[str, dict[str, int]] | None:
    """INFO keyspace of the host's Redis, e.g. {"db0": {"keys": 3, "expires": 0}}; None if down."""
    try:
        with redis.Redis.from_url(HOST_REDIS, socket_timeout=2, socket_connect_timeout=2) as r:
            info = r.info("keyspace")
    except redis.RedisError:
        return None
    return {
        db: {k: int(v) for k, v in stats.items() if k in ("keys", "expires")}
        for db, stats in info.items()
    }


def keyspace_changes(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> list[str]:
    """Keys added to the host's Redis, or lost from a database where none could expire."""
    out = []
    for db in sorted(set(before) | set(after)):
        was, now = before.get(db, {}), after.get(db, {})
        added = now.get("keys", 0) > was.get("keys", 0)
        lost = now.get("keys", 0) < was.get("keys", 0) and not was.get("expires", 0)
        if added or lost:
            out.append(f"host Redis {db}: {was or 'empty'} -> {now or 'empty'}")
    return out
