"""Load for bench/faults.py: concurrent submissions, concurrent pollers and a /healthz probe.

Every request has a timeout and every loop a deadline, so a wedged API costs time, never
a hang. The /healthz probe runs in its own process (`python bench/faults_load.py probe URL
SECONDS`) so that the load generator's GIL does not show up in its latencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from faults_check import TIMEOUT, optimum


@dataclass
class Submitted:
    """What `submissions` saw: one entry per request."""

    accepted: dict[int, str] = field(default_factory=dict)  # request index -> id (202)
    duplicates: dict[int, str] = field(default_factory=dict)  # request index -> id (200)
    errors: Counter = field(default_factory=Counter)  # "status" or exception name -> count
    mismatched: list[str] = field(default_factory=list)  # a key answered with two ids
    seconds: float = 0.0


def plan_submissions(total: int, run: str) -> list[tuple[dict[str, Any], str | None]]:
    """Small optimum specs; half carry an Idempotency-Key, and 1 in 10 repeats an earlier one."""
    plan: list[tuple[dict[str, Any], str | None]] = []
    rng = random.Random(0)
    for i in range(total):
        keyed = [j for j, (_, key) in enumerate(plan) if key]
        if i % 10 == 9 and keyed:
            plan.append(plan[rng.choice(keyed[-20:])])  # a repeat, often while in flight
        else:
            plan.append((optimum(i), f"{run}-{i}" if i % 2 == 0 else None))
    return plan


def submissions(url: str, token: str, total: int, clients: int, budget: float) -> Submitted:
    """`total` POSTs from `clients` threads; requests not sent within `budget` s are errors."""
    plan = plan_submissions(total, f"faults-{random.getrandbits(32):08x}")
    out, lock, nxt = Submitted(), threading.Lock(), iter(range(total))
    t0 = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as http:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                if time.monotonic() - t0 > budget:
                    with lock:
                        out.errors["not sent (budget)"] += 1
                    continue
                spec, key = plan[i]
                try:
                    r = http.post(
                        "/v1/experiments",
                        json=spec,
                        headers={"Idempotency-Key": key} if key else {},
                    )
                    code, body = r.status_code, (r.json() if r.status_code in (200, 202) else {})
                except httpx.HTTPError as exc:
                    code, body = type(exc).__name__, {}
                with lock:
                    if code == 202:
                        out.accepted[i] = body["id"]
                    elif code == 200:
                        out.duplicates[i] = body["id"]
                    else:
                        out.errors[str(code)] += 1

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    out.seconds = time.monotonic() - t0
    ids_by_key: dict[str, set[str]] = {}
    for i, exp_id in {**out.accepted, **out.duplicates}.items():
        if plan[i][1]:
            ids_by_key.setdefault(plan[i][1], set()).add(exp_id)
    out.mismatched = [k for k, ids in ids_by_key.items() if len(ids) > 1]
    return out


@dataclass
class Polled:
    """What `pollers` saw."""

    clients: int
    seconds: float
    latencies: list[float]  # seconds, of the 200 answers
    errors: Counter
    healthz: dict[str, Any] = field(default_factory=dict)
    api_cpu: float = float("nan")  # the API process's CPU seconds per second meanwhile
    own_cpu: float = float("nan")  # this load generator's, likewise

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Conn:
    """One keep-alive HTTP/1.1 connection on asyncio streams, for GETs only.

    httpx's AsyncClient was the bottleneck here: with 64 connections it managed about 90
    /healthz answers a second on this machine while a separate probe saw the same server
    answer in milliseconds. This costs a small fraction of that per request.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"Host: {host}:{port}\r\n{extra}\r\n".encode()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> int:
        """The status code; raises OSError, asyncio.IncompleteReadError or ValueError."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(f"GET {path} HTTP/1.1\r\n".encode() + self.head)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        if fields.get("connection") == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _poll(url: str, token: str, paths: list[str], clients: int, seconds: float) -> Polled:
    host, port = httpx.URL(url).host, httpx.URL(url).port or 80
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    errors: Counter = Counter()
    deadline = time.monotonic() + seconds
    timeout = TIMEOUT.read or 10.0

    async def poller(rng: random.Random) -> None:
        conn = Conn(host, port, headers)
        try:
            while time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    status = await asyncio.wait_for(conn.get(rng.choice(paths)), timeout)
                except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    conn.close()
                    await asyncio.sleep(0.05)  # no busy loop against a refusing server
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors[str(status)] += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(poller(random.Random(i))) for i in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + 20)
    for task in pending:  # cannot happen with the per-request timeout; never hang on it
        task.cancel()
        errors["stuck"] += 1
    return Polled(clients, seconds, latencies, errors)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), or nan."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pollers(
    url: str, token: str, ids: list[str], clients: int, seconds: float, api_pid: int = 0
) -> Polled:
    """`clients` pollers GET /v1/experiments/{id} for `seconds`, beside a /healthz probe."""
    probe = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "probe", url, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        api0, own0, t0 = cpu_seconds(api_pid), time.process_time(), time.monotonic()
        paths = [f"/v1/experiments/{i}" for i in ids]
        polled = asyncio.run(_poll(url, token, paths, clients, seconds))
        wall = time.monotonic() - t0
        polled.api_cpu = (cpu_seconds(api_pid) - api0) / wall
        polled.own_cpu = (time.process_time() - own0) / wall
        out, _ = probe.communicate(timeout=seconds + 30)
        polled.healthz = json.loads(out)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    return polled


def ceiling(url: str, clients: int, seconds: float) -> float:
    """Answers per second of /healthz to the same load generator: what it and the machine
    can do at all, beside what the experiment GETs got."""
    polled = asyncio.run(_poll(url, "", ["/healthz"], clients, seconds))
    return polled.rate


def probe(url: str, seconds: float, every: float = 0.25, timeout: float = 5.0) -> dict[str, Any]:
    """GET /healthz every `every` s for `seconds`; a failure counts at its elapsed time."""
    latencies, failures = [], 0
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=timeout) as http:
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                ok = http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            failures += not ok
            time.sleep(max(0.0, every - latencies[-1]))
    return {
        "probes": len(latencies),
        "failures": failures,
        "max": max(latencies, default=float("nan")),
        "median": statistics.median(latencies) if latencies else float("nan"),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        print(json.dumps(probe(sys.argv[2], float(sys.argv[3]))))
